"""Load at rising request rates, by guidellm or `vllm bench serve`: splitmind PD against one vLLM server.

    .venv/bin/python bench/load_study.py                    # guidellm, 1,2,4,6,8 req/s, 20 s each; ~10 min
    .venv/bin/python bench/load_study.py --rates 2,4 --seconds 10
    .venv/bin/python bench/load_study.py --client vllm-bench --rates inf --max-concurrency 8   # the issue's run

guidellm (PyPI, unmodified; installed on first use into bench/out/guidellm-venv, bench/tool_venv.py)
sends prompts of `--prompt-tokens` and asks `--output-tokens` back (streamed, EOS ignored) at each
constant rate for `--seconds`, against, in one run on one random checkpoint (`--systems` picks one):
- one vLLM OpenAI server, compute threads on core 0 (the issue's "bare engine", #16);
- `splitmind up` PD: gateway -> prefill node (core 0) -> NIXL -> decode node (core 1).
With `--client vllm-bench`, vLLM's own `vllm bench serve` (bench/vllm_bench_serve.py, random
dataset, EOS ignored) sends `--prompts` requests per rate instead ("inf": all at once, bounded by
`--max-concurrency`). Both send completions, not chats: the checkpoint's chat template thinks
first, and splitmind streams that as reasoning, which guidellm does not count as the first token
(vLLM's server, without a reasoning parser, sends it as content). For each rate: requests
completed / failed, output tokens/s, TTFT and ITL percentiles, as the client measured them.
Prints the table, writes bench/out/load_study-<client>.{json,png}. The failed column checks that
an unmodified client gets every answer from splitmind. Then splitmind's first token by phase, from
the gateway's histograms: where its TTFT went.

guidellm's prompts come from a file this script writes (random words cut to the exact token
count), not from guidellm's synthetic generator: that runs in a data-loader process which took
40-100% of a core for the whole run, floating over the cores the engines compute on. It was
where splitmind's TTFT tail under guidellm came from (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import bench_model  # noqa: E402
from bench.metrics import histograms, quantile  # noqa: E402
from bench.tool_venv import ToolUnavailable, ensure_tool  # noqa: E402
from bench.vllm_servers import vllm_openai_server  # noqa: E402
from tests.e2e.cluster import RunningCluster  # noqa: E402

OUT = ROOT / "bench" / "out"
GUIDELLM = "guidellm==0.8.1"
Row = dict[str, float]


def guidellm(exe: Path, url: str, model: Path, prompts: Path, args: argparse.Namespace, out: Path) -> list[Row]:
    """One guidellm run over every rate; the table's numbers per rate from its JSON report."""
    rates = [float(r) for r in args.rates.split(",")]
    cmd = [str(exe), "run", "--backend", f"kind=openai_http,target={url},model=model,request_format=/v1/completions",
           # A list inside --profile's key=value pairs would be split at its commas: --override takes it.
           "--profile", f"kind=constant,rate={rates[0]}", "--override", "profile.rate", args.rates,
           "--constraint", f"kind=max_duration,seconds={args.seconds}",
           "--tokenizer", f"kind=huggingface_auto,model={model}",
           "--data", f"kind=json_file,path={prompts}",
           "--output", f"kind=json,path={out}", "--disable-console-interactive"]
    # guidellm's default of 10 worker processes (and its busy main loop) took most of a core at
    # 2 requests/s here, from the cores the systems under test run on; one worker keeps up.
    env = {**os.environ, "GUIDELLM__MAX_WORKER_PROCESSES": str(args.client_workers)}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=OUT, env=env,
                          timeout=60 + len(rates) * (args.seconds + 120))
    if proc.returncode != 0 or not out.exists():
        sys.exit(f"guidellm failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return [guidellm_row(b) for b in json.loads(out.read_text())["benchmarks"]]


def prompts_file(model: Path, args: argparse.Namespace, path: Path) -> Path:
    """The prompts, made here, not by guidellm: random words cut to exactly `--prompt-tokens` of
    the model's tokenizer, one row per request the run can send, with the output length to ask
    for. guidellm's own synthetic data worker builds prompts in a process that took 40-100% of a
    core for the whole run on this host, from the cores the systems under test compute on."""
    import random

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    rng = random.Random(0)
    rows = int(1.5 * args.seconds * sum(float(r) for r in args.rates.split(","))) + 16
    with path.open("w") as f:
        for _ in range(rows):
            words = " ".join("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9)))
                             for _ in range(args.prompt_tokens))
            text = tok.decode(tok(words)["input_ids"][:args.prompt_tokens])
            f.write(json.dumps({"prompt": text, "prompt_tokens_count": args.prompt_tokens,
                                "output_tokens_count": args.output_tokens}) + "\n")
    return path


def guidellm_row(bench: dict[str, Any]) -> Row:
    m = bench["metrics"]
    totals = m["request_totals"]

    def pct(name: str, p: str) -> float:
        return float(m[name]["successful"]["percentiles"][p])

    return {"rate": float(bench["config"]["strategy"]["rate"]), "completed": totals["successful"],
            "failed": totals["errored"], "incomplete": totals["incomplete"],
            "output_tok_s": float(m["output_tokens_per_second"]["successful"]["mean"]),
            "ttft_p50": pct("time_to_first_token_ms", "p50"), "ttft_p99": pct("time_to_first_token_ms", "p99"),
            "itl_p50": pct("inter_token_latency_ms", "p50"), "itl_p99": pct("inter_token_latency_ms", "p99")}


def vllm_bench(url: str, model: Path, args: argparse.Namespace, out: Path) -> list[Row]:
    """`vllm bench serve` once per rate; the table's numbers from its result files."""
    rows = []
    for rate in args.rates.split(","):
        result = out.with_name(f"{out.stem}-{rate}.json")
        cmd = [sys.executable, str(ROOT / "bench" / "vllm_bench_serve.py"), "--backend", "vllm", "--base-url", url,
               "--model", "model", "--tokenizer", str(model), "--dataset-name", "random",
               "--random-input-len", str(args.prompt_tokens), "--random-output-len", str(args.output_tokens),
               "--num-prompts", str(args.prompts), "--request-rate", rate, "--ignore-eos", "--seed", "0",
               "--disable-tqdm", "--save-result", "--result-dir", str(result.parent), "--result-filename", result.name,
               *(["--max-concurrency", str(args.max_concurrency)] if args.max_concurrency else [])]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
        if proc.returncode != 0 or not result.exists():
            sys.exit(f"vllm bench serve failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        r = json.loads(result.read_text())
        rows.append({"rate": float(rate), "completed": r["completed"], "failed": r.get("failed", 0), "incomplete": 0,
                     "output_tok_s": r["output_throughput"], "ttft_p50": r["median_ttft_ms"],
                     "ttft_p99": r["p99_ttft_ms"], "itl_p50": r["median_itl_ms"], "itl_p99": r["p99_itl_ms"],
                     "duration_s": r["duration"]})
    return rows


@contextlib.contextmanager
def splitmind_pd(model: Path, work: Path, max_model_len: int) -> Iterator[str]:
    config = f"[engine]\nkv_cache_gib = 2\nmax_model_len = {max_model_len}\nenable_prefix_caching = false\n"
    cluster = RunningCluster(model, work, prefill=1, config=config)
    try:
        cluster.wait_ready()
        yield cluster.url
    finally:
        cluster.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--client", choices=("guidellm", "vllm-bench"), default="guidellm")
    ap.add_argument("--rates", default="1,2,4,6,8", help="requests per second, one benchmark each")
    ap.add_argument("--seconds", type=int, default=20, help="guidellm: seconds per rate")
    ap.add_argument("--prompts", type=int, default=48, help="vllm-bench: requests per rate")
    ap.add_argument("--max-concurrency", type=int, default=0, help="vllm-bench: 0 = unbounded")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--output-tokens", type=int, default=128)
    ap.add_argument("--client-workers", type=int, default=1, help="guidellm's worker processes")
    ap.add_argument("--systems", choices=("both", "splitmind", "vllm"), default="both")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    work = OUT / "load_study_run"
    exe = Path()
    if args.client == "guidellm":
        try:
            exe = ensure_tool("guidellm", GUIDELLM, reuse_main=True)
        except ToolUnavailable as e:
            sys.exit(f"[bench] cannot run without guidellm: {e}")
    model = bench_model(work / "model")  # the routing benchmarks' random checkpoint
    prompts = (prompts_file(model, args, work / "guidellm-prompts.jsonl")  # the same for every system
               if args.client == "guidellm" else Path())
    max_model_len = 2 * (args.prompt_tokens + args.output_tokens) + 256  # room to spare, as before the prompt file
    systems = {"vLLM server (1 core)": lambda: vllm_openai_server(
                   model, core=0, max_model_len=max_model_len, log=work / "vllm-server.log"),
               "splitmind PD (2 cores)": lambda: splitmind_pd(model, work / "splitmind", max_model_len)}
    if args.systems != "both":
        systems = {k: v for k, v in systems.items() if k.startswith(args.systems)}
    results: dict[str, list[Row]] = {}
    breakdown: list[str] = []
    for name, start in systems.items():
        print(f"[bench] {name}: starting, then {args.client} at {args.rates} req/s", flush=True)
        with start() as url:
            out = work / f"{args.client}-{name.split(' (')[0].replace(' ', '_')}.json"
            results[name] = (vllm_bench(url, model, args, out) if args.client == "vllm-bench"
                             else guidellm(exe, url, model, prompts, args, out))
            if name.startswith("splitmind"):
                breakdown = ttft_breakdown(url)
    (OUT / f"load_study-{args.client}.json").write_text(json.dumps(results, indent=2))
    report(results, args)
    if breakdown:
        print("\nsplitmind's first token, by phase, over every rate of the run (the gateway's histograms; "
              "p50 and p99 interpolated within buckets)\n")
        print("\n".join(breakdown))
    plot(results, args.client)


TTFT_HISTOGRAMS = ("splitmind_ttft_seconds", "splitmind_tokenize_seconds", "splitmind_prefill_seconds",
                   "splitmind_decode_first_token_seconds", "splitmind_ttft_phase_seconds")


def ttft_breakdown(url: str) -> list[str]:
    """Where splitmind's first tokens spent their time: the gateway's own phases (prefill: request
    sent -> first token back; decode first token: includes the KV pull) and the engines' (queue,
    prefill, kv_transfer, first_decode_step), as a table's lines."""
    lines = [f"{'histogram':>52} | {'count':>7} | {'mean ms':>8} | {'p50 ms':>8} | {'p99 ms':>8}"]
    for key, (buckets, total, count) in sorted(histograms(url, TTFT_HISTOGRAMS).items()):
        if count:
            lines.append(f"{key:>52} | {count:>7.0f} | {1e3 * total / count:>8.1f} "
                         f"| {1e3 * quantile(buckets, 0.5):>8.1f} | {1e3 * quantile(buckets, 0.99):>8.1f}")
    return lines


def report(results: dict[str, list[Row]], args: argparse.Namespace) -> None:
    how = (f"guidellm {GUIDELLM.split('==')[1]}, constant rates, {args.seconds} s each" if args.client == "guidellm"
           else f"vllm bench serve, {args.prompts} prompts per rate, max concurrency {args.max_concurrency or 'none'}")
    print(f"\n{how}, {args.prompt_tokens} prompt / {args.output_tokens} output tokens; TTFT and ITL in ms\n")
    head = ("system", "rate", "done", "failed", "incompl.", "out tok/s", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99")
    print(" | ".join(f"{h:>12}" for h in head))
    for name, rows in results.items():
        for r in rows:
            cells = [r[k] for k in ("rate", "completed", "failed", "incomplete", "output_tok_s", "ttft_p50", "ttft_p99",
                                    "itl_p50", "itl_p99")]
            print(f"{name.split(' (')[0]:>12} | " + " | ".join(f"{c:>12.1f}" for c in cells))


def plot(results: dict[str, list[Row]], client: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    for name, rows in results.items():
        xs = [r["rate"] if math.isfinite(r["rate"]) else 0.0 for r in rows]
        ax[0].plot(xs, [r["output_tok_s"] for r in rows], marker="o", label=name)
        ax[1].plot(xs, [r["ttft_p50"] for r in rows], marker="o", label=name)
        ax[2].plot(xs, [r["itl_p50"] for r in rows], marker="o", label=name)
    for a, title in zip(ax, ("output tokens/s", "TTFT p50 (ms)", "ITL p50 (ms)"), strict=True):
        a.set_xlabel("offered requests/s (0: all at once)")
        a.set_title(title)
        a.grid(alpha=0.3)
    ax[0].legend()
    fig.tight_layout()
    path = OUT / f"load_study-{client}.png"
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path}")


if __name__ == "__main__":
    main()
