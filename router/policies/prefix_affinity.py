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
        blocks = len(req.block_hashes)
        if not blocks or not workers:
            return {w.worker_id: 0.0 for w in workers}
        mean = sum(w.tokens_in_flight for w in workers) / len(workers)
        # +1 prompt's worth of slack, so that an idle pool (mean 0) still honours affinity
        limit = self.load_bound * mean + req.num_prompt_tokens
        matched = self.index.matched_blocks(req, [w.worker_id for w in workers])
        return {w.worker_id: matched[w.worker_id] / blocks if w.tokens_in_flight <= limit else 0.0
                for w in workers}

    def record(self, req: RouteRequest, worker_id: str) -> None:
        self.index.record(req, worker_id)
