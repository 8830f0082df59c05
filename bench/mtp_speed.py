"""MTP speculative decoding on the decode node: acceptance and decode speed, with and without.

    .venv/bin/python bench/mtp_speed.py                 # bundled tiny reasoner, about 15 minutes on 2 cores

For each setting of `engine.mtp_tokens` (0 = off, the baseline, then 1, 2, 3 speculative tokens)
it starts `splitmind up` (one prefill node on core 0, one decode node on core 1, NIXL between
them), sends the same hard problems, streaming, at each temperature (0 = greedy, 0.7, 1.0: the
OpenAI default) at batch 1 (one request at a time) and batch 8 (eight at once), and measures:

- decode tokens/s: completion tokens after the first, over the time from the first token to the
  last (batch 1: summed over requests; batch 8: all requests' tokens over the batch's span);
- acceptance: accepted / drafted tokens, from the decode node's spec-decoding counters
  (`splitmind_spec_{draft,accepted}_tokens_total` on the gateway's /metrics);
- where the time goes: target steps (each step yields 1 + the tokens accepted in it), time per
  step, and that time relative to a step without MTP: the cost of drafting and verifying;
- answers right: sampling must not cost accuracy (the baseline for each temperature is MTP off
  in the same run).

Greedy outputs must be identical across settings; the script checks that too. Prints a table
and writes bench/out/mtp_speed.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.metrics import spec_counters, spec_delta  # noqa: E402
from models import BUNDLED_MODEL  # noqa: E402
from models.tiny_reasoner.data import Problem, sample_problem  # noqa: E402
from tests.e2e.cluster import RunningCluster  # noqa: E402

OUT = ROOT / "bench" / "out"


@dataclass
class Run:
    mtp_tokens: int
    temperature: float
    batch: int
    decode_tokens: int
    decode_s: float
    drafted: float
    accepted: float
    right: int
    problems: int

    @property
    def tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_s

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else float("nan")

    @property
    def steps(self) -> float:
        """Target forward passes: each yields one token plus the drafts it accepted."""
        return self.decode_tokens - self.accepted


def stream(url: str, model: str, question: str, temperature: float = 0.0) -> tuple[str, int, float, float]:
    """(text, completion tokens, first token time, last token time)."""
    body = {"model": model, "messages": [{"role": "user", "content": question}], "temperature": temperature,
            "max_tokens": 1500, "stream": True, "stream_options": {"include_usage": True}}
    text, first, last, n = "", 0.0, 0.0, 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                n = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                delta = choice.get("delta", {})
                piece = (delta.get("reasoning_content") or "") + (delta.get("content") or "")
                if piece:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    text += piece
    return text, n, first, last


def measure(url: str, model: str, mtp: int, temperature: float, batch: int,
            problems: list[Problem]) -> tuple[Run, list[str]]:
    before = spec_counters(url)
    texts: list[str] = []
    tokens, seconds = 0, 0.0
    for start in range(0, len(problems), batch):
        group = problems[start : start + batch]
        with ThreadPoolExecutor(batch) as pool:
            results = list(pool.map(lambda p: stream(url, model, p.question, temperature), group))
        texts += [r[0] for r in results]
        tokens += sum(r[1] - 1 for r in results)
        seconds += max(r[3] for r in results) - min(r[2] for r in results)
    right = sum(t.rstrip().endswith(f"The answer is {p.answer}.") for t, p in zip(texts, problems, strict=True))
    drafted, accepted = spec_delta(url, before, drafting=mtp > 0)
    return Run(mtp, temperature, batch, tokens, seconds, drafted, accepted, right, len(problems)), texts


def hard_problems(n: int, seed: int) -> list[Problem]:
    rng = random.Random(seed)
    out: list[Problem] = []
    while len(out) < n:
        p = sample_problem(rng)
        if p.difficulty >= 4 or p.op == "*":
            out.append(p)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    ap.add_argument("--mtp-tokens", default="0,1,2,3", help="settings to compare; 0 (off) is the baseline")
    ap.add_argument("--temperatures", default="0,0.7,1.0", help="0 is greedy")
    ap.add_argument("--problems", type=int, default=16)
    args = ap.parse_args()
    settings = [int(x) for x in args.mtp_tokens.split(",")]
    temperatures = [float(x) for x in args.temperatures.split(",")]
    problems = hard_problems(args.problems, seed=7)
    OUT.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    outputs: dict[int, list[str]] = {}
    for mtp in settings:
        print(f"[bench] splitmind up with mtp_tokens = {mtp}", flush=True)
        config = f"[engine]\nkv_cache_gib = 1\nmax_model_len = 2048\nmtp_tokens = {mtp}\n"
        cluster = RunningCluster(args.model.resolve(), OUT / f"mtp_speed_{mtp}", prefill=1, config=config)
        try:
            cluster.wait_ready()
            model = httpx.get(cluster.url + "/v1/models").json()["data"][0]["id"]
            stream(cluster.url, model, problems[0].question)  # warm up
            for temperature in temperatures:
                for batch in (1, 8):
                    run, texts = measure(cluster.url, model, mtp, temperature, batch, problems)
                    runs.append(run)
                    if temperature == 0:
                        outputs.setdefault(mtp, texts)
                    print(f"[bench]   T={temperature:g} batch {batch}: {run.tokens_per_s:.1f} tok/s, "
                          f"{run.right}/{run.problems} right", flush=True)
        finally:
            cluster.stop()
    same = all(outputs[m] == outputs[settings[0]] for m in outputs)
    (OUT / "mtp_speed.json").write_text(json.dumps([asdict(r) for r in runs], indent=2) + "\n")

    base = {(r.temperature, r.batch): r for r in runs if r.mtp_tokens == 0}
    print(f"\n{len(problems)} problems; decode node on one core. Greedy outputs identical across settings: {same}\n")
    print("| T | MTP tokens | batch | decode tok/s | speedup | acceptance | tokens/step | ms/step "
          "| step cost vs no MTP | right |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(runs, key=lambda r: (r.temperature, r.batch, r.mtp_tokens)):
        b = base.get((r.temperature, r.batch))
        ms_step = 1000 * r.decode_s / r.steps
        base_ms = 1000 * b.decode_s / b.steps if b else float("nan")
        speedup = r.tokens_per_s / b.tokens_per_s if b else float("nan")
        acc = "-" if r.mtp_tokens == 0 else f"{100 * r.acceptance:.1f}%"
        print(f"| {r.temperature:g} | {r.mtp_tokens} | {r.batch} | {r.tokens_per_s:.1f} | {speedup:.2f}x | {acc} | "
              f"{r.decode_tokens / r.steps:.2f} | {ms_step:.2f} | {ms_step / base_ms:.2f}x | {r.right}/{r.problems} |")
    if not same:
        sys.exit("greedy outputs differ between MTP settings")


if __name__ == "__main__":
    main()
