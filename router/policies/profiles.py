"""The named profiles a config chooses from (`[gateway] decode_policy`, `prefill_policy`).

decode:
- `least-tokens` (default): capacity filter; least tokens in flight (weight 1) + most free KV
  cache (0.5); max score, random ties. Long reasoning streams count for what they hold.
- `least-requests`: capacity filter; fewest open requests; max score.
- `round-robin`: capacity filter; next worker in turn.
prefill:
- `prefix-affinity` (default): the node that saw the prompt's prefix, within a bounded load
  (weight 2) + least tokens in flight (1), so an unseen prompt goes to the least loaded node.
- `least-tokens`, `round-robin`: as for decode, without the capacity filter.
"""

from __future__ import annotations

import random

from router.policies.base import WeightedScorer
from router.policies.capacity import CapacityFilter
from router.policies.kv_usage import KVUsageScorer
from router.policies.least_requests import LeastRequestsScorer
from router.policies.least_tokens import LeastTokensScorer
from router.policies.max_score import MaxScorePicker
from router.policies.prefix_affinity import PrefixAffinityScorer
from router.policies.prefix_index import PrefixIndex
from router.policies.profile import Observe, Profile
from router.policies.round_robin import RoundRobinPicker
from splitmind.config import DECODE_POLICIES, PREFILL_POLICIES


def decode_profile(name: str, max_requests: int, observe: Observe | None = None,
                   rng: random.Random | None = None) -> Profile:
    capacity = [CapacityFilter(max_requests)]
    if name == "least-tokens":
        return Profile(name, filters=capacity, picker=MaxScorePicker(rng), observe=observe,
                       scorers=[WeightedScorer(LeastTokensScorer()), WeightedScorer(KVUsageScorer(), 0.5)])
    if name == "least-requests":
        return Profile(name, filters=capacity, picker=MaxScorePicker(rng), observe=observe,
                       scorers=[WeightedScorer(LeastRequestsScorer())])
    if name == "round-robin":
        return Profile(name, filters=capacity, picker=RoundRobinPicker(), observe=observe)
    raise ValueError(f"decode_policy must be one of {', '.join(DECODE_POLICIES)}, not {name!r}")


def prefill_profile(name: str, index: PrefixIndex, load_bound: float, observe: Observe | None = None,
                    rng: random.Random | None = None) -> Profile:
    if name == "prefix-affinity":
        affinity = PrefixAffinityScorer(index, load_bound)
        return Profile(name, picker=MaxScorePicker(rng), observe=observe, recorders=[affinity], keeps=index.matched,
                       scorers=[WeightedScorer(affinity, 2.0), WeightedScorer(LeastTokensScorer())])
    if name == "least-tokens":
        return Profile(name, picker=MaxScorePicker(rng), observe=observe, scorers=[WeightedScorer(LeastTokensScorer())])
    if name == "round-robin":
        return Profile(name, picker=RoundRobinPicker(), observe=observe)
    raise ValueError(f"prefill_policy must be one of {', '.join(PREFILL_POLICIES)}, not {name!r}")
