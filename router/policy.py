"""Routing policy: filter -> weighted scorers -> pick, as small plugins (llm-d's shape).

A `Scorer` returns a score in [0, 1] per worker id; weights live in the profile, not the
scorer. Ties break randomly. Whether to disaggregate is a separate `PDDecider`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from router.client import WorkerClient


@dataclass(frozen=True)
class RouteRequest:
    request_id: str
    num_prompt_tokens: int


class Scorer(Protocol):
    name: str

    def score(self, req: RouteRequest, workers: Sequence[WorkerClient]) -> dict[str, float]: ...


class LeastLoadedScorer:
    """score = 1 - load / max_load, load = running + waiting requests (from the heartbeat)
    plus requests this gateway has in flight there (fresher than the last heartbeat)."""

    name = "least-loaded"

    def score(self, req: RouteRequest, workers: Sequence[WorkerClient]) -> dict[str, float]:
        loads = {w.worker_id: _load(w) for w in workers}
        top = max(loads.values(), default=0) or 1
        return {wid: 1.0 - load / top for wid, load in loads.items()}


def _load(w: WorkerClient) -> int:
    heartbeat = (w.stats.num_running + w.stats.num_waiting) if w.stats is not None else 0
    return max(heartbeat, len(w.streams))


@dataclass(frozen=True)
class WeightedScorer:
    scorer: Scorer
    weight: float = 1.0


class Profile:
    def __init__(self, scorers: Sequence[WeightedScorer], rng: random.Random | None = None) -> None:
        self.scorers = list(scorers)
        self.rng = rng or random.Random()

    def pick(self, req: RouteRequest, workers: Sequence[WorkerClient]) -> WorkerClient | None:
        if not workers:
            return None
        totals = {w.worker_id: 0.0 for w in workers}
        for ws in self.scorers:
            for wid, s in ws.scorer.score(req, workers).items():
                totals[wid] += ws.weight * s
        best = max(totals.values())
        return self.rng.choice([w for w in workers if totals[w.worker_id] == best])


class PDDecider(Protocol):
    name: str

    def should_disaggregate(self, req: RouteRequest) -> tuple[bool, str]:
        """(decision, reason) — the reason labels the decision counter."""
        ...


class PromptLengthDecider:
    """Disaggregate prompts of at least `min_prompt_tokens`; shorter ones prefill on decode."""

    name = "prompt-length"

    def __init__(self, min_prompt_tokens: int) -> None:
        self.min_prompt_tokens = min_prompt_tokens

    def should_disaggregate(self, req: RouteRequest) -> tuple[bool, str]:
        if req.num_prompt_tokens < self.min_prompt_tokens:
            return False, "short_prompt"
        return True, "long_prompt"
