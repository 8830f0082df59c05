"""Whether to disaggregate: prefill on a prefill node, or locally on the chosen decode node.

Prefill locally (reason in brackets) when
- no prefill node is healthy (`no_prefill_worker`);
- the prompt is shorter than `min_prompt_tokens` (`short_prompt`): shipping its KV costs more than
  computing it where it will be decoded;
- the part of the prompt the decode node has not seen (its prefix, per the gateway's `PrefixIndex`
  of what it sent there before this request) is shorter than that (`cached_on_decode`): a
  follow-up turn of a conversation whose earlier turns already sit in the decode node's prefix
  cache; only for a node whose engine caches prefixes;
- every prefill node already has more than `max_prefill_queue_tokens` tokens queued
  (`prefill_busy`): waiting behind them costs more than the interference the decode node's own
  prefill causes; 0 turns this off.
Otherwise disaggregate (`long_prompt`).
"""

from __future__ import annotations

from collections.abc import Sequence

from router.policies.base import PREFIX_BLOCK_TOKENS, RouteRequest, WorkerView
from router.policies.prefix_index import PrefixIndex


class PrefillCostDecider:
    name = "pd-decider"

    def __init__(self, min_prompt_tokens: int, max_prefill_queue_tokens: int = 0,
                 decode_index: PrefixIndex | None = None) -> None:
        self.min_prompt_tokens = min_prompt_tokens
        self.max_prefill_queue_tokens = max_prefill_queue_tokens
        self.decode_index = decode_index

    def decide(self, req: RouteRequest, decode: WorkerView, prefills: Sequence[WorkerView]) -> tuple[bool, str]:
        if not prefills:
            return False, "no_prefill_worker"
        if req.num_prompt_tokens < self.min_prompt_tokens:
            return False, "short_prompt"
        if self.decode_index is not None and decode.prefix_caching and req.num_prompt_tokens >= PREFIX_BLOCK_TOKENS:
            cached = self.decode_index.matched_blocks(req, [decode.worker_id])[decode.worker_id]
            if req.num_prompt_tokens - cached * PREFIX_BLOCK_TOKENS < self.min_prompt_tokens:
                return False, "cached_on_decode"
        limit = self.max_prefill_queue_tokens
        if limit and min(w.tokens_in_flight for w in prefills) > limit:
            return False, "prefill_busy"
        return True, "long_prompt"
