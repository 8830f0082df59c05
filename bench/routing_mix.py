"""Routing profiles under a mixed workload, side by side in one run (issue #10).

    .venv/bin/python bench/routing_mix.py                    # ~10 minutes on 2 cores
    .venv/bin/python bench/routing_mix.py --seconds 30 --rate 1.5

One `splitmind up` cluster (2 prefill + 2 decode nodes, a random-weight 4-layer model) and, for
each routing profile, a gateway of its own in front of the same nodes. Each gateway gets the same
open-loop schedule (bench/load.py: Poisson arrivals; short chats, 2k-token prompts that share
one of four documents, and 256-token "reasoning" outputs), streamed, at the default temperature.
The documents' tokens are redrawn for each profile, so no profile finds the previous one's
prefixes in the prefill nodes' caches. Profiles run one after the other, the cluster idle
between them.

Reported per profile: success rate, TTFT and ITL percentiles over all requests, TTFT of the
document class (what prefix affinity is for), ITL of the reasoning class (what decode load
balancing is for), and the share of prefill prompt tokens the prefill nodes' prefix caches
served (`splitmind_node_prompt_tokens_total{source}`). Writes bench/out/routing_mix.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import load  # noqa: E402
from tests.e2e.cluster import RunningCluster, metric  # noqa: E402
from tests.e2e.gateway import Gateway  # noqa: E402

OUT = ROOT / "bench" / "out"
PROFILES = [  # (decode_policy, prefill_policy); the baseline first
    ("round-robin", "round-robin"),
    ("least-tokens", "least-tokens"),
    ("least-tokens", "prefix-affinity"),
]
VOCAB = (3, 250)


def redraw(schedule: list[load.Planned], seed: int) -> list[load.Planned]:
    """The same schedule (times, classes, lengths, which requests share a document) with other
    token ids: a fixed permutation of the vocabulary per seed."""
    lo, hi = VOCAB
    ids = list(range(lo, hi))
    random.Random(seed).shuffle(ids)
    table = dict(zip(range(lo, hi), ids, strict=True))
    return [dataclasses.replace(p, prompt=[table[t] for t in p.prompt]) for p in schedule]


def wait_idle(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workers = httpx.get(url + "/admin/workers", timeout=10).json()
        if all(w.get("running_requests", 0) == 0 and w.get("waiting_requests", 0) == 0 for w in workers):
            return
        time.sleep(0.5)
    raise TimeoutError("the cluster did not go idle")


def prefill_tokens(url: str) -> dict[str, float]:
    return {source: metric(url, "splitmind_node_prompt_tokens_total", role="prefill", source=source) or 0.0
            for source in ("computed", "local_cache")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each profile's schedule")
    ap.add_argument("--rate", type=float, default=2.0, help="requests per second")
    ap.add_argument("--seed", type=int, default=10)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    work = OUT / "routing_mix_run"
    model = load.bench_model(work / "model")
    schedule = load.mixed_schedule(random.Random(args.seed), seconds=args.seconds, rate=args.rate, vocab=VOCAB)
    counts = {k: sum(p.kind == k for p in schedule) for k in ("short", "document", "reasoning")}
    print(f"[bench] schedule: {len(schedule)} requests in {args.seconds:.0f} s ({counts})", flush=True)
    print("[bench] splitmind up: 2 prefill + 2 decode nodes", flush=True)
    cluster = RunningCluster(model, work, prefill=2, decode=2, config=load.CLUSTER_CONFIG)
    results = []
    try:
        cluster.wait_ready()
        for i, (decode_policy, prefill_policy) in enumerate(PROFILES):
            name = f"{decode_policy} / {prefill_policy}"
            gw = Gateway(cluster, work / f"gateway-{i}.log", {}, decode_policy=decode_policy,
                         prefill_policy=prefill_policy)
            try:
                wait_idle(cluster.url)
                before = prefill_tokens(gw.url)
                print(f"[bench] {name}: sending", flush=True)
                outcomes = load.run(gw.url, redraw(schedule, args.seed + 1 + i))
                wait_idle(cluster.url)
                time.sleep(1.5)  # the nodes' next heartbeats carry the last counters
                after = prefill_tokens(gw.url)
            finally:
                gw.stop()
            cached = after["local_cache"] - before["local_cache"]
            computed = after["computed"] - before["computed"]
            row = {"profile": name, **load.summary(outcomes),
                   "document_ttft_p50_ms": load.summary([o for o in outcomes if o.kind == "document"])["ttft_p50_ms"],
                   "document_ttft_p99_ms": load.summary([o for o in outcomes if o.kind == "document"])["ttft_p99_ms"],
                   "reasoning_itl_p99_ms": load.summary([o for o in outcomes if o.kind == "reasoning"])["itl_p99_ms"],
                   "prefill_cache_share": cached / (cached + computed) if cached + computed else float("nan"),
                   "failures": sorted({f"{o.status} {o.error}".strip() for o in outcomes if not o.ok})[:5]}
            results.append(row)
            print(f"[bench] {name}: {row['ok']}/{row['requests']} ok", flush=True)
    finally:
        cluster.stop()
    (OUT / "routing_mix.json").write_text(json.dumps(results, indent=2))
    head = ("profile (decode / prefill)", "ok", "TTFT p50", "TTFT p90", "TTFT p99", "ITL p50", "ITL p99",
            "doc TTFT p50", "doc TTFT p99", "reasoning ITL p99", "prefill cache", "tok/s")
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in results:
        cells = [r["profile"], f"{r['ok']}/{r['requests']}", *(f"{r[k]:.0f}" for k in (
            "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms")), f"{r['itl_p50_ms']:.1f}", f"{r['itl_p99_ms']:.1f}",
            f"{r['document_ttft_p50_ms']:.0f}", f"{r['document_ttft_p99_ms']:.0f}", f"{r['reasoning_itl_p99_ms']:.1f}",
            f"{100 * r['prefill_cache_share']:.0f}%", f"{r['tokens_per_s']:.0f}"]
        print("| " + " | ".join(cells) + " |")
    print("\nTimes in ms. Failures:", {r["profile"]: r["failures"] for r in results if r["failures"]} or "none")


if __name__ == "__main__":
    main()
