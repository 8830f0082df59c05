"""The tiny reasoner's training data: correct, longer for harder problems, well-formed."""

import random
import re
import statistics

from models.tiny_reasoner.data import (
    TRANSITION,
    Problem,
    cut_short,
    reasoning,
    reply,
    sample_problem,
)
from models.tokenizer import train_bpe


def test_every_trace_reaches_the_true_answer() -> None:
    rng = random.Random(0)
    for _ in range(3000):
        p = sample_problem(rng)
        text = reply(p)  # reasoning() asserts its own result
        assert text.endswith(f"</think>\n\nThe answer is {p.answer}.")


def test_edge_cases() -> None:
    assert reply(Problem(12, 345, "-")).endswith("The answer is -333.")
    assert reply(Problem(0, 0, "-")).endswith("The answer is 0.")
    assert reply(Problem(99999, 99999, "+")).endswith("The answer is 199998.")
    assert reply(Problem(999, 9, "*")).endswith("The answer is 8991.")
    assert reply(Problem(10000, 1, "-")).endswith("The answer is 9999.")


def test_distribution_covers_the_stated_ranges() -> None:
    rng = random.Random(1)
    problems = [sample_problem(rng) for _ in range(5000)]
    assert {p.op for p in problems} == {"+", "-", "*"}
    assert max(p.a for p in problems if p.op != "*") >= 10000
    assert any(p.answer < 0 for p in problems)
    assert all(p.a < 1000 and p.b < 10 for p in problems if p.op == "*")


def test_thinking_grows_with_difficulty() -> None:
    rng = random.Random(2)
    by_digits: dict[int, list[int]] = {}
    for _ in range(3000):
        p = sample_problem(rng)
        if p.op != "*":
            by_digits.setdefault(p.difficulty, []).append(len("\n".join(reasoning(p))))
    means = [statistics.mean(by_digits[d]) for d in sorted(by_digits)]
    assert means == sorted(means) and means[-1] > 2 * means[0], means  # characters ~ tokens


def test_cut_short_closes_with_the_transition_and_answers() -> None:
    p = Problem(4821, 379, "+")
    for fraction in (0.25, 0.5, 0.75):
        text = cut_short(p, fraction)
        assert re.search(rf"{TRANSITION}\n</think>\n\nThe answer is 5200\.$", text)
        assert len(text) < len(reply(p))


def test_digits_are_single_tokens() -> None:
    tok = train_bpe([reply(Problem(4821, 379, "+"))] * 5, 300, split_digits=True)
    ids = tok.encode("12345").ids
    assert len(ids) == 5
    assert tok.decode(ids) == "12345"
