"""Routing decision latency with 1,000 workers per pool, per profile (issue #10: under 1 ms p99).

    .venv/bin/python bench/routing.py            # ~1 min, no engines: the router alone

Times `Orchestrator.plan()`: the registry's list of healthy workers, their snapshots, the decode
profile, the P/D decider, the prefill profile, the decision counters. The workers are the gateway's
real `WorkerClient`s and `WorkerRegistry`, with sockets that are never connected; their heartbeats
carry a random load. Between two decisions, untimed, as in a gateway making `--rate` decisions a
second, the load moves: every worker's heartbeat comes every 0.5 s; the request just planned opens
its streams, its prefill stream ends at the next request and its decode stream `--open` requests
later; `--deltas` token deltas arrive on open decode streams. Each of those drops its worker's kept
snapshot, to be rebuilt by the next decision. `--all-stale`: every worker sends a heartbeat between
two decisions (no snapshot is kept). The prompts are a mixed stream: a third share a 1,024-token
system prompt, a third are fresh 2,048-token documents, a third short chats.

Each pair of profiles runs twice on the same load: deciding over a sample of each pool
(`--sample`, `gateway.route_sample`, the default 32) and over every worker (`route_sample = 0`,
the baseline). How good the decode picks were is measured untimed at every 10th decision: the
share of the pool's workers with fewer tokens in flight than the one picked (0: the least
loaded). Prints a table (p50, p99, max, pick rank per profile pair and mode) and writes
bench/out/routing.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.client import WorkerClient  # noqa: E402
from router.orchestrator import Orchestrator  # noqa: E402
from router.registry import WorkerRegistry  # noqa: E402
from router.request_stream import RequestStream, view_of  # noqa: E402
from splitmind.config import DECODE_POLICIES, PREFILL_POLICIES, GatewayTuning, WorkerAddress  # noqa: E402
from splitmind.protocol import (  # noqa: E402
    PROTOCOL_VERSION,
    GenerateRequest,
    HealthReply,
    NodeStats,
    Role,
    Sampling,
    TokenDelta,
)
from tests.router.null_sockets import NullContext  # noqa: E402

OUT = ROOT / "bench" / "out"
HEARTBEAT_S = 0.5  # splitmind/node/runtime.py's STATS_INTERVAL_S


def heartbeat(client: WorkerClient, rng: random.Random) -> None:
    running = rng.randint(0, 32)
    client.stats = NodeStats(client.worker_id, client.role, 1, 1, num_running=running, num_waiting=rng.randint(0, 4),
                             tokens_in_flight=running * rng.randint(200, 4000), kv_usage=rng.random())
    client.last_seen_s = time.monotonic()


def fleet(workers: int, rng: random.Random) -> WorkerRegistry:
    registry = WorkerRegistry([], heartbeat_timeout_s=3600.0)  # the bench sends no heartbeat on time
    for role in (Role.PREFILL, Role.DECODE):
        for i in range(workers):
            wid = f"{role.name.lower()}-{i}"
            client = WorkerClient(WorkerAddress(wid, role, "tcp://null:1", "tcp://null:2"), NullContext())  # type: ignore[arg-type]
            client.info = HealthReply("h", wid, role, 1, PROTOCOL_VERSION, "model", 32768)
            heartbeat(client, rng)
            registry.workers[wid] = client
    registry.health_changed()
    return registry


def prompts(rng: random.Random, count: int) -> list[list[int]]:
    system = [rng.randrange(50_000) for _ in range(1024)]
    out = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            out.append(system + [rng.randrange(50_000) for _ in range(rng.randint(20, 200))])
        elif kind == 1:
            out.append([rng.randrange(50_000) for _ in range(2048)])
        else:
            out.append([rng.randrange(50_000) for _ in range(rng.randint(10, 120))])
    return out


def rank(picked: WorkerClient, pool: list[WorkerClient]) -> float:
    """The share of `pool` with fewer tokens in flight than `picked`, from fresh snapshots (not
    the kept ones, which the next decision would then find built)."""
    def tokens(c: WorkerClient) -> int:
        return view_of(c.worker_id, c.role, len(c.streams), c.load.tokens, c.stats).tokens_in_flight
    mine = tokens(picked)
    return sum(tokens(c) < mine for c in pool) / len(pool)


async def measure(decode_policy: str, prefill_policy: str, workers: int, requests: int, seed: int, rate: float,
                  open_requests: int, deltas: int, all_stale: bool, sample: int) -> dict[str, object]:
    rng = random.Random(seed)
    registry = fleet(workers, rng)
    clients = list(registry.workers.values())
    counts: dict[tuple[str, str], int] = {}

    def decided(pool: str, reason: str) -> None:
        counts[pool, reason] = counts.get((pool, reason), 0) + 1

    tuning = GatewayTuning(decode_policy=decode_policy, prefill_policy=prefill_policy, min_disagg_prompt_tokens=256,
                           route_sample=sample)
    orch = Orchestrator(registry, tuning, on_decision=decided, observe=lambda plugin, s: None,
                        rng=random.Random(seed + 2))
    decoders = [c for c in clients if c.role == Role.DECODE]
    ranks: list[float] = []
    sampling = Sampling(max_tokens=16)
    batch = prompts(rng, requests)
    load = random.Random(seed + 1)  # the load's moves, apart from the prompts
    heartbeats = len(clients) if all_stale else round(len(clients) / HEARTBEAT_S / rate)
    decoding: deque[tuple[WorkerClient, RequestStream]] = deque()  # open decode streams, oldest first
    prefilling: list[tuple[WorkerClient, RequestStream]] = []

    async def between(i: int, decode: WorkerClient, prefill: WorkerClient | None, prompt: list[int]) -> None:
        """What changes on the workers until the next decision."""
        for w, stream in prefilling:  # a prefill ends (its KV pulled) as the next request comes
            w.release(stream)
        prefilling.clear()
        request = GenerateRequest(f"r{i}", prompt, sampling)
        if prefill is not None:
            prefilling.append((prefill, await prefill.open(request)))
        decoding.append((decode, await decode.open(request)))
        if len(decoding) > open_requests:
            w, stream = decoding.popleft()
            w.release(stream)
        for _, stream in load.choices(decoding, k=deltas):
            stream.push(TokenDelta(stream.request_id, [1]))
            await stream.next(1.0)  # read at once, as the client's response does
        for w in clients if all_stale else load.sample(clients, heartbeats):
            heartbeat(w, load)

    times = []
    for i, p in enumerate([*batch[:50], *batch]):  # the first 50 warm caches and the prefix index
        t = time.perf_counter()
        plan = orch.plan(f"r{i}", p, sampling)
        if i >= 50:
            times.append(time.perf_counter() - t)
            if i % 10 == 0:
                ranks.append(rank(plan.samples[0].decode, decoders))
        await between(i, plan.samples[0].decode, plan.samples[0].prefill, p)
    registry.ctx.term()
    times.sort()
    return {"p50_ms": 1e3 * statistics.median(times), "p99_ms": 1e3 * times[int(0.99 * len(times)) - 1],
            "max_ms": 1e3 * times[-1], "pick_rank": statistics.mean(ranks),
            "decisions": {f"{pool}/{reason}": n for (pool, reason), n in sorted(counts.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=1000, help="workers per pool")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate", type=float, default=500.0, help="decisions a second: sets the heartbeats between two")
    ap.add_argument("--open", type=int, default=2000, help="requests whose streams are open at once")
    ap.add_argument("--deltas", type=int, default=200, help="token deltas arriving between two decisions")
    ap.add_argument("--all-stale", action="store_true", help="every worker's heartbeat between two decisions")
    ap.add_argument("--sample", type=int, default=GatewayTuning().route_sample,
                    help="gateway.route_sample of the sampled runs (the baseline scores every worker)")
    args = ap.parse_args()
    rows = []
    pairs = [(d, p) for d in DECODE_POLICIES for p in PREFILL_POLICIES if d == p or p == "prefix-affinity"]
    print(f"{args.workers} prefill + {args.workers} decode workers, {args.requests} requests per profile pair"
          + (", every snapshot stale" if args.all_stale else ""), flush=True)
    print(f"{'decode profile':<16} {'prefill profile':<16} {'workers scored':<15} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'pick rank':>9}")
    for decode, prefill in pairs:
        for sample in (args.sample, 0):
            r = asyncio.run(measure(decode, prefill, args.workers, args.requests, args.seed, args.rate, args.open,
                                    args.deltas, args.all_stale, sample))
            rows.append({"decode": decode, "prefill": prefill, "route_sample": sample, **r})
            scored = f"sample of {sample}" if sample else "all"
            print(f"{decode:<16} {prefill:<16} {scored:<15} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['max_ms']:>8.3f}"
                  f" {r['pick_rank']:>9.3f}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "routing.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(f"wrote {OUT / 'routing.json'}")


if __name__ == "__main__":
    main()
