"""Split generated token ids into reasoning and answer, by the think markers' token ids.

State machine: the stream starts in reasoning when the prompt already opened a think block
(R1/Qwen3 templates), or enters it at a `<think>` that comes before any answer token. The first
`</think>` inside reasoning ends it; everything after is answer. Markers themselves are not
text. A chunk may hold several tokens (MTP, a lagging reader), so a boundary in the middle of a
chunk splits that chunk. Models without think tokens never reason.

Each piece also says how many of the fed ids it consumed (`num_ids`: its text ids plus the
markers it closed or opened), so per-token data such as logprobs can follow the text; a
marker with no text beside it makes a piece of its own with no text ids.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Piece:
    is_reasoning: bool
    token_ids: list[int]
    num_ids: int  # ids of the fed chunk this piece accounts for: token_ids plus markers


class ReasoningSplitter:
    def __init__(self, think_start_id: int | None, think_end_id: int | None, starts_in_reasoning: bool) -> None:
        self.start_id = think_start_id
        self.end_id = think_end_id
        self.enabled = think_start_id is not None and think_end_id is not None
        self.in_reasoning = self.enabled and starts_in_reasoning
        self.seen_answer = False
        self.done_reasoning = False
        self.num_reasoning_tokens = 0  # markers included: they are part of the think block

    def feed(self, token_ids: list[int]) -> list[Piece]:
        pieces: list[Piece] = []
        current: list[int] = []
        num_ids = 0
        current_kind = self.in_reasoning

        def flush() -> None:
            nonlocal current, num_ids
            if num_ids:
                pieces.append(Piece(current_kind, current, num_ids))
                current, num_ids = [], 0

        for tid in token_ids:
            if self.enabled and not self.done_reasoning:
                if self.in_reasoning and tid == self.end_id:  # closes the reasoning piece
                    self.num_reasoning_tokens += 1
                    num_ids += 1
                    flush()
                    self.in_reasoning = False
                    self.done_reasoning = True
                    current_kind = False
                    continue
                if not self.in_reasoning and not self.seen_answer and tid == self.start_id:  # opens one
                    self.num_reasoning_tokens += 1
                    flush()
                    num_ids += 1
                    self.in_reasoning = True
                    current_kind = True
                    continue
            if self.in_reasoning:
                self.num_reasoning_tokens += 1
            else:
                self.seen_answer = True
            current.append(tid)
            num_ids += 1
        flush()
        return pieces
