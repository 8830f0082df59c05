"""Where the thinking is cut: the budget, the line in progress, the grace window."""

from __future__ import annotations

from router.thinking import ThinkingGuard, ThinkingLimit

START, END, NL = 100, 101, 10  # NL: a token whose text ends a line
FORCED, FORCED_AT_LINE = (50, 51, END), (51, END)


def limit(budget: int, grace: int = 4, starts_in_reasoning: bool = True) -> ThinkingLimit:
    return ThinkingLimit(budget=budget, grace=grace, think_start_id=START, think_end_id=END,
                         starts_in_reasoning=starts_in_reasoning, line_end_ids=frozenset({NL}),
                         forced_ids=FORCED, forced_after_line_ids=FORCED_AT_LINE)


def cut(guard: ThinkingGuard, chunks: list[list[int]]) -> tuple[int, int] | None:
    """(chunk index, tokens kept in it) where the guard cut, or None."""
    for i, chunk in enumerate(chunks):
        keep = guard.feed(chunk)
        if keep is not None:
            return i, keep
    return None


def test_the_line_in_progress_is_finished_after_the_budget() -> None:
    g = ThinkingGuard(limit(3))
    assert cut(g, [[1, 2], [3, 4, NL, 5]]) == (1, 3), "budget spent at 3; the line ends two tokens later"
    assert g.thought == 5 and g.forced_ids() == list(FORCED_AT_LINE)


def test_the_grace_window_bounds_a_long_line() -> None:
    g = ThinkingGuard(limit(3, grace=4))
    assert cut(g, [[1] * 20]) == (0, 7)
    assert g.forced_ids() == list(FORCED), "cut mid-line: the ending starts on a new line"


def test_a_budget_that_ends_on_a_line_end_cuts_there() -> None:
    assert cut(ThinkingGuard(limit(3)), [[1, 2, NL, 4]]) == (0, 3)


def test_a_line_end_at_the_end_of_a_chunk_waits_for_the_next_token() -> None:
    """The model may end its thinking itself right there: its `</think>` is not cut."""
    g = ThinkingGuard(limit(3))
    assert cut(g, [[1, 2, NL], [END, 7]]) is None
    assert g.ended and g.thought == 3
    g = ThinkingGuard(limit(3))
    assert cut(g, [[1, 2, NL], [5, 6]]) == (1, 0), "any other token is the next line: cut before it"
    assert g.forced_ids() == list(FORCED_AT_LINE)


def test_the_grace_window_spent_on_a_line_end_waits_for_the_next_token() -> None:
    g = ThinkingGuard(limit(2, grace=2))
    assert cut(g, [[1, 2, 3, NL], [END]]) is None and g.ended
    g = ThinkingGuard(limit(2, grace=2))
    assert cut(g, [[1, 2, 3, NL], [5]]) == (1, 0) and g.thought == 4


def test_budget_zero_ends_the_thinking_before_it_starts() -> None:
    g = ThinkingGuard(limit(0))
    assert cut(g, [[7, 8]]) == (0, 0) and g.thought == 0


def test_a_natural_end_before_the_budget_is_left_alone() -> None:
    g = ThinkingGuard(limit(10))
    assert cut(g, [[1, 2, END, 3, NL, 4] + [5] * 30]) is None
    assert g.ended


def test_a_model_that_opens_its_own_think_block() -> None:
    g = ThinkingGuard(limit(2, starts_in_reasoning=False))
    assert cut(g, [[START, 1, NL, 2]]) == (0, 3), "the marker is not thought"


def test_a_model_that_answers_without_thinking_is_never_cut() -> None:
    g = ThinkingGuard(limit(0, starts_in_reasoning=False))
    assert cut(g, [[1, 2, NL, 3] * 10]) is None
    assert g.ended, "the guard stops watching once the answer started"


def test_end_soon_cuts_at_the_next_line_end() -> None:
    g = ThinkingGuard(limit(1000))
    assert cut(g, [[1, 2]]) is None
    g.end_soon(4, "early_exit")
    assert cut(g, [[3, NL, 5]]) == (0, 2) and g.reason == "early_exit"
    assert g.forced_ids() == list(FORCED_AT_LINE)


def test_end_soon_bounds_the_line_with_its_grace() -> None:
    g = ThinkingGuard(limit(1000))
    assert cut(g, [[1]]) is None  # a line in progress
    g.end_soon(2, "early_exit")
    assert cut(g, [[1] * 10]) == (0, 2)


def test_end_soon_at_a_line_start_cuts_at_once() -> None:
    g = ThinkingGuard(limit(1000))
    assert cut(g, [[1, NL]]) is None
    g.end_soon(2, "early_exit")
    assert cut(g, [[1, 2]]) == (0, 0)


def test_end_soon_keeps_a_budget_that_cuts_sooner() -> None:
    g = ThinkingGuard(limit(3, grace=1))
    assert cut(g, [[1, 2, 3]]) is None
    g.end_soon(16, "early_exit")
    assert cut(g, [[1] * 10]) == (0, 1) and g.reason == "budget"


def test_a_spent_budget_cuts_before_a_token_that_starts_the_next_line() -> None:
    """Vocabularies that glue the newline to the next word (`\\nt`, the bundled model's) have no
    token that ends a line: the line in progress ends before the token that starts the next."""
    nl_word = 11
    lim = ThinkingLimit(budget=3, grace=8, think_start_id=START, think_end_id=END, starts_in_reasoning=True,
                        line_end_ids=frozenset({NL}), forced_ids=FORCED, forced_after_line_ids=FORCED_AT_LINE,
                        line_start_ids=frozenset({nl_word}))
    g = ThinkingGuard(lim)
    assert cut(g, [[1, 2, 3, 4], [5, nl_word, 6]]) == (1, 1), "the line ran past the budget, then ended"
    assert g.forced_ids() == list(FORCED), "the ending brings the newline the cut token carried"
