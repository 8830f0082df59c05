"""MTP speculative decoding on the nodes, through the disaggregated path, on the bundled reasoner."""

from __future__ import annotations

import random

import httpx
import pytest

from tests.e2e.cluster import RunningCluster, metric, settled
from tests.e2e.conftest import client
from tests.e2e.test_pd_identity import generate, settled_remote_kv_tokens


def spec_counter(cluster: RunningCluster, name: str) -> int:
    value = metric(cluster.url, f"splitmind_spec_{name}_tokens_total", worker="decode-0")
    assert value is not None, f"splitmind_spec_{name}_tokens_total missing"
    return int(value)


def settled_spec_counters(cluster: RunningCluster, drafted_before: int) -> tuple[int, int]:
    """(drafted, accepted) once they include the last request, which drafted."""
    return settled(lambda: (spec_counter(cluster, "draft"), spec_counter(cluster, "accepted")),
                   lambda now: now[0] > drafted_before)


@pytest.mark.parametrize("length", [40, 200])
def test_mtp_decode_after_kv_transfer_matches_colocated(reasoner_cluster: RunningCluster, length: int) -> None:
    rng = random.Random(length)
    prompt = [rng.randrange(3, 250) for _ in range(length)]
    drafts_before = spec_counter(reasoner_cluster, "draft")
    kv_before = settled_remote_kv_tokens(reasoner_cluster)
    disagg, resp = generate(reasoner_cluster, prompt, "disaggregated")
    assert resp.headers["x-splitmind-prefill"] == "prefill-0"
    assert settled_remote_kv_tokens(reasoner_cluster) - kv_before == length
    colocated, _ = generate(reasoner_cluster, prompt, "colocated")
    assert disagg == colocated
    assert spec_counter(reasoner_cluster, "draft") > drafts_before, "decode should have drafted with MTP"


def test_operators_see_mtp_on_both_roles(reasoner_cluster: RunningCluster) -> None:
    workers = {w["id"]: w for w in httpx.get(reasoner_cluster.url + "/admin/workers").json()}
    assert workers["decode-0"]["mtp_tokens"] == 1
    assert workers["prefill-0"]["mtp_tokens"] == 1, "NIXL needs the same speculative method on both roles"
    assert "MTP speculative tokens: 1" in reasoner_cluster.node_log("decode-0")


def test_models_without_mtp_layers_run_without_it(scripted_cluster: RunningCluster) -> None:
    workers = httpx.get(scripted_cluster.url + "/admin/workers").json()
    assert {w["mtp_tokens"] for w in workers} == {0}
    assert client(scripted_cluster).models.list().data
