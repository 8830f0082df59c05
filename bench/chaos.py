"""Chaos: steady traffic while nodes are killed and restarted (issue #10).

    .venv/bin/python bench/chaos.py                 # ~8 minutes on 2 cores
    .venv/bin/python bench/chaos.py --rate 1.5 --seconds 150

One `splitmind up` cluster (2 prefill + 2 decode nodes, a random-weight 4-layer model) takes
an open-loop schedule (bench/load.py: short chats, 2k-token shared documents, 256-token
"reasoning" streams; streamed, default temperature) for `--seconds`. The first `--calm`
seconds nothing is killed: that is the baseline, measured in the same run. Then, one at a time
and each only once every node is back, it SIGKILLs:
- decode-0's node process, mid-stream (its streams move to decode-1);
- prefill-0's node process (its prefills go to prefill-1 or the decode node);
- decode-1's engine core process (the node sees its engine die and exits);
- prefill-1's node process.
`splitmind up` restarts each. Reported: success rate and latency for requests sent before the
first kill, after it, and within 10 s of a kill; the gateway's fallbacks by reason and the
node restarts. Writes bench/out/chaos.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import load  # noqa: E402
from tests.e2e.cluster import RunningCluster, metric  # noqa: E402

OUT = ROOT / "bench" / "out"
KILLS = [("decode-0", "node"), ("prefill-0", "node"), ("decode-1", "engine"), ("prefill-1", "node")]
NEAR_KILL_S = 10.0
FALLBACKS = ("prefill_retry", "prefill_local", "decode_retry", "decode_migrate")


def workers(url: str) -> dict[str, dict[str, object]]:
    return {w["id"]: w for w in httpx.get(url + "/admin/workers", timeout=10).json()}


def kill(url: str, worker: str, what: str) -> int:
    """SIGKILL `worker`'s node process, or its engine core (a child named VLLM::EngineCore)."""
    pid = int(workers(url)[worker]["pid"])  # type: ignore[call-overload]
    if what == "engine":
        cores = [p for p in psutil.Process(pid).children(recursive=True) if "EngineCore" in " ".join(p.cmdline())
                 or "EngineCore" in p.name()]
        if not cores:
            raise RuntimeError(f"{worker} (pid {pid}) has no engine core child")
        pid = cores[0].pid
    os.kill(pid, signal.SIGKILL)
    return pid


def chaos(url: str, start: float, calm_s: float, seconds: float, kills: list[dict[str, object]]) -> None:
    """Kills one target at a time, after `calm_s`, each once every node is ready again."""
    for worker, what in KILLS:
        at = max(start + calm_s, time.perf_counter())
        while time.perf_counter() < at or any(w["state"] != "ready" for w in workers(url).values()):
            if time.perf_counter() > start + seconds:
                return
            time.sleep(0.5)
        pid = kill(url, worker, what)
        kills.append({"at_s": time.perf_counter() - start, "worker": worker, "what": what, "pid": pid})
        print(f"[bench] {time.perf_counter() - start:6.1f} s: SIGKILL {worker} {what} (pid {pid})", flush=True)
        time.sleep(5)  # the gateway notices before the next target is chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=240.0)
    ap.add_argument("--calm", type=float, default=40.0, help="seconds of the baseline, before the first kill")
    ap.add_argument("--rate", type=float, default=1.5, help="requests per second")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    work = OUT / "chaos_run"
    model = load.bench_model(work / "model")
    schedule = load.mixed_schedule(random.Random(args.seed), seconds=args.seconds, rate=args.rate)
    print(f"[bench] {len(schedule)} requests over {args.seconds:.0f} s; kills start at {args.calm:.0f} s", flush=True)
    cluster = RunningCluster(model, work, prefill=2, decode=2, config=load.CLUSTER_CONFIG)
    kills: list[dict[str, object]] = []
    try:
        cluster.wait_ready()
        fallbacks_before = {r: metric(cluster.url, "splitmind_router_fallbacks_total", reason=r) or 0.0
                            for r in FALLBACKS}
        start = time.perf_counter()
        killer = threading.Thread(target=chaos, args=(cluster.url, start, args.calm, args.seconds, kills),
                                  daemon=True)
        killer.start()
        outcomes = load.run(cluster.url, schedule)
        killer.join(timeout=1)
        fallbacks = {r: (metric(cluster.url, "splitmind_router_fallbacks_total", reason=r) or 0.0)
                     - fallbacks_before[r] for r in FALLBACKS}
        restarts = {w: v["restarts"] for w, v in workers(cluster.url).items()}
    finally:
        cluster.stop()
    first_kill = min((float(k["at_s"]) for k in kills), default=float("inf"))  # type: ignore[arg-type]
    near = [o for o in outcomes if any(0 <= o.sent_s - float(k["at_s"]) <= NEAR_KILL_S  # type: ignore[arg-type]
                                       for k in kills)]
    windows = {
        "before the first kill": [o for o in outcomes if o.sent_s < first_kill],
        "after the first kill": [o for o in outcomes if o.sent_s >= first_kill],
        f"within {NEAR_KILL_S:.0f} s after a kill": near,
    }
    rows = {name: load.summary(group) for name, group in windows.items() if group}
    failures = sorted({f"{o.status} {o.error}".strip() for o in outcomes if not o.ok})
    (OUT / "chaos.json").write_text(json.dumps({"kills": kills, "windows": rows, "fallbacks": fallbacks,
                                                "restarts": restarts, "failures": failures}, indent=2))
    head = ("requests sent", "n", "success", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "mean latency")
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, r in rows.items():
        print(f"| {name} | {r['requests']} | {100 * r['success']:.1f}% | {r['ttft_p50_ms']:.0f} | "
              f"{r['ttft_p99_ms']:.0f} | {r['itl_p50_ms']:.1f} | {r['itl_p99_ms']:.1f} | {r['mean_ms']:.0f} |")
    print("\nTimes in ms. Kills:", ", ".join(f"{k['worker']} {k['what']} at {float(k['at_s']):.0f} s"  # type: ignore[arg-type]
                                            for k in kills) or "none")
    print("Fallbacks:", {k: int(v) for k, v in fallbacks.items()}, "restarts:", restarts)
    print("Failures:", failures or "none")


if __name__ == "__main__":
    main()
