"""Picker: the highest total score; ties break randomly (so equal workers share the load)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from router.policies.base import RouteRequest, WorkerView

TIE = 1e-12  # totals this close to the best tie with it


class MaxScorePicker:
    name = "max-score"
    uses_scores = True

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def pick(self, req: RouteRequest, workers: Sequence[WorkerView], totals: dict[str, float]) -> WorkerView:
        ids = [w.worker_id for w in workers]
        # a profile's totals are keyed in the workers' order: read them as they are then
        scores = list(totals.values()) if list(totals) == ids else [totals[i] for i in ids]
        best = max(scores)
        i = scores.index(best)
        # usually one winner: make sure with C-speed list ops before a pass in Python
        if len(scores) == 1 or max(scores[:i] + scores[i + 1:]) < best - TIE:
            return workers[i]
        top = [w for w, s in zip(workers, scores, strict=True) if s >= best - TIE]
        return top[0] if len(top) == 1 else self.rng.choice(top)
