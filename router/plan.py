"""The workers chosen for one request and its samples, as the API reports them."""

from __future__ import annotations

from dataclasses import dataclass

from router.client import WorkerClient
from router.pd import Generation
from router.timings import PhaseTimings


@dataclass
class Plan:
    """The workers chosen for one request, and its samples (one per choice)."""

    request_id: str
    samples: list[Generation]
    route: str
    reason: str

    @property
    def prefill_name(self) -> str:
        return self.samples[0].prefill_name

    @property
    def decode(self) -> WorkerClient:
        return self.samples[0].decode

    @property
    def timings(self) -> PhaseTimings:
        return self.samples[0].timings

    def served_by(self) -> dict[str, list[str]]:
        """The workers that did the work, by phase, in order: after a retry or a migration, not
        the ones the response headers named at the start."""
        out: dict[str, list[str]] = {"prefill": [], "decode": []}
        for sample in self.samples:
            for phase, worker in sample.served:
                if worker not in out[phase]:
                    out[phase].append(worker)
        return out

    def fallbacks(self) -> list[str]:
        return [reason for sample in self.samples for reason in sample.fallbacks]

