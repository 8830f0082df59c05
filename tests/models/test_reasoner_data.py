"""The tiny reasoner's training data: correct, longer for harder problems, shaped as designed."""

import collections
import random
import re
import statistics

import pytest

from models.tiny_reasoner.build import build_tokenizer
from models.tiny_reasoner.data import (
    FORCED_END,
    QUESTION_FORMS,
    TRANSITION,
    Problem,
    cut_short,
    reasoning,
    reply,
    sample_hard_problem,
    sample_problem,
    thinking,
)
from models.tiny_reasoner.samples import IGNORE, Mix, SampleBuilder
from models.tokenizer import train_bpe


@pytest.fixture(scope="module")
def builder() -> SampleBuilder:
    return SampleBuilder(build_tokenizer(seed=0))


def test_every_trace_reaches_the_true_answer() -> None:
    rng = random.Random(0)
    for _ in range(3000):
        p = sample_problem(rng)
        text = reply(p)  # reasoning() raises if its own result is wrong
        assert text.endswith(f"</think>\n\nThe answer is {p.answer}.")


@pytest.mark.parametrize(("a", "b", "op", "answer"), [
    (12, 345, "-", -333), (0, 0, "-", 0), (7, 7, "-", 0), (99999, 99999, "+", 199998), (999, 9, "*", 8991),
    (10000, 9999, "-", 1), (10000, 1, "-", 9999), (5, 0, "*", 0), (0, 7, "*", 0), (1, 99999, "-", -99998)])
def test_edge_cases(a: int, b: int, op: str, answer: int) -> None:
    p = Problem(a, b, op)
    assert reply(p).endswith(f"The answer is {answer}.")
    # the checked result is carried to the last line, where the answer line copies it from
    assert re.search(rf"ok, (sum|difference|product) {answer}_*$", reasoning(p)[-1])


def test_distribution_covers_the_stated_ranges() -> None:
    rng = random.Random(1)
    problems = [sample_problem(rng) for _ in range(5000)]
    assert {p.op for p in problems} == {"+", "-", "*"}
    assert max(p.a for p in problems if p.op != "*") >= 10000
    assert any(p.answer < 0 for p in problems)
    assert all(p.a < 1000 and p.b < 10 for p in problems if p.op == "*")


def test_hard_problems_are_of_the_stated_distribution_and_hard() -> None:
    """Training oversamples them; they must stay inside the task, and be the shapes they claim
    (differences that drop leading zeros, carries through places a short number lacks, big
    product carries) more often than the stated distribution draws them."""
    rng = random.Random(5)
    hard = [sample_hard_problem(rng) for _ in range(3000)]
    rng_stated = random.Random(6)
    stated = [sample_problem(rng_stated) for _ in range(3000)]
    for p in hard:
        assert 0 <= p.a < 10**5 and 0 <= p.b < 10**5 and (p.op != "*" or (p.a < 1000 and p.b < 10))
        reply(p)  # reasoning() raises if its own result is wrong

    def drops_zeros(ps: list[Problem]) -> float:
        return sum(any(line.startswith("drop a leading 0") for line in reasoning(p)) for p in ps) / len(ps)

    def long_with_short(ps: list[Problem]) -> float:
        return sum(p.op != "*" and abs(len(str(p.a)) - len(str(p.b))) >= 3 for p in ps) / len(ps)

    assert drops_zeros(hard) > 3 * drops_zeros(stated)
    assert long_with_short(hard) > 1.2 * long_with_short(stated)
    assert {p.b for p in hard if p.op == "*"} == {6, 7, 8, 9}
    assert any(p.answer < 0 for p in hard if p.op == "-") and any(p.answer > 0 for p in hard if p.op == "-")


def test_thinking_grows_with_difficulty(builder: SampleBuilder) -> None:
    rng = random.Random(2)
    by_digits: dict[int, list[int]] = collections.defaultdict(list)
    for _ in range(3000):
        p = sample_problem(rng)
        if p.op != "*":
            by_digits[p.difficulty].append(len(builder.encode("\n".join(reasoning(p)))))
    means = [statistics.mean(by_digits[d]) for d in sorted(by_digits)]
    assert means == sorted(means) and means[-1] > 1.8 * means[0], means


def test_copied_fields_sit_on_lines_of_one_length(builder: SampleBuilder) -> None:
    """The design's invariant: every line kind that a later line copies from (by offset) has
    one token length, whatever the numbers, so copies are always the same distance back."""
    rng = random.Random(3)
    lengths: dict[tuple[str, str], set[int]] = collections.defaultdict(set)
    for _ in range(1500):
        p = sample_problem(rng)
        for line in reasoning(p)[2 if p.op != "*" else 1:]:  # the operand lines vary on purpose
            kind = re.sub(r"[0-9_]+", "#", line.split(": ")[0] if ": " in line else line)
            lengths[(p.op, kind + (" tail" if re.search(r", (sum|difference|product) ", line) else ""))].add(
                len(builder.encode("\n" + line)))
    varying = {k: v for k, v in lengths.items() if len(v) > 1}
    assert not varying, varying


def test_operand_digits_are_a_fixed_distance_from_where_they_are_written(builder: SampleBuilder) -> None:
    """b's and a's digits are copied from the question at offsets that depend only on the place
    and the question form, never on how long the numbers are (`operand_places`)."""
    rng = random.Random(4)
    offsets: dict[tuple[str, int, int], set[int]] = collections.defaultdict(set)
    problems = [p for p in (sample_problem(rng) for _ in range(600)) if p.op != "*"]
    for p in problems:
        for form in range(len(QUESTION_FORMS)):
            sample = builder.full(p, p.phrased(form))
            n_prompt = len(builder.prompt_ids(p.phrased(form)))
            digit_at = [i for i, t in enumerate(sample.ids) if builder.tok.id_to_token(t).isdigit()]
            question = [i for i in digit_at if i < n_prompt]
            written = [i for i in digit_at if i >= n_prompt]
            la, lb = len(str(p.a)), len(str(p.b))
            for k, (dst, src) in enumerate(zip(written[:lb], reversed(question[la:la + lb]), strict=True)):
                offsets[("b", form, k)].add(dst - src)
            for k, (dst, src) in enumerate(zip(written[lb:lb + la], reversed(question[:la]), strict=True)):
                offsets[("a", form, k)].add(dst - src)
    assert len(offsets) == 2 * 5 * len(QUESTION_FORMS)
    assert all(len(v) == 1 for v in offsets.values()), {k: v for k, v in offsets.items() if len(v) > 1}


def test_cut_short_closes_with_the_transition_and_answers() -> None:
    p = Problem(4821, 379, "+")
    for fraction in (0.25, 0.5, 0.75):
        text = cut_short(p, fraction)
        assert re.search(rf"{TRANSITION}\n</think>\n\nThe answer is 5200\.$", text)
        assert len(text) < len(reply(p))


def test_training_samples_leave_prompt_and_forced_end_out_of_the_loss(builder: SampleBuilder) -> None:
    p = Problem(4821, 379, "+")
    cut = builder.cut(p, p.question, 20)
    forced = builder.encode(FORCED_END)
    start = len(builder.prompt_ids(p.question)) + 20
    assert cut.ids[start : start + len(forced)] == forced
    assert all(x == IGNORE for x in cut.labels[: len(builder.prompt_ids(p.question))])
    assert all(x == IGNORE for x in cut.labels[start : start + len(forced)])
    assert builder.tok.decode(cut.ids[start + len(forced):]).strip() == "The answer is 5200."
    assert [x for x in cut.labels[start + len(forced):]] == cut.ids[start + len(forced):]


def test_thinking_off_samples_follow_the_templates_empty_think_block(builder: SampleBuilder) -> None:
    sample = builder.no_think(Problem(3, 4, "+"), "What is 3+4?")
    text = builder.tok.decode(sample.ids, skip_special_tokens=False)
    assert text.endswith("<think>\n\n</think>\n\nThe answer is 7.<|im_end|>")
    answer = [t for t in sample.labels if t != IGNORE]
    assert builder.tok.decode(answer) == "The answer is 7."


def test_the_mix_draws_every_kind(builder: SampleBuilder) -> None:
    rng = random.Random(5)
    texts = [builder.tok.decode(builder.draw(rng, Mix()).ids, skip_special_tokens=False) for _ in range(300)]
    assert any(TRANSITION in t for t in texts)
    assert any("<think>\n\n</think>" in t for t in texts)
    assert any(t.count("What is") == 0 for t in texts)  # other phrasings
    assert sum("units:" in t for t in texts) > 200


def test_line_ends_are_where_each_line_of_the_trace_ends(builder: SampleBuilder) -> None:
    for p in (Problem(4821, 379, "+"), Problem(17, 9, "*"), Problem(12, 345, "-")):
        lines = reasoning(p)
        ends = builder.line_ends(p)
        assert [i for i, _ in ends] == list(range(len(lines) - 1)), "the bundled vocabulary: every line end"
        ids = builder.encode(thinking(p))
        for i, n in ends:
            assert builder.tok.decode(ids[:n]) == "\n".join(lines[: i + 1])


def test_line_cuts_end_the_thinking_at_a_line_end_from_the_check_line_on(builder: SampleBuilder) -> None:
    rng = random.Random(3)
    mix = Mix(cut=0, no_think=0, line_cut=0.99)
    texts = [builder.tok.decode(builder.draw(rng, mix).ids, skip_special_tokens=False) for _ in range(60)]
    cut = [t for t in texts if TRANSITION in t]
    assert len(cut) > 50
    for t in cut:
        thought = t.split("<think>\n", 1)[1].split("\n" + TRANSITION, 1)[0]
        last = thought.split("\n")[-1]
        assert "check " in thought and re.search(r", (sum|difference|product) -?[\d_]+$", last), last
        result = re.search(r"(-?\d+)_*$", last)
        assert result is not None and t.endswith(f"The answer is {int(result.group(1))}.<|im_end|>")


def test_a_line_cut_needs_room_left_for_full_traces() -> None:
    with pytest.raises(ValueError, match="line_cut"):
        Mix(cut=0.5, no_think=0.1, line_cut=0.4)


def test_digits_and_padding_are_single_tokens() -> None:
    tok = train_bpe([reply(Problem(4821, 379, "+"))] * 5, 300, split_digits=True)
    assert len(tok.encode("12345").ids) == 5
    assert len(tok.encode("5200__").ids) == 6
    assert tok.decode(tok.encode("12345").ids) == "12345"
