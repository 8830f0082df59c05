"""The reasoning/answer split works on token ids, whatever the chunking."""

from splitmind.reasoning import ReasoningSplitter

START, END = 100, 101


def split_all(chunks: list[list[int]], starts_in_reasoning: bool) -> tuple[list[int], list[int], int]:
    s = ReasoningSplitter(START, END, starts_in_reasoning)
    reasoning: list[int] = []
    answer: list[int] = []
    for chunk in chunks:
        for piece in s.feed(chunk):
            (reasoning if piece.is_reasoning else answer).extend(piece.token_ids)
    return reasoning, answer, s.num_reasoning_tokens


def test_think_opened_by_the_prompt() -> None:
    assert split_all([[1, 2], [3, END, 4], [5]], True) == ([1, 2, 3], [4, 5], 4)


def test_model_emits_think_itself() -> None:
    assert split_all([[START, 1], [2, END], [4]], False) == ([1, 2], [4], 4)


def test_boundary_in_the_same_chunk_as_text_on_both_sides() -> None:
    """MTP and a lagging reader deliver several tokens at once; the split must land mid-chunk."""
    assert split_all([[START, 1, 2, END, 3, 4]], False) == ([1, 2], [3, 4], 4)


def test_same_result_for_every_chunking() -> None:
    tokens = [START, 1, 2, 3, END, 4, 5]
    expected = split_all([tokens], False)
    for size in range(1, len(tokens) + 1):
        chunks = [tokens[i:i + size] for i in range(0, len(tokens), size)]
        assert split_all(chunks, False) == expected, size


def test_no_think_tokens_means_everything_is_answer() -> None:
    s = ReasoningSplitter(None, None, True)
    pieces = s.feed([START, 1, END, 2])
    assert [(p.is_reasoning, p.token_ids) for p in pieces] == [(False, [START, 1, END, 2])]
    assert s.num_reasoning_tokens == 0


def test_answer_without_think_block() -> None:
    assert split_all([[1, 2, 3]], False) == ([], [1, 2, 3], 0)


def test_think_after_answer_started_is_text() -> None:
    assert split_all([[1, START, 2]], False) == ([], [1, START, 2], 0)


def test_second_end_marker_is_answer_text() -> None:
    assert split_all([[1, END, 2, END, 3]], True) == ([1], [2, END, 3], 2)


def test_unfinished_reasoning_stays_reasoning() -> None:
    """A budget or max_tokens cut inside the think block: all reasoning, no answer."""
    assert split_all([[1, 2], [3]], True) == ([1, 2, 3], [], 3)
