"""Scorer: fewer open requests is better.

score = 1 - requests / max(requests over the candidates), requests = running + waiting.
"""

from __future__ import annotations

from collections.abc import Sequence

from router.policies.base import RouteRequest, WorkerView


class LeastRequestsScorer:
    name = "least-requests"

    def score(self, req: RouteRequest, workers: Sequence[WorkerView]) -> dict[str, float]:
        top = float(max([w.requests for w in workers], default=0) or 1)  # as in least_tokens.py
        return {w.worker_id: 1.0 - w.requests / top for w in workers}
