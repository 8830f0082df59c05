"""A profile: filters -> weighted sum of scores -> picker, each plugin timed.

The reason a profile gives for its pick labels `splitmind_router_decisions_total`:
- `only_candidate`: one worker was left after the filters;
- a filter's reason (`full`) when the filters left none;
- the picker's name when it ignores scores (`round-robin`);
- else the scorer that set the winner furthest above the mean of the others (weighted), or `tie`
  when no scorer did (the pick was random among equals).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from router.policies.base import Decision, Filter, Picker, Recorder, RouteRequest, WeightedScorer, WorkerView

Observe = Callable[[str, float], None]  # (plugin name, seconds)
# The workers a decision must consider however few it samples, with how much they are worth
# (the prefix index's matched blocks): a prefix-affinity profile's holders of the prompt's prefix.
Keeps = Callable[[RouteRequest], Mapping[str, int]]


class Profile:
    def __init__(self, name: str, *, filters: Sequence[Filter] = (), scorers: Sequence[WeightedScorer] = (),
                 picker: Picker, recorders: Sequence[Recorder] = (), observe: Observe | None = None,
                 keeps: Keeps | None = None) -> None:
        self.name = name
        self.keeps = keeps
        # A picker that ignores scores (round-robin) walks the whole pool in turn: not sampled.
        self.samples = picker.uses_scores
        self.filters = list(filters)
        self.scorers = list(scorers)
        self.picker = picker
        self.recorders = list(recorders)
        self.observe = observe

    def _timed(self, plugin: str, started: float) -> None:
        if self.observe is not None:
            self.observe(plugin, time.perf_counter() - started)

    def pick(self, req: RouteRequest, workers: Sequence[WorkerView], filtered: bool = True) -> Decision:
        candidates = list(workers)
        if not candidates:
            return Decision(None, "no_worker")
        for f in self.filters if filtered else ():
            t = time.perf_counter()
            candidates = f.filter(req, candidates)
            self._timed(f.name, t)
            if not candidates:
                return Decision(None, f.name)
        if len(candidates) == 1:
            return self._chosen(req, candidates[0], "only_candidate")
        ids = [w.worker_id for w in candidates] if self.scorers or self.picker.uses_scores else []
        total: list[float] | None = None  # the weighted sum, per candidate in their order
        weighted: list[tuple[str, dict[str, float], float]] = []
        for ws in self.scorers:
            t = time.perf_counter()
            scores = ws.scorer.score(req, candidates)
            self._timed(ws.scorer.name, t)
            # A scorer's dict is keyed in the candidates' order (it walks them): read its values
            # as they are, rather than looking each worker up; a worker it left out scores 0.
            values: Iterable[float] = scores.values() if list(scores) == ids else [scores.get(i, 0.0) for i in ids]
            weight = ws.weight
            if total is None:  # 1.0 * s is s
                total = list(values) if weight == 1.0 else [weight * s for s in values]
            else:
                total = [a + weight * s for a, s in zip(total, values, strict=True)]
            weighted.append((ws.scorer.name, scores, weight))
        totals: dict[str, float] = {}  # a picker that ignores scores is given none
        if self.picker.uses_scores:
            totals = dict(zip(ids, total, strict=True)) if total is not None else dict.fromkeys(ids, 0.0)
        t = time.perf_counter()
        chosen = self.picker.pick(req, candidates, totals)
        self._timed(self.picker.name, t)
        return self._chosen(req, chosen, self._reason(chosen, weighted, len(candidates)))

    def _reason(self, chosen: WorkerView, weighted: list[tuple[str, dict[str, float], float]], n: int) -> str:
        if not weighted or not self.picker.uses_scores:
            return self.picker.name
        best, best_margin = "tie", 1e-9
        for name, scores, weight in weighted:
            mine = scores.get(chosen.worker_id, 0.0)
            others = (sum(scores.values()) - mine) / (n - 1)
            margin = weight * (mine - others)
            if margin > best_margin:
                best, best_margin = name, margin
        return best

    def _chosen(self, req: RouteRequest, worker: WorkerView, reason: str) -> Decision:
        for r in self.recorders:
            r.record(req, worker.worker_id)
        return Decision(worker, reason)
