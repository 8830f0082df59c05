"""Picker: the next worker in id order after the last one picked, ignoring scores.

Stateless about workers (a worker that joins or leaves just changes the ring), so it survives
discovery churn; the baseline the load-aware profiles are measured against (bench/routing.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from router.policies.base import RouteRequest, WorkerView


class RoundRobinPicker:
    name = "round-robin"
    uses_scores = False

    def __init__(self) -> None:
        self.last = ""

    def pick(self, req: RouteRequest, workers: Sequence[WorkerView], totals: dict[str, float]) -> WorkerView:
        ids = [w.worker_id for w in workers]
        last = self.last
        self.last = min([i for i in ids if i > last] or ids)
        return workers[ids.index(self.last)]
