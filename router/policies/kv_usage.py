"""Scorer: more free KV cache is better.

score = 1 - kv_usage (the node's own 0-1 gauge). Catches load the gateway cannot see in tokens:
prefill KV leased to decode nodes, other gateways' long streams.
"""

from __future__ import annotations

from collections.abc import Sequence

from router.policies.base import RouteRequest, WorkerView


class KVUsageScorer:
    name = "kv-usage"

    def score(self, req: RouteRequest, workers: Sequence[WorkerView]) -> dict[str, float]:
        return {w.worker_id: 1.0 - kv if 0.0 <= (kv := w.kv_usage) <= 1.0 else float(kv < 0.0) for w in workers}
