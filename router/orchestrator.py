"""Plans a request: which decode node, whether a prefill node computes the prompt first and
which, and the n samples of a request as `Generation`s (`router/pd.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec

from router.client import WorkerClient
from router.pd import ROUTE_COLOCATED, ROUTE_DISAGGREGATED, Generation, Plan
from router.policy import LeastLoadedScorer, PDDecider, Profile, PromptLengthDecider, RouteRequest, WeightedScorer
from router.registry import WorkerRegistry
from router.thinking import ThinkingLimit
from splitmind.config import GatewayTuning
from splitmind.errors import NoWorkerError, OverloadedError
from splitmind.protocol import Role, Sampling


def _load(worker: WorkerClient) -> int:
    """Requests on a decode node: what this gateway has open there, or what the node reports
    running and waiting (every gateway's, half a second old), whichever is more."""
    s = worker.stats
    return max(len(worker.streams), (s.num_running + s.num_waiting) if s is not None else 0)


def sample_sampling(sampling: Sampling, index: int) -> Sampling:
    if index == 0 or sampling.seed is None:
        return sampling
    return msgspec.structs.replace(sampling, seed=sampling.seed + index)


class Orchestrator:
    def __init__(self, registry: WorkerRegistry, tuning: GatewayTuning,
                 decider: PDDecider | None = None, profile: Profile | None = None,
                 on_fallback: Callable[[str], None] | None = None) -> None:
        self.registry = registry
        self.tuning = tuning
        self.on_fallback = on_fallback
        self.decider = decider or PromptLengthDecider(tuning.min_disagg_prompt_tokens)
        self.profile = profile or Profile([WeightedScorer(LeastLoadedScorer())])

    def plan(self, request_id: str, prompt_token_ids: list[int], sampling: Sampling,
             route_override: str | None = None, n: int = 1, thinking: ThinkingLimit | None = None) -> Plan:
        req = RouteRequest(request_id, len(prompt_token_ids))
        healthy = self.registry.healthy(Role.DECODE)
        if not healthy:
            raise NoWorkerError("no healthy decode worker")
        limit = self.tuning.max_streams_per_decode
        room = [w for w in healthy if not limit or _load(w) + n <= limit]
        if not room:
            raise OverloadedError(f"every decode worker is full ({limit} open requests each); try again shortly")
        decode = self.profile.pick(req, room)
        if decode is None:
            raise NoWorkerError("no healthy decode worker")
        prefill = None
        prefills = self.registry.healthy(Role.PREFILL)
        if route_override == ROUTE_COLOCATED:
            want, reason = False, "override"
        elif route_override == ROUTE_DISAGGREGATED:
            want, reason = True, "override"
        elif not prefills:
            want, reason = False, "no_prefill_worker"
        else:
            want, reason = self.decider.should_disaggregate(req)
        if want:
            prefill = self.profile.pick(req, prefills)
            if prefill is None:
                if route_override == ROUTE_DISAGGREGATED:
                    raise NoWorkerError("no healthy prefill worker")
                reason = "no_prefill_worker"
        route = ROUTE_DISAGGREGATED if prefill is not None else ROUTE_COLOCATED

        def next_worker(role: Role) -> Callable[[frozenset[str]], WorkerClient | None]:
            def pick(tried: frozenset[str]) -> WorkerClient | None:
                return self.profile.pick(req, [w for w in self.registry.healthy(role) if w.worker_id not in tried])
            return pick

        first = Generation(request_id if n == 1 else f"{request_id}-0", prompt_token_ids, sampling, decode, prefill,
                           route, reason, self.tuning, kv_on_decode=asyncio.Event() if n > 1 else None,
                           thinking=thinking, next_prefill=next_worker(Role.PREFILL),
                           next_decode=next_worker(Role.DECODE), on_fallback=self.on_fallback)
        others = [Generation(f"{request_id}-{i}", prompt_token_ids, sample_sampling(sampling, i), decode, None,
                             ROUTE_COLOCATED, "sample_after_first", self.tuning, start_after=first.kv_on_decode,
                             thinking=thinking, next_decode=next_worker(Role.DECODE), on_fallback=self.on_fallback)
                  for i in range(1, n)]
        return Plan(request_id, [first, *others], route, reason)
