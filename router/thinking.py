"""Where a sample's thinking must end: after its budget, once the line in progress is finished
(or a grace window is used up), by forcing the model's transition sentence and `</think>`.

The guard watches the token ids a sample streams, nothing else; `router/pd.py` does the cut:
it forwards the tokens up to the cut, aborts the engine request, sends the forced ending, and
continues the sample on the decode node from prompt + generated + forced ending (its prefix
cache holds the prompt and most of the thinking, so that costs a short prefill). The ending is
tokenized by the gateway with the model's own tokenizer, so the model sees exactly the tokens
it was trained on.

Why not vLLM's own `thinking_token_budget`: measured on vLLM 0.32's CPU build with MTP on and
temperature 1.0, it garbled the forced string (`Tim_is up`, `Timpis up`) and once let the
thinking run on with no `</think>` at all (153 reasoning tokens for a budget of 64 plus a
36-token ending); vLLM's tokenizer also split the ending into 36 tokens where the model's
tokenizer.json gives 26. A logits processor of our own is refused by vLLM whenever speculative
decoding is on. Ending the thinking from the gateway is exact at any temperature, with MTP, on
either route, and serves budgets, the answer reserve and early exit alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from splitmind.reasoning import ReasoningSplitter


@dataclass(frozen=True)
class ThinkingLimit:
    """What one sample's thinking may use. The API builds it from the request and the model's
    reasoning profile."""

    budget: int  # reasoning tokens before the grace window
    grace: int  # further tokens in which the model may finish its line
    think_start_id: int
    think_end_id: int
    starts_in_reasoning: bool
    line_end_ids: frozenset[int]  # tokens whose text ends a line
    forced_ids: tuple[int, ...]  # the forced ending after a cut in the middle of a line
    forced_after_line_ids: tuple[int, ...]  # the same, when the cut falls at the start of a line
    reason: str = "budget"  # "budget" or "answer_reserve": which limit set `budget` (metrics)


class ThinkingGuard:
    def __init__(self, limit: ThinkingLimit) -> None:
        self.limit = limit
        self.splitter = ReasoningSplitter(limit.think_start_id, limit.think_end_id, limit.starts_in_reasoning)
        self.thought = 0  # reasoning tokens generated (markers not counted)
        self.at_line_start = True  # the prompt opens the think block on a line of its own
        self.ended = False  # the thinking is over, naturally or by a cut

    def feed(self, token_ids: list[int]) -> int | None:
        """How many of `token_ids` to keep before the forced ending, if the thinking must end in
        this chunk; None to keep them all."""
        if self.ended:
            return None
        lim = self.limit
        for i, tid in enumerate(token_ids):
            was_reasoning = self.splitter.in_reasoning
            self.splitter.feed([tid])
            if self.splitter.done_reasoning or self.splitter.seen_answer:
                self.ended = True  # the model closed its thinking itself, or answers without any
                return None
            if not (was_reasoning and self.splitter.in_reasoning):
                continue  # the opening marker, or answer text of a model that does not think
            if self.thought >= lim.budget and self.at_line_start:
                return self._cut(i)  # the budget is spent and no line is in progress
            self.thought += 1
            self.at_line_start = tid in lim.line_end_ids
            if self.thought >= lim.budget and (self.at_line_start or self.thought >= lim.budget + lim.grace):
                return self._cut(i + 1)
        return None

    def _cut(self, keep: int) -> int:
        self.ended = True
        return keep

    def forced_ids(self) -> list[int]:
        """The ending to send after the cut."""
        lim = self.limit
        return list(lim.forced_after_line_ids if self.at_line_start else lim.forced_ids)
