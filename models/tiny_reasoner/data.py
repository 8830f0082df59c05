"""Verifiable arithmetic problems with step-by-step reasoning, for the bundled tiny reasoner.

Problems: a+b and a-b for non-negative integers of 1-5 digits (results may be negative), and
n*d for n of up to 3 digits and a 1-digit d. The reasoning works digit by digit (carries and
borrows spelled out, operands restated digit by digit, since a small model's errors are mostly
copy errors), then re-checks the result another way, so harder problems think longer. The
reply after `</think>` is one line containing `The answer is N.`

`cut_short()` makes the forced-end samples: the thinking stops early, a transition sentence
closes it, and the answer line follows, so a thinking budget still gets an answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TRANSITION = "Time is up, so I answer with what I have."


@dataclass(frozen=True)
class Problem:
    a: int
    b: int
    op: str  # "+", "-", "*"

    @property
    def question(self) -> str:
        return f"What is {self.a}{self.op}{self.b}?"

    @property
    def answer(self) -> int:
        return {"+": self.a + self.b, "-": self.a - self.b, "*": self.a * self.b}[self.op]

    @property
    def difficulty(self) -> int:
        """Digits of the larger operand: the axis thinking length should grow along."""
        return max(len(str(self.a)), len(str(self.b)))


def sample_problem(rng: random.Random) -> Problem:
    op = rng.choice("+-*")
    if op == "*":
        return Problem(_number(rng, rng.randint(1, 3)), rng.randint(0, 9), op)
    return Problem(_number(rng, rng.randint(1, 5)), _number(rng, rng.randint(1, 5)), op)


def _number(rng: random.Random, digits: int) -> int:
    return rng.randint(0, 9) if digits == 1 else rng.randint(10 ** (digits - 1), 10**digits - 1)


def spell(n: int) -> str:
    """Restate a number digit by digit: 4821 -> '4 8 2 1'."""
    return " ".join(str(abs(n)))


PLACES = ["units", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands"]


def _carry_columns(columns: list[tuple[str, int]]) -> tuple[list[str], int]:
    """Columns from the units up, each (expression, its value without carry): one line per
    column with the carry spelled out, then the result."""
    lines, carry, out = [], 0, []
    for i, (expr, value) in enumerate(columns):
        s = value + carry
        lines.append(f"{PLACES[i]}: {expr}+{carry}={s}, write {s % 10} carry {s // 10}")
        out.append(s % 10)
        carry = s // 10
    if carry:
        out.append(carry)
        lines.append(f"last carry {carry}")
    return lines, int("".join(map(str, reversed(out))))


def _add_steps(a: int, b: int) -> tuple[list[str], int]:
    da, db = str(a)[::-1], str(b)[::-1]
    digits = [(int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0)
              for i in range(max(len(da), len(db)))]
    return _carry_columns([(f"{x}+{y}", x + y) for x, y in digits])


def _sub_steps(a: int, b: int) -> tuple[list[str], int]:
    """a - b for a >= b, with borrows."""
    da, db = str(a)[::-1], str(b)[::-1]
    lines, borrow, out = [], 0, []
    for i in range(len(da)):
        x = int(da[i])
        y = int(db[i]) if i < len(db) else 0
        top = x - borrow
        if top < y:
            lines.append(f"{PLACES[i]}: {x}-{borrow}={top} < {y}, borrow: {top + 10}-{y}={top + 10 - y}")
            out.append(top + 10 - y)
            borrow = 1
        else:
            lines.append(f"{PLACES[i]}: {x}-{borrow}={top}, {top}-{y}={top - y}")
            out.append(top - y)
            borrow = 0
    return lines, int("".join(map(str, reversed(out))))


def _mul_steps(a: int, d: int) -> tuple[list[str], int]:
    return _carry_columns([(f"{ch}*{d}", int(ch) * d) for ch in str(a)[::-1]])


def reasoning(p: Problem) -> list[str]:
    """The thinking, one step a line; the last lines re-check the result another way."""
    lines = [f"a = {spell(p.a)}", f"b = {spell(p.b)}"]
    if p.op == "+":
        steps, r = _add_steps(p.a, p.b)
        lines += [*steps, f"sum {spell(r)}", f"check {r}-{p.b}:"]
        check, back = _sub_steps(r, p.b)
        lines += [*check, f"{spell(back)} = a, ok"]
    elif p.op == "-":
        big, small, negative = (p.a, p.b, False) if p.a >= p.b else (p.b, p.a, True)
        if negative:
            lines.append(f"b > a, so compute {big}-{small} and negate")
        steps, r = _sub_steps(big, small)
        lines += [*steps, f"difference {'-' if negative else ''}{spell(r)}", f"check {r}+{small}:"]
        check, back = _add_steps(r, small)
        lines += [*check, f"{spell(back)} = {big}, ok"]
        r = -r if negative else r
    else:
        steps, r = _mul_steps(p.a, p.b)
        lines += [*steps, f"product {spell(r)}", "check by place value:"]
        parts = [int(ch) * 10**i * p.b for i, ch in enumerate(reversed(str(p.a))) if ch != "0"]
        for i, ch in enumerate(reversed(str(p.a))):
            if ch != "0":
                lines.append(f"{int(ch) * 10**i}*{p.b}={int(ch) * 10**i * p.b}")
        total = parts[0] if parts else 0
        for part in parts[1:]:
            lines.append(f"{total}+{part}={total + part}")
            total += part
        lines.append(f"{spell(total)} = {spell(r)}, ok")
    assert r == p.answer, (p, r)
    return lines


def answer_line(p: Problem) -> str:
    return f"The answer is {p.answer}."


def reply(p: Problem) -> str:
    """The assistant turn after the template's `<think>\\n`: thinking, close, answer."""
    return "\n".join(reasoning(p)) + "\n</think>\n\n" + answer_line(p)


def cut_short(p: Problem, fraction: float) -> str:
    """Thinking cut after `fraction` of its lines, closed with the transition sentence."""
    lines = reasoning(p)
    kept = lines[: max(1, int(len(lines) * fraction))]
    return "\n".join([*kept, TRANSITION]) + "\n</think>\n\n" + answer_line(p)


def no_thinking_reply(p: Problem) -> str:
    """After the template's empty think block (`enable_thinking=false`): the answer alone."""
    return answer_line(p)
