"""Reading the gateway's Prometheus text in benchmarks."""

from __future__ import annotations

import re

import httpx

from tests.e2e.cluster import settled


def counter_sum(url: str, name: str, role: str = "decode") -> float:
    """A counter summed over the workers of one role, from the gateway's /metrics."""
    text = httpx.get(url + "/metrics", timeout=30).text
    pattern = rf'^{name}\{{[^}}]*role="{role}"[^}}]*\}} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def spec_counters(url: str) -> tuple[float, float]:
    """(drafted, accepted) MTP tokens on the decode nodes so far."""
    return (counter_sum(url, "splitmind_spec_draft_tokens_total"),
            counter_sum(url, "splitmind_spec_accepted_tokens_total"))


def spec_delta(url: str, before: tuple[float, float], *, drafting: bool = True) -> tuple[float, float]:
    """(drafted, accepted) since `before`, once the counters include the last requests (which
    drafted, unless MTP is off)."""
    after = settled(lambda: spec_counters(url), lambda now: not drafting or now[0] > before[0])
    return after[0] - before[0], after[1] - before[1]
