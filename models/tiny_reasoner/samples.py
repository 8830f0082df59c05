"""Tokenized training samples and length-bucketed batches.

A sample is the token ids the server would see and the model would produce: the prompt exactly
as the chat template renders it and the gateway tokenizes it (alone), then the reply tokenized
alone. The loss covers only what the model itself must produce: not the prompt, and not the end
of thinking that a budget forces (the transition sentence and `</think>`), only what follows it.

Three kinds, mixed by `Mix`:
- `full`: the whole trace, `</think>`, the answer line.
- `cut`: the trace stopped at a random token, the forced end, the answer line (the budget path).
- `line_cut`: the same, stopped at a line end from the trace's `check` line on, where the line's
  tail holds the finished result (long2short's probes, and budgets that finish their line).
- `no_think`: the template's empty think block (`enable_thinking=false`), the answer line.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from jinja2 import Template
from tokenizers import Tokenizer

from models.tiny_reasoner.data import (
    FORCED_END,
    QUESTION_FORMS,
    THINK_CLOSE,
    Problem,
    answer_line,
    check_line,
    reasoning,
    sample_hard_problem,
    sample_problem,
    thinking,
)
from models.tokenizer import IM_END, TEMPLATE_THINK_IN_PROMPT, token_id

# Ignored by the loss (torch's cross_entropy default).
IGNORE = -100


@dataclass(frozen=True)
class Mix:
    cut: float = 0.12
    no_think: float = 0.05
    # Stage 1 trains none: random cuts teach an answer after a forced end, but they fall on a
    # line end too rarely for the model to learn to copy the result from there
    # (`models.tiny_reasoner.line_ends`: 54% right from the check line on). The answer stage does.
    line_cut: float = 0.0
    # Drawn from `sample_hard_problem` instead of the stated distribution: the shapes served
    # answers got wrong (its docstring says which, and how rare each is).
    hard: float = 0.25
    other_question_forms: float = 0.15  # the rest ask "What is a+b?"
    # Subtraction has the most steps that can go wrong (borrows, the b > a redo): more of it.
    op_weights: tuple[float, float, float] = (0.28, 0.40, 0.32)

    def __post_init__(self) -> None:
        if not (min(self.cut, self.no_think, self.line_cut) >= 0 and self.cut + self.no_think + self.line_cut < 1):
            raise ValueError("cut, no_think and line_cut are fractions that leave room for full traces")
        if not 0 <= self.hard <= 1:
            raise ValueError("hard is a fraction")


@dataclass(frozen=True)
class Sample:
    ids: list[int]
    labels: list[int]  # ids[i] where the loss applies, IGNORE elsewhere; same length as ids


class SampleBuilder:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tok = tokenizer
        self.template = Template(TEMPLATE_THINK_IN_PROMPT)
        self.im_end = token_id(tokenizer, IM_END)
        self.forced_end_ids = self.encode(FORCED_END)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def prompt_ids(self, question: str, *, enable_thinking: bool = True) -> list[int]:
        text = self.template.render(messages=[{"role": "user", "content": question}],
                                    add_generation_prompt=True, enable_thinking=enable_thinking)
        return self.encode(text)

    def full(self, p: Problem, question: str) -> Sample:
        reply = [*self.encode(thinking(p) + THINK_CLOSE + answer_line(p)), self.im_end]
        return self._sample(self.prompt_ids(question), reply)

    def cut(self, p: Problem, question: str, num_thinking_tokens: int) -> Sample:
        """Thinking stopped after `num_thinking_tokens` tokens, the way a budget stops it."""
        kept = self.encode(thinking(p))[:num_thinking_tokens]
        answer = [*self.encode("\n\n" + answer_line(p)), self.im_end]
        ids = self.prompt_ids(question) + kept
        labels = [IGNORE] * len(ids)
        labels[-len(kept):] = kept
        ids += self.forced_end_ids + answer
        labels += [IGNORE] * len(self.forced_end_ids) + answer
        return Sample(ids, labels)

    def line_ends(self, p: Problem) -> list[tuple[int, int]]:
        """(line index, thinking tokens up to the end of that line) for each line end of the
        trace on a token boundary (in a vocabulary that glues a newline to the next word, every
        one is); not the last line's, which a full trace's `</think>` follows."""
        lines = reasoning(p)
        ids = self.encode("\n".join(lines))
        out = []
        for i in range(len(lines) - 1):
            head = self.encode("\n".join(lines[: i + 1]))
            if ids[: len(head)] == head:
                out.append((i, len(head)))
        return out

    def no_think(self, p: Problem, question: str) -> Sample:
        reply = [*self.encode(answer_line(p)), self.im_end]
        return self._sample(self.prompt_ids(question, enable_thinking=False), reply)

    def _sample(self, prompt: list[int], reply: list[int]) -> Sample:
        return Sample(prompt + reply, [IGNORE] * len(prompt) + reply)

    def draw(self, rng: random.Random, mix: Mix) -> Sample:
        p = sample_hard_problem(rng) if rng.random() < mix.hard else sample_problem(rng, mix.op_weights)
        form = rng.randrange(1, len(QUESTION_FORMS)) if rng.random() < mix.other_question_forms else 0
        question = p.phrased(form)
        kind = rng.random()
        if kind < mix.cut:
            n = len(self.encode(thinking(p)))
            return self.cut(p, question, rng.randint(1, max(1, n - 1)))
        if kind < mix.cut + mix.no_think:
            return self.no_think(p, question)
        if kind < mix.cut + mix.no_think + mix.line_cut:
            lines, first = self.line_ends(p), check_line(p)
            after_check = [n for i, n in lines if i >= first]
            if after_check:
                return self.cut(p, question, rng.choice(after_check))
        return self.full(p, question)


@dataclass(frozen=True)
class Batch:
    ids: torch.Tensor  # (batch, seq), padded
    labels: torch.Tensor  # (batch, seq), IGNORE on padding


def collate(samples: list[Sample], pad_id: int) -> Batch:
    seq = max(len(s.ids) for s in samples)
    ids = torch.full((len(samples), seq), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), seq), IGNORE, dtype=torch.long)
    for i, s in enumerate(samples):
        ids[i, : len(s.ids)] = torch.tensor(s.ids)
        labels[i, : len(s.labels)] = torch.tensor(s.labels)
    return Batch(ids, labels)


def bucketed_batches(samples: list[Sample], tokens_per_batch: int, pad_id: int, rng: random.Random,
                     pool: int = 4096) -> Iterator[Batch]:
    """Batches of similar-length samples (little padding) in random order.

    Samples are taken `pool` at a time, sorted by length, cut into batches of about
    `tokens_per_batch` padded tokens, and the batches shuffled.
    """
    for start in range(0, len(samples), pool):
        chunk = sorted(samples[start : start + pool], key=lambda s: len(s.ids))
        batches: list[list[Sample]] = [[]]
        for s in chunk:
            if batches[-1] and len(s.ids) * (len(batches[-1]) + 1) > tokens_per_batch:
                batches.append([])
            batches[-1].append(s)
        rng.shuffle(batches)
        for b in batches:
            yield collate(b, pad_id)
