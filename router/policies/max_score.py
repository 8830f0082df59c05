"""Picker: the highest total score; ties break randomly (so equal workers share the load)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from router.policies.base import RouteRequest, WorkerView


class MaxScorePicker:
    name = "max-score"
    uses_scores = True

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def pick(self, req: RouteRequest, workers: Sequence[WorkerView], totals: dict[str, float]) -> WorkerView:
        best = max(totals[w.worker_id] for w in workers)
        top = [w for w in workers if totals[w.worker_id] >= best - 1e-12]
        return top[0] if len(top) == 1 else self.rng.choice(top)
