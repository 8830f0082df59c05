"""Routing decision latency with 1,000 workers per pool, per profile (issue #10: under 1 ms p99).

    .venv/bin/python bench/routing.py            # ~20 s, no engines: the router alone

Times `Orchestrator.plan()` (snapshots of every healthy worker, the decode profile, the P/D
decider, the prefill profile, the decision counters) over fake workers whose heartbeats carry a
random load, for a mixed stream of prompts: a third share a 1,024-token system prompt, a third are
fresh 2,048-token documents, a third short chats. Prints a table (p50, p99, max per profile) and
writes bench/out/routing.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.client import RequestStream, view_of  # noqa: E402
from router.orchestrator import Orchestrator  # noqa: E402
from router.policies.base import WorkerView  # noqa: E402
from splitmind.config import DECODE_POLICIES, PREFILL_POLICIES, GatewayTuning  # noqa: E402
from splitmind.protocol import NodeStats, Role, Sampling  # noqa: E402

OUT = ROOT / "bench" / "out"


class FakeWorker:
    """What the orchestrator reads of a worker: id, role, open streams and the last heartbeat."""

    def __init__(self, worker_id: str, role: Role, rng: random.Random) -> None:
        self.worker_id, self.role = worker_id, role
        self.streams: dict[str, RequestStream] = {}
        running = rng.randint(0, 32)
        self.stats = NodeStats(worker_id, role, 1, 1, num_running=running, num_waiting=rng.randint(0, 4),
                               tokens_in_flight=running * rng.randint(200, 4000), kv_usage=rng.random())

    def view(self) -> WorkerView:
        return view_of(self.worker_id, self.role, len(self.streams), 0, self.stats)


class FakeRegistry:
    def __init__(self, workers: list[FakeWorker]) -> None:
        self.by_role = {r: [w for w in workers if w.role == r] for r in Role}
        self.on_leave: list[object] = []

    def healthy(self, role: Role) -> list[FakeWorker]:
        return self.by_role[role]


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


def measure(decode_policy: str, prefill_policy: str, workers: int, requests: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    fleet = [FakeWorker(f"{role.name.lower()}-{i}", role, rng) for role in (Role.PREFILL, Role.DECODE)
             for i in range(workers)]
    counts: dict[tuple[str, str], int] = {}

    def decided(pool: str, reason: str) -> None:
        counts[pool, reason] = counts.get((pool, reason), 0) + 1

    tuning = GatewayTuning(decode_policy=decode_policy, prefill_policy=prefill_policy, min_disagg_prompt_tokens=256)
    orch = Orchestrator(FakeRegistry(fleet), tuning, on_decision=decided,  # type: ignore[arg-type]
                        observe=lambda plugin, s: None)
    sampling = Sampling(max_tokens=16)
    batch = prompts(rng, requests)
    for p in batch[:50]:  # warm caches and the prefix index
        orch.plan("warm", p, sampling)
    times = []
    for i, p in enumerate(batch):
        t = time.perf_counter()
        orch.plan(f"r{i}", p, sampling)
        times.append(time.perf_counter() - t)
    times.sort()
    return {"p50_ms": 1e3 * statistics.median(times), "p99_ms": 1e3 * times[int(0.99 * len(times)) - 1],
            "max_ms": 1e3 * times[-1],
            "decisions": {f"{pool}/{reason}": n for (pool, reason), n in sorted(counts.items())}}  # type: ignore[dict-item]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=1000, help="workers per pool")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = []
    pairs = [(d, p) for d in DECODE_POLICIES for p in PREFILL_POLICIES if d == p or p == "prefix-affinity"]
    print(f"{args.workers} prefill + {args.workers} decode workers, {args.requests} requests per profile pair",
          flush=True)
    print(f"{'decode profile':<16} {'prefill profile':<16} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for decode, prefill in pairs:
        r = measure(decode, prefill, args.workers, args.requests, args.seed)
        rows.append({"decode": decode, "prefill": prefill, **r})
        print(f"{decode:<16} {prefill:<16} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['max_ms']:>8.3f}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "routing.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(f"wrote {OUT / 'routing.json'}")


if __name__ == "__main__":
    main()
