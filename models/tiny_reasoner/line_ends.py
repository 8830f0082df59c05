"""What the model answers when its thinking is ended at a line end: long2short's probes, and
budgets that finish their line, seen from the training side.

A probe (`router/early_exit.py`) sends the prompt, the thinking up to a line end, the forced
ending and the answer prefix. The trace is deterministic, so whether greedy decoding would then
write the right answer is one teacher-forced forward: the argmax must be right at every token of
`N.<|im_end|>`. Line ends split into two phases: before the trace's `check` line (the result is
still being worked out) and from it on (every line carries the finished result in its tail,
`sum 38141_`, so the answer only has to be copied).

    .venv/bin/python -m models.tiny_reasoner.line_ends     # the bundled checkpoint, 200 problems
"""

from __future__ import annotations

import argparse
import random
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from models.tiny_reasoner.data import Problem, check_line, sample_problem
from models.tiny_reasoner.samples import IGNORE, Sample, SampleBuilder, collate


@dataclass(frozen=True)
class LineEndAnswers:
    before_check: float  # right answers at line ends before the check line
    from_check: float  # right answers at line ends from the check line on
    confidence_wrong: float  # median lowest probability of the right answer's tokens, where wrong
    confidence_right: float  # the same, where right
    probes: int


@torch.no_grad()
def line_end_answers(model: torch.nn.Module, builder: SampleBuilder, problems: list[Problem],
                     batch_size: int = 64) -> LineEndAnswers:
    samples: list[Sample] = []
    phase: list[bool] = []  # from the check line on
    for p in problems:
        first_check = check_line(p)
        for i, n in builder.line_ends(p):
            samples.append(builder.cut(p, p.question, n))
            phase.append(i >= first_check)
    was_training = model.training
    model.eval()
    right: list[bool] = []
    conf: list[float] = []
    for start in range(0, len(samples), batch_size):
        batch = collate(samples[start : start + batch_size], builder.im_end)
        logits, _ = model(batch.ids)
        target = batch.labels[:, 1:]
        mask = target != IGNORE
        probs = logits[:, :-1].float().softmax(-1)
        for row in range(batch.ids.shape[0]):  # the answer's tokens only: a cut labels its thinking too
            answer_pos = _answer_positions(batch.ids[row], mask[row].nonzero().flatten(), builder)
            hit = all(int(logits[row, j].argmax()) == int(target[row, j]) for j in answer_pos)
            right.append(hit)
            conf.append(min(float(probs[row, j, target[row, j]]) for j in answer_pos))
    if was_training:
        model.train()
    before = [r for r, ph in zip(right, phase, strict=True) if not ph]
    after = [r for r, ph in zip(right, phase, strict=True) if ph]
    return LineEndAnswers(
        before_check=sum(before) / max(1, len(before)), from_check=sum(after) / max(1, len(after)),
        confidence_wrong=statistics.median([c for c, r in zip(conf, right, strict=True) if not r] or [float("nan")]),
        confidence_right=statistics.median([c for c, r in zip(conf, right, strict=True) if r] or [float("nan")]),
        probes=len(samples))


def _answer_positions(ids: torch.Tensor, labelled: torch.Tensor, builder: SampleBuilder) -> list[int]:
    """Positions (in the shifted target) of the answer after `The answer is `: the labelled
    positions after the last token of the answer prefix."""
    prefix_end = builder.encode("\n\nThe answer is ")[-1]
    seq = ids.tolist()
    last = max((j for j, t in enumerate(seq) if t == prefix_end), default=None)
    if last is None:
        return []
    return [int(x) for x in labelled if int(x) >= last]


def main() -> None:
    from models import BUNDLED_MODEL
    from models.tiny_reasoner.export import load

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--seed", type=int, default=20261202)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load(args.model)
    builder = SampleBuilder(Tokenizer.from_file(str(args.model / "tokenizer.json")))
    rng = random.Random(args.seed)
    result = line_end_answers(model, builder, [sample_problem(rng) for _ in range(args.problems)])
    print(result)


if __name__ == "__main__":
    main()
