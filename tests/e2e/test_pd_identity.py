"""Disaggregated greedy output is token-identical to colocated, and decode received the KV."""

from __future__ import annotations

import random

import httpx
import pytest

from tests.e2e.cluster import RunningCluster, metric, settled
from tests.e2e.conftest import client

# Around the CPU backend's 128-token KV block, and across several blocks.
PROMPT_LENGTHS = [3, 57, 127, 128, 129, 300, 700]


def remote_kv_tokens(cluster: RunningCluster) -> int:
    value = metric(cluster.url, "splitmind_decode_remote_kv_tokens_total", worker="decode-0")
    assert value is not None, "remote KV counter missing from /metrics"
    return int(value)


def settled_remote_kv_tokens(cluster: RunningCluster) -> int:
    return settled(lambda: remote_kv_tokens(cluster), lambda _: True)


def generate(cluster: RunningCluster, prompt: list[int], route: str) -> tuple[list[int], httpx.Response]:
    api = client(cluster)
    raw = api.completions.with_raw_response.create(
        model=api.models.list().data[0].id, prompt=prompt, max_tokens=24, temperature=0,
        extra_body={"ignore_eos": True, "return_token_ids": True},
        extra_headers={"x-splitmind-route": route},
    )
    body = raw.parse()
    token_ids = body.choices[0].model_extra["token_ids"]
    assert len(token_ids) == 24
    return token_ids, raw.http_response  # type: ignore[return-value]


@pytest.mark.parametrize("length", PROMPT_LENGTHS)
def test_disaggregated_matches_colocated(random_cluster: RunningCluster, length: int) -> None:
    disaggregated_matches_colocated(random_cluster, length)


def disaggregated_matches_colocated(pd_cluster: RunningCluster, length: int) -> None:
    """Also run on KV over ZMQ (tests/e2e/test_kv_over_zmq.py)."""
    rng = random.Random(length)
    prompt = [rng.randrange(3, 250) for _ in range(length)]

    before = settled_remote_kv_tokens(pd_cluster)
    disagg, resp = generate(pd_cluster, prompt, "disaggregated")
    assert resp.headers["x-splitmind-prefill"] == "prefill-0"
    assert resp.headers["x-splitmind-decode"] == "decode-0"
    received = settled_remote_kv_tokens(pd_cluster) - before
    assert received == length, "decode should receive the prompt's KV, not compute it"

    colocated, resp = generate(pd_cluster, prompt, "colocated")
    assert resp.headers["x-splitmind-prefill"] == "none"
    assert settled_remote_kv_tokens(pd_cluster) - before == length, "colocated must not pull KV"
    assert disagg == colocated
