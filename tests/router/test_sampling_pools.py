"""Large pools are decided over a sample (router/policies/sample.py): a few random workers plus
the holders of the prompt's prefix; small pools whole, as before; a full sample falls back to
the whole pool. Real clients and registry, with sockets never connected."""

from __future__ import annotations

import random

import pytest

from router.client import WorkerClient
from router.orchestrator import Orchestrator
from router.policies.base import RouteRequest
from router.registry import WorkerRegistry
from splitmind.config import GatewayTuning
from splitmind.protocol import Role, Sampling
from tests.router.test_snapshots import client, heartbeat, registry_of

SYSTEM = list(range(1000, 1064))  # four full blocks of a shared prompt


def pool(decode: int, prefill: int, load: int = 1000) -> tuple[WorkerRegistry, list[WorkerClient]]:
    rng = random.Random(7)
    workers = [client(f"d{i}") for i in range(decode)] + [client(f"p{i}", Role.PREFILL) for i in range(prefill)]
    for w in workers:
        heartbeat(w, running=4, tokens=rng.randint(load, 2 * load))
    return registry_of(*workers), workers


def test_a_pool_no_larger_than_the_sample_is_scored_whole() -> None:
    registry, workers = pool(32, 1)
    heartbeat(workers[17], running=0, tokens=0)  # the one idle worker
    orch = Orchestrator(registry, GatewayTuning(route_sample=32), rng=random.Random(1))
    assert all(orch.plan(f"r{i}", [1, 2, 3], Sampling(max_tokens=4)).samples[0].decode.worker_id == "d17"
               for i in range(20))


def test_a_large_pool_is_scored_over_a_sample() -> None:
    registry, workers = pool(200, 1)
    orch = Orchestrator(registry, GatewayTuning(route_sample=8), rng=random.Random(1))
    seen: list[int] = []
    original = orch.decode_profile.pick
    orch.decode_profile.pick = lambda req, views, filtered=True: (seen.append(len(views)),  # type: ignore[method-assign]
                                                                  original(req, views, filtered))[1]
    picks = {orch.plan(f"r{i}", [1, 2, 3], Sampling(max_tokens=4)).samples[0].decode.worker_id for i in range(50)}
    assert seen == [8] * 50
    assert len(picks) > 20, "random samples: the picks spread over the pool"
    orch = Orchestrator(registry, GatewayTuning(route_sample=0), rng=random.Random(1))
    best = min((w for w in workers if w.role == Role.DECODE), key=lambda w: w.view().tokens_in_flight)
    assert orch.plan("r", [1, 2, 3], Sampling(max_tokens=4)).samples[0].decode.worker_id == best.worker_id, \
        "route_sample = 0: every worker"


def test_the_holders_of_a_prefix_are_always_in_the_sample() -> None:
    registry, _ = pool(1, 300)
    orch = Orchestrator(registry, GatewayTuning(route_sample=4), rng=random.Random(3))
    orch.indexes[Role.PREFILL].record(RouteRequest("r0", SYSTEM), "p123")
    picks = [orch.plan(f"r{i}", [*SYSTEM, i], Sampling(max_tokens=4), route_override="disaggregated")
             .samples[0].prefill for i in range(20)]
    assert all(p is not None and p.worker_id == "p123" for p in picks), "a 4-worker sample of 300 misses it 99% of "\
        "the time; the prefix holder is added"


def test_a_full_sample_falls_back_to_the_whole_pool() -> None:
    registry, workers = pool(100, 1)
    for w in workers[:100]:
        heartbeat(w, running=8, tokens=100)
    heartbeat(workers[42], running=1, tokens=100)
    orch = Orchestrator(registry, GatewayTuning(route_sample=4, max_streams_per_decode=8), rng=random.Random(5))
    decisions: list[tuple[str, str]] = []
    orch.on_decision = lambda pool, reason: decisions.append((pool, reason))
    for i in range(10):  # most samples of 4 miss d42: without the fallback, a 429
        assert orch.plan(f"r{i}", [1, 2, 3], Sampling(max_tokens=4)).samples[0].decode.worker_id == "d42"
    assert [r for p, r in decisions if p == "decode"] == ["only_candidate"] * 10, "one decision counted per request"


def test_route_sample_is_bounded() -> None:
    with pytest.raises(ValueError, match="route_sample"):
        GatewayTuning(route_sample=1)
    with pytest.raises(ValueError, match="route_sample"):
        GatewayTuning(route_sample=-3)
