"""Quality of the tiny reasoner, measured through the real serving path.

    .venv/bin/python bench/reasoner_eval.py                  # bundled model, about 5 minutes on 2 cores

Starts `splitmind up` (one prefill node, one decode node with MTP, NIXL between them), unless
`--url` points at a running gateway, and asks it fresh problems from the training distribution
(its own seed) with the official `openai` client, greedy:

- natural thinking: exact-match accuracy of `The answer is N.`, and accuracy and mean reasoning
  tokens by difficulty (digits of the larger operand);
- thinking cut at 25%, 50% and 75% of each problem's own natural length: the first k reasoning
  tokens of the greedy run, then the end a thinking budget forces (the transition sentence and
  `</think>`, `models.tiny_reasoner.data.FORCED_END`), sent as a token-id prompt to
  `/v1/completions`, which the model continues with its answer. Greedy decoding is
  deterministic, so those k tokens are exactly what a run stopped at k would have produced;
- thinking off (`chat_template_kwargs: {"enable_thinking": false}`).

An answer is well formed when the reply is one line containing `The answer is N.` Writes
eval.json (every answer), eval.md (the tables) and accuracy_vs_reasoning.png to --out, and
prints the tables.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from openai import OpenAI
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.metrics import spec_counters, spec_delta  # noqa: E402
from models import BUNDLED_MODEL  # noqa: E402
from models.tiny_reasoner.data import FORCED_END, Problem, sample_problem  # noqa: E402
from tests.e2e.cluster import RunningCluster  # noqa: E402

ANSWER = re.compile(r"The answer is (-?\d+)\.")
FRACTIONS = (0.25, 0.5, 0.75)
EVAL_SEED = 20261126  # training draws from seed 0 (and its held-out set from seed 1,000,003)
CONFIG = "[engine]\nkv_cache_gib = 2\nmax_model_len = 2048\nmax_num_seqs = 64\n"


@dataclass
class Answer:
    said: str
    correct: bool
    well_formed: bool
    reasoning_tokens: int


@dataclass
class Outcome:
    question: str
    answer: int
    digits: int
    op: str
    natural: Answer
    cut: dict[str, Answer] = field(default_factory=dict)  # "0.25" -> answer after the forced end
    thinking_off: Answer | None = None


def judge(text: str, answer: int, reasoning_tokens: int) -> Answer:
    text = text.strip()
    m = ANSWER.search(text)
    # Exact match on the number as written: "01" for 1 is wrong (a skipped `drop a leading 0`).
    return Answer(text, bool(m and m.group(1) == str(answer)), m is not None and "\n" not in text,
                  reasoning_tokens)


class Evaluator:
    def __init__(self, url: str, model_dir: Path) -> None:
        self.client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
        self.model = self.client.models.list().data[0].id
        tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.forced_end_ids = tok.encode(FORCED_END, add_special_tokens=False).ids

    def think(self, p: Problem) -> tuple[Outcome, list[int]]:
        """Natural thinking; also returns the prompt and reply token ids the cuts start from."""
        messages = [{"role": "user", "content": p.question}]
        r = self.client.chat.completions.create(model=self.model, messages=messages,  # type: ignore[arg-type]
                                                temperature=0, max_tokens=1500, extra_body={"return_token_ids": True})
        choice = r.choices[0]
        extra = choice.model_extra or {}
        details = r.usage.completion_tokens_details if r.usage else None
        n_reasoning = max(0, (details.reasoning_tokens or 0) - 1) if details else 0  # `</think>` is not thinking
        out = Outcome(p.question, p.answer, p.difficulty, p.op, judge(choice.message.content or "", p.answer,
                                                                        n_reasoning))
        return out, extra["prompt_token_ids"] + extra["token_ids"][:n_reasoning]

    def cut_and_off(self, job: tuple[Outcome, list[int]]) -> Outcome:
        """The forced-end answers at 25/50/75% of the natural thinking, and thinking off."""
        out, ids = job
        n_reasoning, prompt_len = out.natural.reasoning_tokens, len(ids) - out.natural.reasoning_tokens
        for f in FRACTIONS:
            k = max(1, int(n_reasoning * f))
            c = self.client.completions.create(model=self.model, prompt=ids[: prompt_len + k] + self.forced_end_ids,
                                               temperature=0, max_tokens=48)
            out.cut[str(f)] = judge(c.choices[0].text, out.answer, k)
        r = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": out.question}],
            temperature=0, max_tokens=48, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
        out.thinking_off = judge(r.choices[0].message.content or "", out.answer, 0)
        if getattr(r.choices[0].message, "reasoning_content", None):
            out.thinking_off.well_formed = False  # thinking off must not reason
        return out


def pct(xs: list[bool]) -> str:
    return f"{100 * sum(xs) / len(xs):.1f}%" if xs else "-"


def rows(outcomes: list[Outcome]) -> list[tuple[str, list[Answer]]]:
    off = [o.thinking_off for o in outcomes if o.thinking_off is not None]
    return [("natural", [o.natural for o in outcomes]),
            *[(f"cut at {int(f * 100)}%", [o.cut[str(f)] for o in outcomes]) for f in FRACTIONS],
            ("off (`enable_thinking: false`)", off)]


def tables(outcomes: list[Outcome], mtp: dict[str, tuple[float, float]], seconds: float, seed: int) -> str:
    out = [f"{len(outcomes)} problems (seed {seed}), greedy, gateway → prefill → NIXL → decode with MTP, "
           f"{seconds:.0f} s.", "",
           "| thinking | accuracy | well-formed answer line | mean reasoning tokens |", "|---|---:|---:|---:|"]
    for name, answers in rows(outcomes):
        out.append(f"| {name} | {pct([a.correct for a in answers])} | {pct([a.well_formed for a in answers])} | "
                   f"{statistics.mean(a.reasoning_tokens for a in answers):.1f} |")
    out += ["", "By difficulty (digits of the larger operand), natural thinking:", "",
            "| digits | problems | accuracy | mean reasoning tokens | a+b | a-b | n*d |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    for d in sorted({o.digits for o in outcomes}):
        group = [o for o in outcomes if o.digits == d]
        by_op = [pct([o.natural.correct for o in group if o.op == op]) for op in "+-*"]
        out.append(f"| {d} | {len(group)} | {pct([o.natural.correct for o in group])} | "
                   f"{statistics.mean(o.natural.reasoning_tokens for o in group):.1f} | {' | '.join(by_op)} |")
    out += ["", "MTP on the decode node (1 speculative token), draft tokens accepted:", "",
            "| requests | drafted | accepted | acceptance |", "|---|---:|---:|---:|"]
    for name, (drafted, accepted) in mtp.items():
        rate = f"{100 * accepted / drafted:.1f}%" if drafted else "-"
        out.append(f"| {name} | {drafted:.0f} | {accepted:.0f} | {rate} |")
    return "\n".join(out) + "\n"


def plot(outcomes: list[Outcome], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for d in sorted({o.digits for o in outcomes}):
        group = [o for o in outcomes if o.digits == d]
        points = [(0.0, [o.thinking_off for o in group if o.thinking_off is not None])]
        points += [(statistics.mean(o.cut[str(f)].reasoning_tokens for o in group), [o.cut[str(f)] for o in group])
                   for f in FRACTIONS]
        points.append((statistics.mean(o.natural.reasoning_tokens for o in group), [o.natural for o in group]))
        ax.plot([x for x, _ in points], [100 * statistics.mean(a.correct for a in answers) for _, answers in points],
                marker="o", label=f"{d} digit{'s' if d > 1 else ''}")
    ax.set_xlabel("reasoning tokens used (thinking off; cut at 25, 50, 75%; natural)")
    ax.set_ylabel("exact-match accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(title="larger operand")
    ax.set_title("tiny-reasoner: accuracy against the thinking it was allowed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate(url: str, model_dir: Path, problems: list[Problem], concurrency: int
             ) -> tuple[list[Outcome], dict[str, tuple[float, float]]]:
    """Two phases, so that MTP acceptance on natural thinking is counted apart from the short
    answers after a forced end or with thinking off (where the answer digits are guesses)."""
    ev = Evaluator(url, model_dir)
    mtp: dict[str, tuple[float, float]] = {}
    before = spec_counters(url)
    jobs: list[tuple[Outcome, list[int]]] = []
    with ThreadPoolExecutor(concurrency) as pool:
        for i, job in enumerate(pool.map(ev.think, problems), 1):
            jobs.append(job)
            if i % 50 == 0 or i == len(problems):
                so_far = pct([o.natural.correct for o, _ in jobs])
                print(f"[eval] natural {i}/{len(problems)}  accuracy so far {so_far}", flush=True)
        mtp["natural thinking"] = spec_delta(url, before)
        before = spec_counters(url)
        print("[eval] cut at 25/50/75% and thinking off", flush=True)
        done = list(pool.map(ev.cut_and_off, jobs))
        mtp["answers after a forced end or with thinking off"] = spec_delta(url, before)
    return done, mtp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    ap.add_argument("--url", help="a running gateway that serves --model (default: start one)")
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seed", type=int, default=EVAL_SEED, help="of the problems (training uses 0)")
    ap.add_argument("--out", type=Path, help="where eval.json, eval.md and the plot go (default: --model)")
    args = ap.parse_args()
    out = args.out or args.model
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    problems = [sample_problem(rng) for _ in range(args.problems)]

    cluster = None
    url = args.url
    if url is None:
        print(f"[eval] starting splitmind up --model {args.model} (1 prefill node, 1 decode node)", flush=True)
        cluster = RunningCluster(args.model.resolve(), ROOT / ".splitmind" / "reasoner-eval", prefill=1, config=CONFIG)
        cluster.wait_ready()
        url = cluster.url
    try:
        t0 = time.monotonic()
        outcomes, mtp = evaluate(url, args.model, problems, args.concurrency)
        seconds = time.monotonic() - t0
    finally:
        if cluster is not None:
            cluster.stop()
    report = tables(outcomes, mtp, seconds, args.seed)
    print(report)
    (out / "eval.md").write_text(report)
    (out / "eval.json").write_text(json.dumps([asdict(o) for o in outcomes], indent=1) + "\n")
    plot(outcomes, out / "accuracy_vs_reasoning.png")
    print(f"[eval] wrote {out / 'eval.md'}, eval.json and accuracy_vs_reasoning.png")


if __name__ == "__main__":
    main()
