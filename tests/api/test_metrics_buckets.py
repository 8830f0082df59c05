"""The gateway's latency buckets resolve the range first tokens fall in, and the alerts'
thresholds are bucket bounds (a threshold between bounds is compared with an interpolation)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from api.metrics import LATENCY_BUCKETS_S

RULES = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "monitoring" / "prometheusrule.yaml"


def test_first_token_range_has_buckets_at_most_1_5x_apart() -> None:
    bounds = [b for b in LATENCY_BUCKETS_S if 0.05 <= b <= 2.5]
    assert bounds[0] == 0.05 and bounds[-1] == 2.5
    assert all(hi / lo <= 1.5 for lo, hi in itertools.pairwise(bounds))


def test_latency_alert_thresholds_are_bucket_bounds() -> None:
    rules = RULES.read_text()
    thresholds = [float(t) for t in re.findall(r"histogram_quantile\(.*_seconds_bucket.*\)\s*>\s*([0-9.]+)", rules)]
    assert thresholds, "no latency alert found in the PrometheusRule"
    assert all(t in LATENCY_BUCKETS_S for t in thresholds)
