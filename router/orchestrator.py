"""Plans a request: which decode node, whether a prefill node computes the prompt first and
which, and the n samples of a request as `Generation`s (`router/pd.py`).

Every choice goes through the routing profiles of `router/policies/` over snapshots of the
healthy workers, and is reported through `on_decision(pool, reason)`:
- pool `decode` and `prefill`: the profile's reason (`router/policies/profile.py`);
- pool `pd`: whether to disaggregate and why (`router/policies/pd_decider.py`, or `override`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import msgspec

from router.client import WorkerClient
from router.early_exit import EarlyExit, ProbeOutcome
from router.pd import ROUTE_COLOCATED, ROUTE_DISAGGREGATED, Generation
from router.plan import Plan
from router.policies.base import RouteRequest, WorkerView
from router.policies.pd_decider import PrefillCostDecider
from router.policies.prefix_index import PrefixIndex
from router.policies.profile import Observe, Profile
from router.policies.profiles import decode_profile, prefill_profile
from router.policies.sample import CandidateSample
from router.registry import WorkerRegistry
from router.thinking import ThinkingLimit
from splitmind.config import GatewayTuning
from splitmind.errors import NoWorkerError, OverloadedError
from splitmind.protocol import Role, Sampling

OnDecision = Callable[[str, str], None]  # (pool, reason)


def sample_sampling(sampling: Sampling, index: int) -> Sampling:
    if index == 0 or sampling.seed is None:
        return sampling
    return msgspec.structs.replace(sampling, seed=sampling.seed + index)


class Orchestrator:
    def __init__(self, registry: WorkerRegistry, tuning: GatewayTuning,
                 on_fallback: Callable[[str], None] | None = None, on_decision: OnDecision | None = None,
                 observe: Observe | None = None, on_probe: ProbeOutcome | None = None,
                 rng: random.Random | None = None) -> None:
        self.registry = registry
        self.sample = CandidateSample(tuning.route_sample, rng)
        self.on_probe = on_probe
        self.tuning = tuning
        self.on_fallback = on_fallback
        self.on_decision = on_decision
        # What the gateway sent where: a guess at each node's prefix cache, forgotten for a node
        # that dropped out (it may come back restarted, its cache empty).
        self.indexes = {Role.DECODE: PrefixIndex(), Role.PREFILL: PrefixIndex()}
        self.decode_profile: Profile = decode_profile(tuning.decode_policy, tuning.max_streams_per_decode, observe)
        self.prefill_profile: Profile = prefill_profile(tuning.prefill_policy, self.indexes[Role.PREFILL],
                                                        tuning.prefix_load_bound, observe)
        self.decider = PrefillCostDecider(tuning.min_disagg_prompt_tokens, tuning.max_prefill_queue_tokens,
                                          self.indexes[Role.DECODE])
        registry.on_leave.append(self._forget)

    def _forget(self, worker_id: str, role: Role) -> None:
        self.indexes[role].forget(worker_id)

    def _decided(self, pool: str, reason: str) -> None:
        if self.on_decision is not None:
            self.on_decision(pool, reason)

    def _pick(self, profile: Profile, pool: str, req: RouteRequest, clients: list[WorkerClient],
              views: list[WorkerView] | None = None, filtered: bool = True) -> WorkerClient | None:
        """`views`: the clients' snapshots. `filtered=False`: a fallback after the workers tried
        failed. It skips the filters: the request was admitted, and a stream half-sent is finished
        on a full node rather than cut."""
        if views is None:
            views = [c.view() for c in clients]
        decision = profile.pick(req, views, filtered=filtered)
        self._decided(pool, decision.reason)
        if decision.worker is None:
            return None
        wid = decision.worker.worker_id
        return next(c for c in clients if c.worker_id == wid)

    def _candidates(self, profile: Profile, req: RouteRequest, clients: list[WorkerClient],
                    role: Role) -> list[WorkerClient]:
        """The workers a first pick looks at: a sample of a large pool (`router/policies/sample.py`)."""
        def in_pool(worker_id: str) -> WorkerClient | None:
            c = self.registry.workers.get(worker_id)
            return c if c is not None and c.role == role and c.in_rotation else None
        return self.sample.candidates(profile, req, clients, in_pool)

    def _pick_sampled(self, profile: Profile, pool: str, req: RouteRequest, clients: list[WorkerClient],
                      sampled: list[WorkerClient], views: list[WorkerView]) -> WorkerClient | None:
        """A pick over the sample; over the whole pool when the sample's workers were all
        filtered out (full), so that a 429 means every worker is full, not every sampled one."""
        if sampled is clients:
            return self._pick(profile, pool, req, clients, views)
        decision = profile.pick(req, views)
        if decision.worker is None:
            return self._pick(profile, pool, req, clients)
        self._decided(pool, decision.reason)
        wid = decision.worker.worker_id
        return next(c for c in sampled if c.worker_id == wid)

    def plan(self, request_id: str, prompt_token_ids: list[int], sampling: Sampling,
             route_override: str | None = None, n: int = 1, thinking: ThinkingLimit | None = None,
             early_exit: EarlyExit | None = None) -> Plan:
        req = RouteRequest(request_id, prompt_token_ids, n)
        healthy = self.registry.healthy(Role.DECODE)
        if not healthy:
            self._decided("decode", "no_worker")
            raise NoWorkerError("no healthy decode worker")
        sampled = self._candidates(self.decode_profile, req, healthy, Role.DECODE)
        decode = self._pick_sampled(self.decode_profile, "decode", req, healthy, sampled,
                                    [c.view() for c in sampled])
        if decode is None:
            limit = self.tuning.max_streams_per_decode
            raise OverloadedError(f"every decode worker is full ({limit} open requests each); try again shortly")
        prefill = None
        all_prefills = self.registry.healthy(Role.PREFILL)
        # One snapshot for the decider and the profile; of the sample in a large pool, so the
        # decider's "every prefill node is busy" is then "every sampled one".
        prefills = self._candidates(self.prefill_profile, req, all_prefills, Role.PREFILL)
        prefill_views = [w.view() for w in prefills]
        if route_override == ROUTE_COLOCATED:
            want, reason = False, "override"
        elif route_override == ROUTE_DISAGGREGATED:
            want, reason = True, "override"
        else:
            want, reason = self.decider.decide(req, decode.view(), prefill_views)
        # After the decision, which must see the decode node's cache as it was before this request.
        self.indexes[Role.DECODE].record(req, decode.worker_id)
        if want:
            prefill = self._pick_sampled(self.prefill_profile, "prefill", req, all_prefills, prefills, prefill_views)
            if prefill is None:
                if route_override == ROUTE_DISAGGREGATED:
                    raise NoWorkerError("no healthy prefill worker")
                reason = "no_prefill_worker"
        self._decided("pd", reason)
        route = ROUTE_DISAGGREGATED if prefill is not None else ROUTE_COLOCATED

        def next_worker(role: Role) -> Callable[[frozenset[str]], WorkerClient | None]:
            profile, pool = ((self.prefill_profile, "prefill") if role == Role.PREFILL
                             else (self.decode_profile, "decode"))

            def pick(tried: frozenset[str]) -> WorkerClient | None:
                left = [w for w in self.registry.healthy(role) if w.worker_id not in tried]
                return self._pick(profile, pool, req, left, filtered=False)
            return pick

        first = Generation(request_id if n == 1 else f"{request_id}-0", prompt_token_ids, sampling, decode, prefill,
                           route, reason, self.tuning, kv_on_decode=asyncio.Event() if n > 1 else None,
                           thinking=thinking, early_exit=early_exit, on_probe=self.on_probe,
                           next_prefill=next_worker(Role.PREFILL),
                           next_decode=next_worker(Role.DECODE), on_fallback=self.on_fallback)
        others = [Generation(f"{request_id}-{i}", prompt_token_ids, sample_sampling(sampling, i), decode, None,
                             ROUTE_COLOCATED, "sample_after_first", self.tuning, start_after=first.kv_on_decode,
                             thinking=thinking, early_exit=early_exit, on_probe=self.on_probe,
                             next_decode=next_worker(Role.DECODE), on_fallback=self.on_fallback)
                  for i in range(1, n)]
        return Plan(request_id, [first, *others], route, reason)
