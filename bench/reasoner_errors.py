"""Where the tiny reasoner's traces go wrong: teacher-forced errors by step of the trace.

    .venv/bin/python bench/reasoner_errors.py [--model DIR] [--problems 300]     # under a minute

A trace is deterministic, so each reply token has one right value. This runs the checkpoint
once over fresh problems with the right trace as input (no generation, no server) and counts,
for every kind of step, how often the model's top token is wrong there. A step is named by the
text of its line up to that token, digits as `#` and place names as `P`, and by whether it is
in the computation (`main`) or in the re-check that follows it (`check`): `main P: #-#+##=##, -#=#`
is the second digit of a subtraction column's result once the borrow is taken. The table lists the steps with the most
errors; exact match (every token of the trace right) per operation comes first.

It needs the trace format the checkpoint was trained on (`models/tiny_reasoner/data.py` at the
same commit).
"""

from __future__ import annotations

import argparse
import collections
import random
import re
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import BUNDLED_MODEL  # noqa: E402
from models.tiny_reasoner.data import PLACES, sample_problem  # noqa: E402
from models.tiny_reasoner.export import load  # noqa: E402
from models.tiny_reasoner.samples import IGNORE, SampleBuilder, collate  # noqa: E402

PLACE = re.compile("|".join(sorted(PLACES, key=len, reverse=True)))


def step_name(reply_before: str) -> str:
    """The step a token is: its section and its line so far, digits and place names generalized."""
    lines = reply_before.split("\n")
    section = "check" if any(line.startswith("check") for line in lines[:-1]) else "main"
    return f"{section} {PLACE.sub('P', re.sub(r'[0-9]', '#', lines[-1]))}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    ap.add_argument("--problems", type=int, default=300)
    ap.add_argument("--seed", type=int, default=424242)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(2)
    tokenizer = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    builder = SampleBuilder(tokenizer)
    model = load(args.model).eval()
    rng = random.Random(args.seed)
    problems = [sample_problem(rng, (1, 1, 1)) for _ in range(args.problems)]

    errors: collections.Counter[str] = collections.Counter()
    seen: collections.Counter[str] = collections.Counter()
    exact: dict[str, list[bool]] = collections.defaultdict(list)
    for start in range(0, len(problems), 32):
        group = problems[start : start + 32]
        samples = [builder.full(p, p.question) for p in group]
        batch = collate(samples, builder.im_end)
        with torch.no_grad():
            logits, _ = model(batch.ids)
        predicted = logits[:, :-1].argmax(-1)
        for row, (p, s) in enumerate(zip(group, samples, strict=True)):
            reply_start = next(i for i, label in enumerate(s.labels) if label != IGNORE)
            text, all_right = "", True
            for i in range(reply_start, len(s.ids)):
                name = step_name(text)
                seen[name] += 1
                if int(predicted[row, i - 1]) != s.ids[i]:
                    errors[name] += 1
                    all_right = False
                text += tokenizer.decode([s.ids[i]], skip_special_tokens=False)
            exact[p.op].append(all_right)

    print(f"{args.model}: {len(problems)} problems (seed {args.seed}), teacher forced\n")
    print("| operation | exact match |\n|---|---:|")
    for op in "+-*":
        print(f"| a{op}b | {100 * sum(exact[op]) / max(1, len(exact[op])):.1f}% ({len(exact[op])}) |")
    print("\n| step (token after) | errors | of | error rate |\n|---|---:|---:|---:|")
    for name, n in errors.most_common(args.top):
        print(f"| `{name}` | {n} | {seen[name]} | {100 * n / seen[name]:.1f}% |")


if __name__ == "__main__":
    main()
