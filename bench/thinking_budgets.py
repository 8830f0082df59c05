"""What a thinking budget costs in accuracy and saves in tokens, through the real serving path.

    .venv/bin/python bench/thinking_budgets.py            # bundled model, 300 problems, about 15 minutes on 2 cores
    .venv/bin/python bench/thinking_budgets.py --card     # also into the model card (models/tiny-reasoner/)

Starts `splitmind up` (prefill node, NIXL, decode node with MTP) unless `--url` points at a
running gateway, and asks the same fresh problems (their own seed) with the `openai` client,
greedy unless `--temperature`, once per setting: full thinking; `thinking_budget` 16, 32, 64,
128 and 256; `reasoning_effort` minimal, low, medium and high (the model's reasoning profile
maps them to budgets); thinking off (`reasoning_effort: "none"`). For each: exact-match accuracy,
how many answers are well formed (one line, `The answer is N.`), mean reasoning and completion
tokens, and how many replies broke the bound a budget promises (budget + grace + forced ending).
Prints one table, writes thinking_budgets.{json,md,png} to --out (bench/out), and with --card
budgets.md and budgets.png to the model directory, which the model card includes.
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from openai import OpenAI

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.tokenization import ModelFrontend  # noqa: E402
from models import BUNDLED_MODEL  # noqa: E402
from models.tiny_reasoner.data import Problem, sample_problem  # noqa: E402
from tests.e2e.cluster import RunningCluster  # noqa: E402

SEED = 20261201  # training draws from seed 0, the reasoner eval from 20261126
CONFIG = "[engine]\nkv_cache_gib = 2\nmax_model_len = 2048\nmax_num_seqs = 64\n"
ANSWER = re.compile(r"The answer is (-?\d+)\.")
SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("full thinking", {}),
    *[(f"budget {b}", {"thinking_budget": b}) for b in (16, 32, 64, 128, 256)],
    *[(f"effort {e}", {"reasoning_effort": e}) for e in ("minimal", "low", "medium", "high")],
    ("thinking off", {"reasoning_effort": "none"}),
]


@dataclass
class Row:
    setting: str
    budget: int | None
    accuracy: float
    well_formed: float
    mean_reasoning_tokens: float
    mean_completion_tokens: float
    over_bound: int
    problems: int
    errors: int  # requests that failed (counted as wrong)


def budget_of(fe: ModelFrontend, body: dict[str, Any]) -> int | None:
    if "thinking_budget" in body:
        return int(body["thinking_budget"])
    effort = body.get("reasoning_effort")
    return fe.profile.effort_budgets.get(effort) if effort and effort != "none" else None


def run_setting(client: OpenAI, model: str, fe: ModelFrontend, name: str, body: dict[str, Any],
                problems: list[Problem], temperature: float, concurrency: int) -> Row:
    errors: list[str] = []

    def one(p: Problem) -> tuple[bool, bool, int, int]:
        try:
            r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": p.question}],
                                               temperature=temperature, max_tokens=1500, extra_body=body)
        except Exception as exc:  # reported in the table, not hidden by a crash
            errors.append(f"{p.question}: {exc}")
            print(f"[budgets] {name}: {errors[-1]}", flush=True)
            return False, False, 0, 0
        text = (r.choices[0].message.content or "").strip()
        m = ANSWER.search(text)
        assert r.usage is not None and r.usage.completion_tokens_details is not None
        reasoning = r.usage.completion_tokens_details.reasoning_tokens or 0
        well_formed = bool(m) and "\n" not in text
        return bool(m and m.group(1) == str(p.answer)), well_formed, reasoning, r.usage.completion_tokens

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, problems))
    budget = budget_of(fe, body)
    bound = None if budget is None else budget + fe.profile.grace_tokens(budget) + len(fe.forced_end_ids()[0])
    served = [r for r in results if r[3] > 0] or results
    return Row(name, budget, statistics.mean(r[0] for r in results), statistics.mean(r[1] for r in results),
               statistics.mean(r[2] for r in served), statistics.mean(r[3] for r in served),
               sum(1 for r in results if bound is not None and r[2] > bound), len(problems), len(errors))


def table(rows: list[Row], temperature: float, seconds: float) -> str:
    lines = [f"{rows[0].problems} problems (seed {SEED}), temperature {temperature:g}, through prefill -> NIXL -> "
             f"MTP decode; {seconds:.0f} s.", "",
             "| setting | budget | accuracy | well-formed | mean reasoning tokens | mean completion tokens "
             "| over the bound | failed requests |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        budget = "-" if r.budget is None else str(r.budget)
        lines.append(f"| {r.setting} | {budget} | {100 * r.accuracy:.1f}% | {100 * r.well_formed:.1f}% | "
                     f"{r.mean_reasoning_tokens:.1f} | {r.mean_completion_tokens:.1f} | {r.over_bound} | {r.errors} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = {"budget": [r for r in rows if r.setting.startswith(("budget", "full", "thinking off"))],
              "effort": [r for r in rows if r.setting.startswith("effort")]}
    for (label, group), marker in zip(groups.items(), ("o", "s"), strict=True):
        group = sorted(group, key=lambda r: r.mean_reasoning_tokens)
        ax.plot([r.mean_reasoning_tokens for r in group], [100 * r.accuracy for r in group], marker=marker,
                label=label, linestyle="-" if label == "budget" else "none")
        below = label == "budget"  # effort levels sit on budget points: their labels go above-left
        for r in group:
            ax.annotate(r.setting.replace("budget ", "").replace("effort ", ""),
                        (r.mean_reasoning_tokens, 100 * r.accuracy), textcoords="offset points",
                        xytext=(5, -11) if below else (-6, 6), ha="left" if below else "right", fontsize=8)
    ax.set_xlabel("mean reasoning tokens")
    ax.set_ylabel("exact-match accuracy (%)")
    ax.set_ylim(-4, 108)
    ax.margins(x=0.12)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("tiny-reasoner: accuracy against the thinking a budget allows")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    ap.add_argument("--url", help="a running gateway that serves --model (default: start one)")
    ap.add_argument("--problems", type=int, default=300)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--card", action="store_true", help="also write budgets.md and budgets.png into --model")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    problems = [sample_problem(rng) for _ in range(args.problems)]
    fe = ModelFrontend(str(args.model))
    cluster = None
    url = args.url
    if url is None:
        print(f"[budgets] starting splitmind up --model {args.model}", flush=True)
        cluster = RunningCluster(args.model.resolve(), ROOT / ".splitmind" / "thinking-budgets", prefill=1,
                                 config=CONFIG)
        cluster.wait_ready()
        url = cluster.url
    try:
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
        model = client.models.list().data[0].id
        t0 = time.monotonic()
        rows = []
        for name, body in SETTINGS:
            rows.append(run_setting(client, model, fe, name, body, problems, args.temperature, args.concurrency))
            r = rows[-1]
            print(f"[budgets] {name}: {100 * r.accuracy:.1f}% right, {r.mean_reasoning_tokens:.1f} reasoning tokens",
                  flush=True)
        seconds = time.monotonic() - t0
    finally:
        if cluster is not None:
            cluster.stop()
    report = table(rows, args.temperature, seconds)
    print(report)
    (args.out / "thinking_budgets.md").write_text(report)
    (args.out / "thinking_budgets.json").write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    plot(rows, args.out / "thinking_budgets.png")
    if args.card:
        (args.model / "budgets.md").write_text(report)
        plot(rows, args.model / "budgets.png")
        from models.tiny_reasoner.card import write_card

        write_card(args.model)
        print(f"[budgets] wrote {args.model / 'budgets.md'}, budgets.png and the model card")


if __name__ == "__main__":
    main()
