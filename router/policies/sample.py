"""Power of d choices: a decision over a large pool looks at a random few of its workers.

Scoring every worker costs Python time per worker: with 1,000 workers per pool a decision took
1.1 ms at the median and 2.8 ms at p99 on an idle core (`bench/routing.py`, docs/benchmarks.md),
far from issue #10's 1 ms; with a sample of 32, 0.18 and 0.55-0.71 ms. The best of d random
workers is nearly as good as the best of all: with d choices the most loaded of n workers
carries ln ln n / ln d over the mean instead of ln n / ln ln n with one (Mitzenmacher, "The
Power of Two Choices in Randomized Load Balancing", 2001), which is why Envoy and NGINX pick the
less loaded of two. A sample of 32 keeps a pick among the least loaded few of the pool each
time, and pools no larger than the sample are scored whole, as before.

A profile that follows prefixes (`Profile.keeps`) needs the workers that hold the prompt's
prefix, which a random sample would miss: those are added to it, the best `size` of them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol, TypeVar

from router.policies.base import RouteRequest
from router.policies.profile import Profile


class HasWorkerId(Protocol):
    @property
    def worker_id(self) -> str: ...


W = TypeVar("W", bound=HasWorkerId)


class CandidateSample:
    name = "sample"

    def __init__(self, size: int, rng: random.Random | None = None) -> None:
        self.size = size  # 0: every worker
        self.rng = rng or random.Random()

    def candidates(self, profile: Profile, req: RouteRequest, workers: list[W],
                   lookup: Callable[[str], W | None]) -> list[W]:
        """`workers` itself when the pool is small or the profile walks it whole, else a random
        `size` of them plus the workers `profile.keeps` names that `lookup` finds in the pool."""
        size = self.size
        if not size or len(workers) <= size or not profile.samples:
            return workers
        picked = self.rng.sample(workers, size)
        held = profile.keeps(req) if profile.keeps is not None else None
        if held:
            best = sorted(held, key=held.__getitem__, reverse=True)[:size] if len(held) > size else list(held)
            have = {w.worker_id for w in picked}
            for wid in best:
                if wid not in have and (w := lookup(wid)) is not None:
                    picked.append(w)
        return picked
