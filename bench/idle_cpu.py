"""Idle means idle: the CPU every process of an idle `splitmind up` cluster uses.

    .venv/bin/python bench/idle_cpu.py              # the bundled reasoner, PD (1 prefill + 1 decode), ~3 minutes

Starts a cluster, sends a few requests through both routes (so that every engine has stepped,
pulled KV and gone quiet again), waits out vLLM's one-second spin window, then samples each
process's CPU time, and each thread's, over `--seconds`. Prints one row per process, the busiest
threads grouped by name, and the total as a share of one core. The issue's goal (#16): under 2%
of a core for every splitmind process together.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.cluster import RunningCluster  # noqa: E402

MODEL = ROOT / "models" / "tiny-reasoner"


def cpu_seconds(procs: list[psutil.Process]) -> tuple[dict[int, float], dict[tuple[str, int, int], float]]:
    """CPU seconds so far of each process, and of each (thread name, process, thread)."""
    per_proc: dict[int, float] = {}
    per_thread: dict[tuple[str, int, int], float] = {}
    for p in procs:
        try:
            times = p.cpu_times()
            per_proc[p.pid] = times.user + times.system
            for t in p.threads():
                per_thread[(thread_name(p.pid, t.id), p.pid, t.id)] = t.user_time + t.system_time
        except psutil.NoSuchProcess:
            continue
    return per_proc, per_thread


def thread_name(pid: int, tid: int) -> str:
    try:
        return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:  # the thread ended
        return "?"


def label(p: psutil.Process) -> str:
    cmd = p.cmdline()
    for module in ("prefill_node", "decode_node", "api"):
        if "-m" in cmd and module in cmd:
            return {"api": "gateway"}.get(module, module)
    return p.name()


def warm(url: str) -> None:
    """One request per route, so that KV has moved and every engine has stepped."""
    model = httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["id"]
    for route in ("disaggregated", "colocated"):
        r = httpx.post(url + "/v1/chat/completions", timeout=120, headers={"x-splitmind-route": route},
                       json={"model": model, "messages": [{"role": "user", "content": "What is 2+2?"}],
                             "max_tokens": 32})
        r.raise_for_status()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--model", type=Path, default=MODEL)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="idle-cpu-") as tmp:
        cluster = RunningCluster(args.model, Path(tmp), prefill=1, config="[gateway]\nallow_route_override = true\n")
        try:
            print("[idle_cpu] starting the cluster", flush=True)
            cluster.wait_ready()
            warm(cluster.url)
            time.sleep(5)  # past vLLM's 1 s shared-memory spin window and the last heartbeats' work
            root = psutil.Process(cluster.proc.pid)
            procs = [root, *root.children(recursive=True)]
            labels = {p.pid: label(p) for p in procs}
            print(f"[idle_cpu] sampling {len(procs)} processes for {args.seconds:.0f} s", flush=True)
            before, before_t = cpu_seconds(procs)
            time.sleep(args.seconds)
            after, after_t = cpu_seconds(procs)
        finally:
            cluster.stop()
    share = {pid: 100 * (after[pid] - before[pid]) / args.seconds for pid in after if pid in before}
    by_thread: dict[str, float] = collections.defaultdict(float)
    counts: dict[str, int] = collections.Counter()
    for key, t in after_t.items():
        if key in before_t:
            by_thread[key[0]] += 100 * (t - before_t[key]) / args.seconds
            counts[key[0]] += 1
    print(f"\n{'process':>16} | {'pid':>7} | % of a core")
    for pid, value in share.items():
        print(f"{labels[pid]:>16} | {pid:>7} | {value:6.2f}")
    print(f"{'total':>16} | {'':>7} | {sum(share.values()):6.2f}   (goal: under 2)")
    print(f"\n{'thread name':>16} | threads | % of a core")
    for name, value in sorted(by_thread.items(), key=lambda kv: -kv[1])[:8]:
        print(f"{name:>16} | {counts[name]:>7} | {value:6.2f}")


if __name__ == "__main__":
    main()
