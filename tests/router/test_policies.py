"""Routing plugins and profiles, on worker snapshots (router/policies/)."""

import random

import pytest

from router.orchestrator import Orchestrator
from router.policies.base import RouteRequest, WorkerView
from router.policies.capacity import CapacityFilter
from router.policies.pd_decider import PrefillCostDecider
from router.policies.prefix_index import PrefixIndex
from router.policies.profiles import decode_profile, prefill_profile
from router.request_stream import RequestStream, TokenLoad, view_of
from splitmind.config import GatewayTuning
from splitmind.protocol import NodeStats, Role, Sampling, TokenDelta


def view(wid: str, requests: int = 0, tokens: int = 0, kv: float = 0.0, role: Role = Role.DECODE) -> WorkerView:
    return WorkerView(wid, role, requests=requests, tokens_in_flight=tokens, kv_usage=kv)


def req(tokens: list[int] | None = None, n: int = 1) -> RouteRequest:
    return RouteRequest("r", tokens if tokens is not None else list(range(10)), n)


def picked(profile, workers: list[WorkerView], r: RouteRequest | None = None) -> str:  # type: ignore[no-untyped-def]
    d = profile.pick(r or req(), workers)
    assert d.worker is not None, d.reason
    return d.worker.worker_id


def test_least_tokens_counts_what_the_streams_hold_not_how_many() -> None:
    """Two long reasoning streams weigh more than five short chats."""
    profile = decode_profile("least-tokens", 0)
    assert picked(profile, [view("a", requests=2, tokens=16_000), view("b", requests=5, tokens=2_000)]) == "b"
    assert picked(decode_profile("least-requests", 0),
                  [view("a", requests=2, tokens=16_000), view("b", requests=5, tokens=2_000)]) == "a"


def test_the_decision_names_the_scorer_that_decided_it() -> None:
    profile = decode_profile("least-tokens", 0)
    assert profile.pick(req(), [view("a", tokens=10), view("b", tokens=100)]).reason == "least-tokens"
    assert profile.pick(req(), [view("a", kv=0.9), view("b", kv=0.1)]).reason == "kv-usage"
    assert profile.pick(req(), [view("a")]).reason == "only_candidate"
    assert profile.pick(req(), []).reason == "no_worker"


def test_ties_break_randomly() -> None:
    profile = decode_profile("least-tokens", 0, rng=random.Random(1))
    workers = [view("a"), view("b")]
    assert {picked(profile, workers) for _ in range(50)} == {"a", "b"}
    assert profile.pick(req(), workers).reason == "tie"


def test_capacity_filter_leaves_none_when_every_worker_is_full() -> None:
    profile = decode_profile("least-tokens", 4)
    d = profile.pick(req(n=2), [view("a", requests=3), view("b", requests=4)])
    assert (d.worker, d.reason) == (None, "full")
    assert picked(profile, [view("a", requests=3), view("b", requests=4)]) == "a"
    assert CapacityFilter(0).filter(req(), [view("a", requests=10**6)]) == [view("a", requests=10**6)]


def test_fallback_picks_skip_the_filters() -> None:
    """A stream half-sent is finished on a full node rather than cut."""
    d = decode_profile("least-tokens", 1).pick(req(), [view("a", requests=1)], filtered=False)
    assert d.worker is not None and d.worker.worker_id == "a"


def test_round_robin_takes_turns_and_survives_workers_leaving() -> None:
    profile = decode_profile("round-robin", 0)
    workers = [view("c"), view("a"), view("b")]
    assert [picked(profile, workers) for _ in range(4)] == ["a", "b", "c", "a"]
    assert picked(profile, [view("a"), view("c")]) == "c"  # b left
    assert profile.pick(req(), workers).reason == "round-robin"


def test_prefix_affinity_follows_the_prefix_until_the_load_bound() -> None:
    index = PrefixIndex()
    profile = prefill_profile("prefix-affinity", index, load_bound=1.25, rng=random.Random(0))
    prompt = req(list(range(64)))  # 4 blocks
    workers = [view(w, role=Role.PREFILL) for w in "abcd"]
    first = picked(profile, workers, prompt)
    # idle pool: the same prefix goes to the same node, and the reason says why
    assert all(picked(profile, workers, prompt) == first for _ in range(10))
    assert profile.pick(prompt, workers).reason == "prefix-affinity"
    # the prefix's node carries far more than the others: the prompt spills to the least loaded
    loaded = [view(w, tokens=10_000 if w == first else 100 * i, role=Role.PREFILL) for i, w in enumerate("abcd")]
    spill = picked(profile, loaded, prompt)
    assert spill != first and spill == min((w for w in loaded if w.worker_id != first),
                                           key=lambda w: w.tokens_in_flight).worker_id
    # an unseen prompt goes to the least loaded node
    assert picked(profile, loaded, req([7] * 64)) == spill


def test_prefix_index_matches_leading_blocks_only_and_stays_bounded() -> None:
    index = PrefixIndex(capacity=8)
    a = req(list(range(48)))
    index.record(a, "w1")
    assert index.matched_blocks(a, ["w1", "w2"]) == {"w1": 3, "w2": 0}
    diverges = req(list(range(16)) + [999] * 32)
    assert index.matched_blocks(diverges, ["w1"]) == {"w1": 1}
    for i in range(20):
        index.record(req([i] * 32), "w2")
    assert len(index.blocks) == 8
    index.forget("w2")
    assert len(index.blocks) == 0, "w2's blocks went to no one else"
    index.record(a, "w3")
    assert index.matched_blocks(a, ["w3", "w2"]) == {"w3": 3, "w2": 0}, "w3 took w2's freed bit, not its blocks"
    assert all(index.holders(h) == {"w3"} for h in index.blocks)


def test_prefix_index_names_every_worker_a_prefix_went_to_and_none_forgotten() -> None:
    """`matched` (the affinity scorer's, over every worker) agrees with `matched_blocks`."""
    index = PrefixIndex()
    hot, ids = req(list(range(40))), [f"w{i}" for i in range(20)]
    for wid in ids:
        index.record(hot, wid)
        index.record(req(list(range(16)) + [7] * 16), wid)  # the same first block, then another
    assert index.matched_blocks(hot, [*ids, "x"]) == {**dict.fromkeys(ids, 2), "x": 0}
    for gone in ("w0", "w19"):
        index.forget(gone)
    assert index.matched_blocks(hot, ["w0", "w1", "w18", "w19"]) == {"w0": 0, "w1": 2, "w18": 2, "w19": 0}
    index.record(hot, "w0")
    assert index.matched(hot) == dict.fromkeys(ids[:19], 2)
    assert index.matched(req(list(range(16)) + [7] * 16)) == {**dict.fromkeys(ids[1:19], 2), "w0": 1}
    assert index.matched(req(list(range(16)) + [8] * 16)) == dict.fromkeys(ids[:19], 1)
    assert index.matched(req([8] * 32)) == {}


def caching(wid: str) -> WorkerView:
    return WorkerView(wid, Role.DECODE, prefix_caching=True)


def test_pd_decider_reasons() -> None:
    index = PrefixIndex()
    d = PrefillCostDecider(min_prompt_tokens=32, max_prefill_queue_tokens=1000, decode_index=index)
    prompt = req(list(range(100)))
    prefill = [view("p", role=Role.PREFILL)]
    assert d.decide(prompt, caching("d"), []) == (False, "no_prefill_worker")
    assert d.decide(req(list(range(31))), caching("d"), prefill) == (False, "short_prompt")
    assert d.decide(prompt, caching("d"), prefill) == (True, "long_prompt")
    index.record(req(list(range(96))), "d")  # a follow-up turn: 96 of 100 tokens already on the decode node
    assert d.decide(prompt, caching("d"), prefill) == (False, "cached_on_decode")
    assert d.decide(prompt, view("d"), prefill) == (True, "long_prompt")  # its engine keeps no prefixes
    assert d.decide(prompt, caching("other"), prefill) == (True, "long_prompt")
    busy = [view("p", tokens=5000, role=Role.PREFILL), view("q", tokens=1001, role=Role.PREFILL)]
    assert d.decide(prompt, caching("other"), busy) == (False, "prefill_busy")
    assert d.decide(prompt, caching("other"), [*busy, view("r", tokens=10, role=Role.PREFILL)]) == (True, "long_prompt")


class Worker:
    def __init__(self, wid: str, role: Role) -> None:
        self.worker_id, self.role = wid, role
        self.streams: dict[str, RequestStream] = {}

    def view(self) -> WorkerView:
        return WorkerView(self.worker_id, self.role, prefix_caching=True)


class Registry:
    def __init__(self, *workers: Worker) -> None:
        self.workers = workers
        self.on_leave: list[object] = []

    def healthy(self, role: Role) -> list[Worker]:
        return [w for w in self.workers if w.role == role]


def test_a_prompt_is_cached_on_decode_only_after_it_was_sent_there() -> None:
    """Bug: the decode pick recorded the prompt in the decode node's prefix index before the P/D
    decider looked, so every prompt of whole blocks (64 tokens) went colocated as "cached", the
    first time too. Fix: the orchestrator records after the decision."""
    decided: list[tuple[str, str]] = []
    orch = Orchestrator(Registry(Worker("d0", Role.DECODE), Worker("p0", Role.PREFILL)),  # type: ignore[arg-type]
                        GatewayTuning(), on_decision=lambda pool, reason: decided.append((pool, reason)))
    prompt = list(range(64))
    assert orch.plan("r1", prompt, Sampling(max_tokens=4)).route == "disaggregated"
    assert ("pd", "long_prompt") in decided
    assert orch.plan("r2", prompt, Sampling(max_tokens=4)).route == "colocated"  # now it is there
    assert decided[-1] == ("pd", "cached_on_decode")


def test_every_plugin_is_timed() -> None:
    seen: list[str] = []
    profile = decode_profile("least-tokens", 4, observe=lambda name, s: seen.append(name))
    profile.pick(req(), [view("a"), view("b", tokens=5)])
    assert seen == ["full", "least-tokens", "kv-usage", "max-score"]


def test_policy_names_are_checked_when_the_config_loads() -> None:
    with pytest.raises(ValueError, match="decode_policy must be one of least-tokens"):
        GatewayTuning(decode_policy="fastest")
    with pytest.raises(ValueError, match="prefill_policy"):
        GatewayTuning(prefill_policy="random")
    with pytest.raises(ValueError, match="prefix_load_bound"):
        GatewayTuning(prefix_load_bound=0.5)


def test_a_workers_view_merges_its_own_streams_with_the_heartbeat() -> None:
    """The gateway's own open streams count before the next heartbeat says so; the node's report
    (every gateway's requests) counts when it says more. Tokens are kept as a running sum."""
    load = TokenLoad()
    s = RequestStream("r1", "d0", tokens=100, load=load)
    RequestStream("r2", "d0", tokens=20, load=load)
    assert load.tokens == 120
    s.push(TokenDelta("r1", [1, 2, 3]))
    assert (s.tokens, load.tokens) == (103, 123)
    assert view_of("d0", Role.DECODE, 2, load.tokens, None) == WorkerView("d0", Role.DECODE, 2, 0, 123)
    stats = NodeStats("d0", Role.DECODE, 1, 1, num_running=3, num_waiting=2, tokens_in_flight=50, kv_usage=0.5)
    assert view_of("d0", Role.DECODE, 2, load.tokens, stats) == WorkerView("d0", Role.DECODE, 5, 2, 123, 0.5)


def test_prefix_index_agrees_with_sets_of_workers_under_churn() -> None:
    """The bitmask index against the plain model it replaced (a set of workers per block), over
    random prompts, 150 workers (bits past 64 and 128) coming and going, and a small capacity."""
    import random
    from collections import OrderedDict
    rng = random.Random(11)
    index, model = PrefixIndex(capacity=300), OrderedDict[int, set[str]]()
    prefixes = [[rng.randrange(100) for _ in range(64)] for _ in range(6)]
    for step in range(3000):
        prompt = req(rng.choice(prefixes)[:rng.choice([16, 32, 48, 64])] + [rng.randrange(9) for _ in range(16)])
        wid = f"w{rng.randrange(150)}"
        if rng.random() < 0.03:
            index.forget(wid)
            for h in list(model):
                model[h].discard(wid)
                if not model[h]:
                    del model[h]  # as the index drops an entry no worker holds
            continue
        index.record(prompt, wid)
        for h in prompt.block_hashes:
            model.setdefault(h, set()).add(wid)
            model.move_to_end(h)
        while len(model) > 300:
            model.popitem(last=False)
        if step % 50 == 0:
            probe = req(rng.choice(prefixes) + [1] * 16)
            expected: dict[str, int] = {}
            for w in {w for hs in model.values() for w in hs}:
                n = 0
                while n < len(probe.block_hashes) and w in model.get(probe.block_hashes[n], ()):
                    n += 1
                if n:
                    expected[w] = n
            assert index.matched(probe) == expected
            assert all(index.holders(h) == model[h] for h in model) and len(index.blocks) == len(model)
