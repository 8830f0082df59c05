"""TTFT and inter-token latency: splitmind's two routes against vLLM's engine, server and router.

    .venv/bin/python bench/pd_latency.py            # builds a bench checkpoint, ~6 minutes on 2 cores

For each prompt length it measures, in one run on one machine:
- engine: the prompt sent straight to a single vLLM AsyncLLM (its own process, compute threads
  on one core, as each splitmind node's on a 2-core machine) -- the baseline;
- as-node: the same engine with the arguments a node adds (the NIXL connector) and every one of
  its processes on that one core, as a node confines its engine: how much of the gap to the
  baseline is the engine's placement rather than splitmind's path;
- vLLM server: one vLLM OpenAI server (compute threads on core 0), measured with the same
  client as splitmind: the "bare engine" of the issue's goals (#16);
- vllm-router PD: vllm-router (its own venv, bench/tool_venv.py) over two vLLM servers with
  vLLM's NixlConnector, compute threads on cores 0 and 1; skipped with a printed reason where
  it cannot be installed or started;
- colocated: through splitmind's gateway to a decode node that prefills itself;
- disaggregated: gateway -> prefill node -> NIXL KV transfer -> decode node.
Both splitmind routes run on one `splitmind up` cluster (route chosen per request with the
`x-splitmind-route` header). TTFT is split into the gateway's phase histograms (tokenize,
prefill, first decode step) and the NIXL transfer time the decode node reports.

Prints the tables (and the goals' ratios) and writes bench/out/pd_latency.{json,png}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.metrics import histograms  # noqa: E402
from bench.tool_venv import ToolUnavailable  # noqa: E402
from bench.vllm_servers import vllm_openai_server, vllm_router_pd  # noqa: E402
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
    metrics = {**PHASES, "kv_transfer": "splitmind_kv_transfer_seconds"}
    found = histograms(url, tuple(metrics.values()))
    return {name: found[m][1:] if m in found else (0.0, 0.0) for name, m in metrics.items()}


# One client for the whole run, as real clients keep one: `httpx.stream()` builds a new client per
# call, and that (an SSL context, a connection) cost 20-25 ms that an earlier version of this
# bench counted into splitmind's TTFT (docs/benchmarks.md, 2026-12-02).
CLIENT = httpx.Client(timeout=120)


def stream_once(url: str, prompt: list[int], max_tokens: int, route: str) -> tuple[float, float, float]:
    """TTFT, mean inter-token latency and chunks per token of one streamed completion. TTFT is
    the first chunk with text, as `vllm bench serve` takes it: vLLM sends a chunk for a token
    whose text is still an incomplete character, splitmind waits for the character. Tokens are
    counted per chunk from the running usage (`continuous_usage_stats`), and a chunk's tokens all
    get its arrival time, as the engine baseline stamps the tokens of one engine output: the
    gateway merges deltas a reader has not taken yet, and a mean gap per chunk then read as a
    slower stream (41 chunks for 64 tokens in one run, 2026-12-02)."""
    body = {"model": "model", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    t0 = time.perf_counter()
    stamps: list[float] = []
    chunks = tokens = 0
    first_text = 0.0
    with CLIENT.stream("POST", url + "/v1/completions", json=body, headers={"x-splitmind-route": route}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                now = time.perf_counter()
                chunk = json.loads(line[6:])
                usage = chunk.get("usage")
                # vllm-router drops `stream_options`: its chunks carry no running usage, and vLLM
                # sends one chunk per token there (empty text while a character is incomplete).
                seen = usage["completion_tokens"] if usage else tokens + bool(chunk.get("choices"))
                if not first_text and any(c.get("text") for c in chunk.get("choices") or ()):
                    first_text = now
                if chunk.get("choices") and seen > tokens:
                    stamps += [now] * (seen - tokens)
                    chunks += 1
                tokens = max(tokens, seen)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return first_text - t0, statistics.mean(gaps) if gaps else 0.0, chunks / max(len(stamps), 1)


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


def served(url: str, prompts: dict[int, list[int]], lengths: list[int], max_tokens: int,
           reps: int) -> dict[int, tuple[float, float]]:
    """Median (TTFT, ITL) per prompt length through an OpenAI server at `url`, after a warm-up."""
    stream_once(url, prompts[lengths[0]], 4, "")
    out = {}
    for n in lengths:
        runs = [stream_once(url, prompts[n], max_tokens, "") for _ in range(reps)]
        out[n] = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
    return out


def vllm_rows(model: Path, prompts: dict[int, list[int]], lengths: list[int], max_tokens: int, reps: int,
              max_model_len: int, logs: Path) -> dict[str, dict[int, tuple[float, float]]]:
    """vLLM's own servers: one OpenAI server (compute threads on core 0, the issue's "bare
    engine"), and vllm-router's PD over two (skipped with the reason where it cannot run)."""
    rows = {}
    print("[bench] baseline: one vLLM OpenAI server, compute threads on core 0", flush=True)
    with vllm_openai_server(model, core=0, max_model_len=max_model_len, log=logs / "vllm-server.log") as url:
        rows["server"] = served(url, prompts, lengths, max_tokens, reps)
    print("[bench] vllm-router PD over two vLLM servers with NixlConnector (cores 0 and 1)", flush=True)
    try:
        with vllm_router_pd(model, max_model_len=max_model_len, logs=logs) as url:
            rows["router"] = served(url, prompts, lengths, max_tokens, reps)
    except ToolUnavailable as e:
        print(f"[bench] vllm-router row skipped: {e}", flush=True)
    return rows


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

    vllm = vllm_rows(model, prompts, lengths, args.max_tokens, args.reps, max_model_len, work / "vllm-logs")

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
            for name, measured in vllm.items():
                row[f"{name}_ttft"], row[f"{name}_itl"] = measured[n]
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
    report(results, args.reps)
    plot(results)


SYSTEMS = (("engine", "AsyncLLM"), ("engine_node", "as-node"), ("server", "vLLM server"),
           ("router", "vllm-router PD"), ("colocated", "coloc"), ("disaggregated", "PD"))


def _table(head: tuple[str, ...], rows: list[list[float | str]]) -> None:
    print(" | ".join(f"{h:>14}" for h in head))
    for cells in rows:
        print(" | ".join(c.rjust(14) if isinstance(c, str) else f"{c:>14.2f}" for c in cells))


def report(results: list[dict[str, float]], reps: int) -> None:
    ms = 1000.0
    shown = [(k, name) for k, name in SYSTEMS if f"{k}_itl" in results[0]]
    print(f"\nTTFT / ITL in ms, median of {reps} runs each\n")
    _table(("prompt", *(name for _, name in shown)),
           [[str(r["prompt_len"]), *(f"{r[f'{k}_ttft'] * ms:.1f} / {r[f'{k}_itl'] * ms:.2f}" for k, _ in shown)]
            for r in results])
    print("\nsplitmind PD's TTFT by phase, ms (means over the disaggregated runs)\n")
    _table(("prompt", "PD TTFT", "PD max", "tokenize", "prefill", "KV xfer", "1st decode", "PD chunk/tok"),
           [[str(r["prompt_len"]), r["disaggregated_ttft"] * ms, r["disaggregated_ttft_max"] * ms,
             r["phase_tokenize"] * ms, r["phase_prefill"] * ms, r["phase_kv_transfer"] * ms,
             r["phase_decode_first"] * ms, r["disaggregated_chunks_per_token"]] for r in results])
    if "server_itl" not in results[0]:
        return
    # The goals (#16) are against one bare vLLM OpenAI server: the "bare engine" of its table.
    print("\nGoals against one vLLM OpenAI server (#16): PD TTFT <= 1.5x + 30 ms, PD ITL <= 1.3x, "
          "coloc TTFT <= +10 ms, coloc ITL <= 1.1x\n")
    rows: list[list[float | str]] = []
    for r in results:
        pd_ttft_limit = 1.5 * r["server_ttft"] * ms + 30
        rows.append([str(r["prompt_len"]), f"{r['disaggregated_ttft'] * ms:.1f} <= {pd_ttft_limit:.1f}",
                     f"{r['disaggregated_itl'] / r['server_itl']:.2f}x",
                     f"{(r['colocated_ttft'] - r['server_ttft']) * ms:+.1f} ms",
                     f"{r['colocated_itl'] / r['server_itl']:.2f}x"])
    _table(("prompt", "PD TTFT", "PD ITL", "coloc TTFT", "coloc ITL"), rows)


def plot(results: list[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    xs = [r["prompt_len"] for r in results]
    for key, label in (("engine", "bare vLLM engine (AsyncLLM)"), ("server", "vLLM OpenAI server"),
                       ("router", "vllm-router PD (NIXL)"), ("colocated", "splitmind colocated"),
                       ("disaggregated", "splitmind PD (NIXL)")):
        if f"{key}_itl" not in results[0]:
            continue
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
