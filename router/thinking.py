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

import msgspec

from splitmind.protocol import TokenDelta
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
    reason: str = "budget"  # "budget", "answer_reserve" or "none" (early exit alone): what set `budget`
    line_start_ids: frozenset[int] = frozenset()  # tokens whose text starts a new line (`\nt`)


NO_BUDGET = 2**31  # a limit that only early exit (`router/early_exit.py`) will end


class ThinkingGuard:
    def __init__(self, limit: ThinkingLimit) -> None:
        self.limit = limit
        self.splitter = ReasoningSplitter(limit.think_start_id, limit.think_end_id, limit.starts_in_reasoning)
        self.thought = 0  # reasoning tokens generated (markers not counted)
        self.at_line_start = True  # the prompt opens the think block on a line of its own
        self.ended = False  # the thinking is over, naturally or by a cut
        self.budget, self.grace = limit.budget, limit.grace
        self.reason = limit.reason  # why the cut came (metrics): the limit's, or "early_exit"
        self.fed = 0  # tokens fed so far
        # Where the last line of thinking ended: tokens fed, and reasoning tokens, up to it, and
        # whether its newline is in (a token ending with it) or still to come (the next token
        # starts with it). Early exit probes there: the reasoning's step boundaries.
        self.line_end_fed = self.line_end_thought = 0
        self.line_end_has_newline = True

    def end_soon(self, grace: int, reason: str) -> None:
        """End the thinking at the next line end, or after `grace` more tokens (early exit: the
        answer has settled). A cut already due sooner is kept."""
        if self.ended or self.budget + self.grace <= self.thought + grace:
            return
        self.budget, self.grace, self.reason = min(self.budget, self.thought), grace, reason

    def feed(self, token_ids: list[int]) -> int | None:
        """How many of `token_ids` to keep before the forced ending, if the thinking must end in
        this chunk; None to keep them all."""
        if self.ended:
            return None
        lim = self.limit
        for i, tid in enumerate(token_ids):
            was_reasoning = self.splitter.in_reasoning
            self.splitter.feed([tid])
            self.fed += 1
            if self.splitter.done_reasoning or self.splitter.seen_answer:
                self.ended = True  # the model closed its thinking itself, or answers without any
                return None
            if not (was_reasoning and self.splitter.in_reasoning):
                continue  # the opening marker, or answer text of a model that does not think
            if self.thought >= self.budget and (self.at_line_start or tid in lim.line_start_ids):
                # The budget is spent and no line is in progress: the last token ended one, or
                # this one starts the next (`\nt`), and the forced ending starts it instead.
                return self._cut(i)
            self.thought += 1
            self.at_line_start = tid in lim.line_end_ids
            if self.at_line_start:
                self.line_end_fed, self.line_end_thought, self.line_end_has_newline = self.fed, self.thought, True
            elif tid in lim.line_start_ids and self.thought > 1:
                self.line_end_fed, self.line_end_thought, self.line_end_has_newline = (self.fed - 1, self.thought - 1,
                                                                                       False)
            # At a line end the cut waits for the next token (the check above): it may be the
            # model's own `</think>`. Cut at once, the model never got to end on its own, and a
            # probe-agreed exit that fell on the last line of a finished trace forced the
            # bundled model into a wrong answer ('sum 71' read back as 'The answer is 711.').
            if self.thought >= self.budget + self.grace and not self.at_line_start:
                return self._cut(i + 1)
        return None

    def _cut(self, keep: int) -> int:
        self.ended = True
        return keep

    def forced_ids(self) -> list[int]:
        """The ending to send after the cut."""
        lim = self.limit
        return list(lim.forced_after_line_ids if self.at_line_start else lim.forced_ids)


def guarded(guard: ThinkingGuard | None, delta: TokenDelta) -> tuple[TokenDelta, list[int] | None]:
    """`delta` cut where the thinking must end, and the ending to force there (None: no cut)."""
    keep = guard.feed(delta.token_ids) if guard is not None else None
    if keep is None:
        return delta, None
    assert guard is not None
    logprobs = delta.logprobs[:keep] if delta.logprobs is not None else None
    cut = msgspec.structs.replace(delta, token_ids=delta.token_ids[:keep], logprobs=logprobs, finish_reason=None)
    return cut, guard.forced_ids()
