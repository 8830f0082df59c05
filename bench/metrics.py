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


def histograms(url: str, names: tuple[str, ...]) -> dict[str, tuple[list[tuple[float, float]], float, float]]:
    """The gateway's histograms by name (and `phase` label, as name[phase]), summed over any other
    labels (a node histogram's workers): (cumulative buckets as (upper bound, count), sum, count)."""
    return histograms_in(httpx.get(url + "/metrics", timeout=30).text, names)


def histograms_in(text: str, names: tuple[str, ...]) -> dict[str, tuple[list[tuple[float, float]], float, float]]:
    """`histograms` of a /metrics text already read."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, tuple[dict[float, float], list[float]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in names:
            continue
        for s in family.samples:
            key = family.name + (f"[{s.labels['phase']}]" if "phase" in s.labels else "")
            buckets, totals = found.setdefault(key, ({}, [0.0, 0.0]))
            if s.name.endswith("_bucket"):
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
            elif s.name.endswith("_sum"):
                totals[0] += s.value
            elif s.name.endswith("_count"):
                totals[1] += s.value
    return {key: (sorted(buckets.items()), total, count) for key, (buckets, (total, count)) in found.items()}


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus's histogram_quantile over buckets in `histograms`' order: linear within the
    bucket that holds the q-th observation."""
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return float("nan")
    rank, lo, below = q * total, 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return lo
            return lo + (le - lo) * (rank - below) / max(n - below, 1e-12)
        lo, below = le, n
    return lo
