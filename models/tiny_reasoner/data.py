"""Verifiable arithmetic problems with step-by-step reasoning, for the bundled tiny reasoner.

Problems: a+b and a-b for non-negative integers of 1-5 digits (results may be negative), and
n*d for n of up to 3 digits and a 1-digit d. The reply after `</think>` is one line containing
`The answer is N.`

The trace is shaped for a transformer of a few million parameters trained for under an hour on
two CPU cores. Single-digit arithmetic is easy for such a model. Fetching a digit from the right
place is not: copying a run of digits from a place whose distance varies goes wrong as soon as
digits repeat ("the digit after the 5 I just copied" is ambiguous in 5250). Two rules remove
that:

- Operands and results are written out with a place name in front of every digit, every
  place up to a fixed width, `_` where the number has none (`__` for the operands, b first:
  see `operand_places()`). A column finds its digit by content (place name and line),
  whatever the distance:

      b: units 9, tens 7, hundreds 3, thousands __, ten-thousands __
      a: units 1, tens 2, hundreds 8, thousands 4, ten-thousands __

- Anything copied from line to line (the running result `so far`, the result carried through
  the check) sits in a field of fixed width, `_`-padded, on lines of fixed length, so it is
  always the same number of tokens back:

      units: 1+9=10, +0=10, carry 1, so far 0_____
      tens: 2+7=09, +1=10, carry 1, so far 00____
      hundreds: 8+3=11, +1=12, carry 1, so far 200___
      thousands: 4+0=04, +1=05, carry 0, so far 5200__

  Every column works in two small steps of two numbers each: the digits first, then the
  carry (`2+7=09, +1=10`), the borrow (`2-7+10=05, -1=04`) or, in a product, the carry after
  the digit product (`3*5=15, +4=19`). Three numbers summed in one step (`2+7+1=10`) was the
  first checkpoint's most common error: the units digit of the result came out one off, in 11% of
  addition columns and 27% of subtraction columns (`bench/reasoner_errors.py`). Column results
  are always two digits. A subtraction column adds 10 every time: a result under 10 means the
  ten was borrowed, and the digits sit where an addition column has them. A subtraction whose
  last borrow is left over has found that b > a, and computes b-a instead: that decides the
  sign without comparing numbers in one step.

Each result is then checked another way (sums by subtracting b back, differences by adding
back, products by long division), carrying the result along, so that it is the last thing
before `</think>`, where the answer line copies it from. Harder problems have more places, so
they think longer.

`cut_short()` makes the forced-end samples: thinking stopped early, the transition sentence and
`</think>` (what a thinking budget forces), then the answer line.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TRANSITION = "Time is up, so I answer with what I have."
# What a thinking budget inserts when it ends the thinking: the model is trained to answer after it.
# The server reads it from the checkpoint's reasoning_profile.json (`reasoning_profile()`).
FORCED_END = f"\n{TRANSITION}\n</think>"
ANSWER_PATTERN = r"The answer is (-?\d+)\."
THINK_CLOSE = "\n</think>\n\n"

QUESTION_FORMS = ("What is {a}{op}{b}?", "What is {a} {op} {b}?", "Compute {a}{op}{b}.", "{a}{op}{b}=?")
PLACES = ("units", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands")
WIDTH = len(PLACES)  # of every fixed-width field: results have at most 6 characters (199998, -99999)
OPERAND_WIDTH = 5  # places written for an operand: operands have at most 5 digits


@dataclass(frozen=True)
class Problem:
    a: int
    b: int
    op: str  # "+", "-", "*"

    def __post_init__(self) -> None:
        if self.op not in ("+", "-", "*") or self.a < 0 or self.b < 0:
            raise ValueError(f"not a problem of this task: {self}")

    @property
    def question(self) -> str:
        return f"What is {self.a}{self.op}{self.b}?"

    def phrased(self, form: int) -> str:
        return QUESTION_FORMS[form].format(a=self.a, op=self.op, b=self.b)

    @property
    def answer(self) -> int:
        return {"+": self.a + self.b, "-": self.a - self.b, "*": self.a * self.b}[self.op]

    @property
    def difficulty(self) -> int:
        """Digits of the larger operand: the axis thinking length should grow along."""
        return max(len(str(self.a)), len(str(self.b)))


def sample_problem(rng: random.Random, op_weights: tuple[float, float, float] | None = None) -> Problem:
    """A problem of the stated distribution: each operation equally likely (unless `op_weights`
    for +, -, * say otherwise), then the operands' digit counts uniformly."""
    op = rng.choice("+-*") if op_weights is None else rng.choices("+-*", weights=op_weights)[0]
    if op == "*":
        return Problem(_number(rng, rng.randint(1, 3)), rng.randint(0, 9), op)
    return Problem(_number(rng, rng.randint(1, 5)), _number(rng, rng.randint(1, 5)), op)


def sample_hard_problem(rng: random.Random) -> Problem:
    """A problem of the stated distribution's hardest shapes, oversampled in training (`Mix.hard`).

    These are where the served eval of the previous checkpoint went wrong (docs/benchmarks.md);
    the first is rare in the stated distribution (2% of its problems drop a leading zero, 41% of
    these), the others common but the hardest of their kind:
    - near operands, whose difference is shorter than both (137-59, 5638-5524, 79-78): the
      top columns cancel, and the `drop a leading 0` steps follow;
    - a long number and a short one (11884+4, 7+5298), often over a run of 9s, so that one carry
      travels through places where the short number has no digit;
    - products by 6-9, whose carries are largest (27*8, 876*8).
    """
    kind = rng.random()
    if kind < 0.4:
        digits = rng.randint(2, 5)
        a = _number(rng, digits)
        delta = _number(rng, rng.randint(1, digits - 1))
        b = a - delta if a - delta >= 0 and (rng.random() < 0.5 or a + delta >= 10**5) else a + delta
        return Problem(a, b, "-")
    if kind < 0.7:
        digits = rng.randint(4, 5)
        long = _number(rng, digits)
        if rng.random() < 0.3:  # a run of 9s at the bottom: 19997+4
            nines = rng.randint(1, digits - 1)
            long = long // 10**nines * 10**nines + 10**nines - 1 - rng.randint(0, 3)
        short = _number(rng, rng.randint(1, 2))
        a, b = (long, short) if rng.random() < 0.7 else (short, long)
        return Problem(a, b, rng.choice("+-"))
    return Problem(_number(rng, rng.randint(2, 3)), rng.randint(6, 9), "*")


def _number(rng: random.Random, digits: int) -> int:
    return rng.randint(0, 9) if digits == 1 else rng.randint(10 ** (digits - 1), 10**digits - 1)


def field(text: str) -> str:
    """A fixed-width field: '5200' -> '5200__'."""
    return text.ljust(WIDTH, "_")


def places(name: str, number: str, missing: str = "_", width: int = WIDTH) -> str:
    """'a', '4821' -> 'a: units 1, tens 2, hundreds 8, thousands 4, ten-thousands _, hundred-thousands _'."""
    digits = [*reversed(number), *[missing] * (width - len(number))]
    return f"{name}: " + ", ".join(f"{place} {d}" for place, d in zip(PLACES, digits, strict=False))


def operand_places(name: str, number: str) -> str:
    """`places()` for an operand read from the question, where a missing place is `__`.

    That is one token more than a digit: the line gets one token shorter for every digit the
    operand has more, exactly what the question gets longer by. So the next line finds every
    digit of the question at an offset that does not depend on how long the numbers are (b is
    written first: it ends the question, so its digits are at fixed offsets anyway). A model
    that must instead find "the digit k places before the +" learns it far more slowly.
    """
    return places(name, number, missing="__", width=OPERAND_WIDTH)


def _digit(number: str, place: int) -> int:
    return int(number[-1 - place]) if place < len(number) else 0


def _add_columns(x: str, y: str, tail: str = "") -> tuple[list[str], str]:
    lines, carry, so_far, i = [], 0, "", 0
    while i < max(len(x), len(y)) or carry:
        dx, dy = _digit(x, i), _digit(y, i)
        s = dx + dy + carry
        so_far = str(s % 10) + so_far
        lines.append(f"{PLACES[i]}: {dx}+{dy}={dx + dy:02d}, +{carry}={s:02d}, carry {s // 10}, "
                     f"so far {field(so_far)}{tail}")
        carry, i = s // 10, i + 1
    return lines, so_far


def _sub_columns(x: str, y: str, tail: str = "") -> tuple[list[str], str, int]:
    """Column subtraction x-y; returns the lines, the result digits (leading zeros kept) and the
    borrow left over (1 when y > x: the digits are then not x-y)."""
    lines, borrow, so_far = [], 0, ""
    for i in range(max(len(x), len(y))):
        dx, dy = _digit(x, i), _digit(y, i)
        t = 10 + dx - dy - borrow
        so_far = str(t % 10) + so_far
        lines.append(f"{PLACES[i]}: {dx}-{dy}+10={10 + dx - dy:02d}, -{borrow}={t:02d}, borrow {int(t < 10)}, "
                     f"so far {field(so_far)}{tail}")
        borrow = int(t < 10)
    return lines, so_far, borrow


def _mul_columns(n: str, d: int) -> tuple[list[str], str]:
    lines, carry, so_far, i = [], 0, "", 0
    while i < len(n) or carry:
        product = _digit(n, i) * d
        s = product + carry
        so_far = str(s % 10) + so_far
        lines.append(f"{PLACES[i]}: {_digit(n, i)}*{d}={product:02d}, +{carry}={s:02d}, carry {s // 10}, "
                     f"so far {field(so_far)}")
        carry, i = s // 10, i + 1
    return lines, so_far


def _drop_leading_zeros(digits: str) -> tuple[list[str], str]:
    lines = []
    while len(digits) > 1 and digits[0] == "0":
        digits = digits[1:]
        lines.append(f"drop a leading 0, so far {field(digits)}")
    return lines, digits


def _long_division(number: str, d: int, tail: str) -> list[str]:
    """number / d from the top place down, one digit at a time: 'thousands: 02/7=0 r2'."""
    lines, rest, quotient = [], 0, ""
    for i in reversed(range(len(number))):
        value = rest * 10 + _digit(number, i)
        quotient += str(value // d)
        lines.append(f"{PLACES[i]}: {rest}{_digit(number, i)}/{d}={value // d} r{value % d}, "
                     f"so far {field(quotient)}{tail}")
        rest = value % d
    if rest:
        raise AssertionError(f"{number} is not a multiple of {d}")
    return lines


def reasoning(p: Problem) -> list[str]:
    """The thinking, one step a line; the last line holds the checked result."""
    a, b = str(p.a), str(p.b)
    if p.op == "*":
        lines = [operand_places("a", a)]
        cols, r = _mul_columns(a, p.b)
        tail = f", product {field(r)}"
        lines += cols
        if p.b == 0:
            lines.append(f"check product/0: no dividing by 0, but a number times 0 is 0, ok{tail}")
        else:
            lines.append(f"check product/{p.b}, {places('product', r)}{tail}")
            lines += _long_division(r, p.b, tail)
            lines.append(f"got a back, ok{tail}")
        result = r
    elif p.op == "+":
        lines = [operand_places("b", b), operand_places("a", a)]
        cols, r = _add_columns(a, b)
        tail = f", sum {field(r)}"
        lines += [*cols, f"check sum-b, {places('sum', r)}{tail}"]
        lines += _sub_columns(r, b, tail)[0]
        lines.append(f"got a back, ok{tail}")
        result = r
    else:
        lines = [operand_places("b", b), operand_places("a", a)]
        cols, r, borrow = _sub_columns(a, b)
        lines += cols
        big, small, sign = "a", "b", ""
        if borrow:
            lines.append("borrow 1 is left, so a<b: compute b-a and negate")
            cols, r, _ = _sub_columns(b, a)
            lines += cols
            big, small, sign = "b", "a", "-"
        dropped, r = _drop_leading_zeros(r)
        lines += dropped
        result = sign + r if r != "0" else r
        tail = f", difference {field(result)}"
        lines.append(f"check difference+{small}, {places('difference', r)}{tail}")
        lines += _add_columns(r, str(p.a) if small == "a" else str(p.b), tail)[0]
        lines.append(f"got {big} back, ok{tail}")
    if int(result) != p.answer:
        raise AssertionError(f"trace of {p} reached {result}")
    return lines


def check_line(p: Problem) -> int:
    """Index of the trace's first `check` line: from it on, every line ends with the result."""
    return next(i for i, line in enumerate(reasoning(p)) if line.startswith("check "))


def reasoning_profile() -> dict[str, object]:
    """What the server needs to know of how this model thinks (`splitmind.reasoning_profile`):
    the ending it was trained to answer after, effort budgets that fit its traces (123 to 366
    reasoning tokens by difficulty), room for an answer line, how to read the answer, and what
    comes between the forced ending and the answer (long2short's probes)."""
    return {"forced_end": FORCED_END, "effort_budgets": {"minimal": 16, "low": 64, "medium": 192, "high": None},
            "answer_reserve": 24, "answer_pattern": ANSWER_PATTERN, "answer_prefix": "\n\nThe answer is ",
            "probe_every": 32, "probe_agree": 2, "probe_min_confidence": 0.9}


def answer_line(p: Problem) -> str:
    return f"The answer is {p.answer}."


def thinking(p: Problem) -> str:
    return "\n".join(reasoning(p))


def reply(p: Problem) -> str:
    """The assistant turn after the template's `<think>\\n`: thinking, close, answer."""
    return thinking(p) + THINK_CLOSE + answer_line(p)


def cut_short(p: Problem, fraction: float) -> str:
    """Thinking cut after `fraction` of its characters, closed the way a budget closes it.

    Training cuts at token boundaries instead (`models.tiny_reasoner.samples`); this is the
    text-level view of the same sample.
    """
    text = thinking(p)
    kept = text[: max(1, int(len(text) * fraction))]
    return kept + FORCED_END + "\n\n" + answer_line(p)


def no_thinking_reply(p: Problem) -> str:
    """After the template's empty think block (`enable_thinking=false`): the answer alone."""
    return answer_line(p)
