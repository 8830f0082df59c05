"""TTFT and inter-token latency: splitmind's disaggregated path vs. one bare vLLM engine.

    .venv/bin/python bench/pd_latency.py            # builds a bench checkpoint, ~3 minutes on 2 cores

For each prompt length it measures, in one run on one machine:
- engine: the prompt sent straight to a single vLLM AsyncLLM (its own process, compute threads
  on one core, as each splitmind node's on a 2-core machine) -- the baseline;
- as-node: the same engine with the arguments a node adds (the NIXL connector) and every one of
  its processes on that one core, as a node confines its engine: how much of the gap to the
  baseline is the engine's placement rather than splitmind's path;
- colocated: through splitmind's gateway to a decode node that prefills itself;
- disaggregated: gateway -> prefill node -> NIXL KV transfer -> decode node.
Both splitmind routes run on one `splitmind up` cluster (route chosen per request with the
`x-splitmind-route` header). TTFT is split into the gateway's phase histograms (tokenize,
prefill, first decode step) and the NIXL transfer time the decode node reports.

Prints a table and writes bench/out/pd_latency.{json,png}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.test_checkpoints import CheckpointSpec, build_checkpoint  # noqa: E402
from splitmind.launcher import free_port  # noqa: E402
from tests.e2e.cluster import RunningCluster  # noqa: E402

OUT = ROOT / "bench" / "out"
PHASES = {
    "tokenize": "splitmind_tokenize_seconds",
    "prefill": "splitmind_prefill_seconds",
    "decode_first": "splitmind_decode_first_token_seconds",
}


def histogram_sums(url: str) -> dict[str, tuple[float, float]]:
    """(sum, count) for each phase histogram, plus NIXL's kv transfer histogram."""
    text = httpx.get(url + "/metrics").text
    out = {}
    for name, metric in {**PHASES, "kv_transfer": "splitmind_kv_transfer_seconds"}.items():
        sums = re.findall(rf"^{metric}_sum(?:{{[^}}]*}})? (\S+)$", text, re.M)
        counts = re.findall(rf"^{metric}_count(?:{{[^}}]*}})? (\S+)$", text, re.M)
        out[name] = (sum(map(float, sums)), sum(map(float, counts)))
    return out


# One client for the whole run, as real clients keep one: `httpx.stream()` builds a new client per
# call, and that (an SSL context, a connection) cost 20-25 ms that an earlier version of this
# bench counted into splitmind's TTFT (docs/benchmarks.md, 2026-12-02).
CLIENT = httpx.Client(timeout=120)


def stream_once(url: str, prompt: list[int], max_tokens: int, route: str) -> tuple[float, float, float]:
    """TTFT, mean inter-token latency and chunks per token of one streamed completion. Tokens are
    counted per chunk from the running usage (`continuous_usage_stats`), and a chunk's tokens all
    get its arrival time, as the engine baseline stamps the tokens of one engine output: the
    gateway merges deltas a reader has not taken yet, and a mean gap per chunk then read as a
    slower stream (41 chunks for 64 tokens in one run, 2026-12-02)."""
    body = {"model": "model", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    t0 = time.perf_counter()
    stamps: list[float] = []
    chunks = tokens = 0
    with CLIENT.stream("POST", url + "/v1/completions", json=body, headers={"x-splitmind-route": route}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                now = time.perf_counter()
                chunk = json.loads(line[6:])
                seen = (chunk.get("usage") or {}).get("completion_tokens", tokens)
                if chunk.get("choices") and seen > tokens:
                    stamps += [now] * (seen - tokens)
                    chunks += 1
                tokens = max(tokens, seen)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return stamps[0] - t0, statistics.mean(gaps) if gaps else 0.0, chunks / max(len(stamps), 1)


def baseline(model: Path, series: list[list[int]], lengths: list[int], max_tokens: int, max_model_len: int, *,
             as_node: bool) -> dict[int, tuple[float, float]]:
    """Median (TTFT, ITL) per prompt length of `bench/engine_baseline.py`. `as_node`: with the
    engine arguments a node adds and every engine process confined to one core, as a node
    confines its engine (`splitmind/node/main.py`); the bare engine pins only its compute
    threads and lets its engine core and frontend use the other core."""
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "0", "VLLM_CPU_KVCACHE_SPACE": "2",
           "VLLM_NIXL_SIDE_CHANNEL_PORT": str(free_port("127.0.0.1"))}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "engine_baseline.py"), "--model", str(model),
                           "--prompts", json.dumps(series), "--max-tokens", str(max_tokens),
                           "--max-model-len", str(max_model_len), *(["--as-node"] if as_node else [])],
                          env=env, capture_output=True, text=True, cwd=ROOT,
                          preexec_fn=(lambda: os.sched_setaffinity(0, {0})) if as_node else None)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or len(rows) != len(series):
        sys.exit(f"baseline failed:\n{proc.stderr[-3000:]}")
    return {n: (statistics.median(r["ttft_s"] for r in rows if r["prompt_len"] == n),
                statistics.median(r["itl_s"] for r in rows if r["prompt_len"] == n)) for n in lengths}


def phase_means(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, float]:
    out = {}
    for k in before:
        ds, dc = after[k][0] - before[k][0], after[k][1] - before[k][1]
        out[k] = ds / dc if dc else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="128,256,512,1024,2048")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    OUT.mkdir(parents=True, exist_ok=True)
    work = OUT / "pd_latency_run"
    model = build_checkpoint(work / "model", CheckpointSpec(
        weights="random", hidden_size=args.hidden, num_layers=args.layers, intermediate_size=args.hidden * 3,
        max_position_embeddings=8192))
    rng = random.Random(0)
    prompts = {n: [rng.randrange(3, 250) for _ in range(n)] for n in lengths}
    max_model_len = max(lengths) + args.max_tokens + 64

    series = [prompts[n] for n in lengths for _ in range(args.reps)]
    print(f"[bench] baseline: bare vLLM engine, compute threads on core 0, {args.reps} reps x {lengths}", flush=True)
    engine = baseline(model, series, lengths, args.max_tokens, max_model_len, as_node=False)
    print("[bench] baseline: the same engine as a node runs it (NIXL connector; every process on core 0)", flush=True)
    engine_node = baseline(model, series, lengths, args.max_tokens, max_model_len, as_node=True)

    print("[bench] splitmind up: 1 prefill node (core 0) + 1 decode node (core 1)", flush=True)
    config = (f"[engine]\nkv_cache_gib = 2\nmax_model_len = {max_model_len}\nenable_prefix_caching = false\n"
              "[gateway]\nallow_route_override = true\n")
    cluster = RunningCluster(model, work, prefill=1, config=config)
    results = []
    try:
        cluster.wait_ready()
        stream_once(cluster.url, prompts[lengths[0]], 4, "disaggregated")  # warm up both paths
        stream_once(cluster.url, prompts[lengths[0]], 4, "colocated")
        for n in lengths:
            row: dict[str, float] = {"prompt_len": n, "engine_ttft": engine[n][0], "engine_itl": engine[n][1],
                                     "engine_node_ttft": engine_node[n][0], "engine_node_itl": engine_node[n][1]}
            for route in ("colocated", "disaggregated"):
                before = histogram_sums(cluster.url)
                runs = [stream_once(cluster.url, prompts[n], args.max_tokens, route) for _ in range(args.reps)]
                time.sleep(1.2)  # let the decode node's stats heartbeat carry the last transfers
                phases = phase_means(before, histogram_sums(cluster.url))
                row[f"{route}_ttft"] = statistics.median(r[0] for r in runs)
                row[f"{route}_ttft_max"] = max(r[0] for r in runs)
                row[f"{route}_itl"] = statistics.median(r[1] for r in runs)
                row[f"{route}_chunks_per_token"] = statistics.median(r[2] for r in runs)
                if route == "disaggregated":
                    row.update({f"phase_{k}": v for k, v in phases.items()})
            results.append(row)
            print(f"[bench] {n} tokens done", flush=True)
    finally:
        cluster.stop()

    (OUT / "pd_latency.json").write_text(json.dumps(results, indent=2))
    ms = 1000.0
    print("\nTTFT and ITL in ms (median of", args.reps, "runs); phases are means over the disaggregated runs\n")
    head = ("prompt", "engine TTFT", "coloc TTFT", "PD TTFT", "PD max", "PD overhead", "tokenize", "prefill",
            "KV xfer", "1st decode", "engine ITL", "as-node ITL", "coloc ITL", "PD ITL", "PD chunk/tok")
    print(" | ".join(f"{h:>11}" for h in head))
    for r in results:
        cells = [r["prompt_len"], r["engine_ttft"] * ms, r["colocated_ttft"] * ms, r["disaggregated_ttft"] * ms,
                 r["disaggregated_ttft_max"] * ms, (r["disaggregated_ttft"] - r["engine_ttft"]) * ms,
                 r["phase_tokenize"] * ms, r["phase_prefill"] * ms, r["phase_kv_transfer"] * ms,
                 r["phase_decode_first"] * ms,
                 r["engine_itl"] * ms, r["engine_node_itl"] * ms, r["colocated_itl"] * ms, r["disaggregated_itl"] * ms,
                 r["disaggregated_chunks_per_token"]]
        print(" | ".join(f"{c:>11.0f}" if i == 0 else f"{c:>11.2f}" for i, c in enumerate(cells)))
    plot(results)


def plot(results: list[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    xs = [r["prompt_len"] for r in results]
    for key, label in (("engine", "bare vLLM engine"), ("colocated", "splitmind colocated"),
                       ("disaggregated", "splitmind PD (NIXL)")):
        ax[0].plot(xs, [r[f"{key}_ttft"] * 1000 for r in results], marker="o", label=label)
        ax[1].plot(xs, [r[f"{key}_itl"] * 1000 for r in results], marker="o", label=label)
    for a, title in zip(ax, ("TTFT (ms)", "inter-token latency (ms)"), strict=True):
        a.set_xscale("log", base=2)
        a.set_xlabel("prompt tokens")
        a.set_title(title)
        a.grid(alpha=0.3)
    ax[0].legend()
    fig.tight_layout()
    fig.savefig(OUT / "pd_latency.png", dpi=110)
    print(f"\nplot: {OUT / 'pd_latency.png'}")


if __name__ == "__main__":
    main()
