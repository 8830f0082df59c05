"""Scorer: send a prompt where its prefix was sent before, within a bounded load.

score = matched_blocks / prompt_blocks for a worker whose load is at most
`load_bound` x (mean load over the candidates) + the prompt's own tokens, and 0 for the others; load is tokens in flight
(`least_tokens.py`). The bound is consistent hashing with bounded loads (Mirrokni, Thorup,
Zadimoghaddam 2018): one hot prefix fills its worker up to the bound, then spills to the next best,
so it cannot swamp a node while the others idle.

Records every decision of its profile into the shared `PrefixIndex`.
"""

from __future__ import annotations

from collections.abc import Sequence

from router.policies.base import RouteRequest, WorkerView
from router.policies.prefix_index import PrefixIndex


class PrefixAffinityScorer:
    name = "prefix-affinity"

    def __init__(self, index: PrefixIndex, load_bound: float = 1.25) -> None:
        self.index = index
        self.load_bound = load_bound

    def score(self, req: RouteRequest, workers: Sequence[WorkerView]) -> dict[str, float]:
        ids = [w.worker_id for w in workers]
        scores = dict.fromkeys(ids, 0.0)
        blocks = len(req.block_hashes)
        # Only the few candidates that were sent the prefix before can score above 0.
        hits = [(wid, m) for wid, m in self.index.matched(req).items() if wid in scores] if blocks else []
        if not hits:
            return scores
        tokens = [w.tokens_in_flight for w in workers]
        mean = sum(tokens) / len(workers)
        # +1 prompt's worth of slack, so that an idle pool (mean 0) still honours affinity
        limit = self.load_bound * mean + req.num_prompt_tokens
        load = dict(zip(ids, tokens, strict=True)) if len(hits) > 8 else None  # else look the few up
        for wid, m in hits:
            if (load[wid] if load is not None else tokens[ids.index(wid)]) <= limit:
                scores[wid] = m / blocks
        return scores

    def record(self, req: RouteRequest, worker_id: str) -> None:
        self.index.record(req, worker_id)
