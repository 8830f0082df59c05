"""A client that goes away mid-stream has its request aborted on every node that holds it."""

from __future__ import annotations

import time

import httpx

from tests.e2e.cluster import RunningCluster
from tests.e2e.conftest import client


def busy_workers(cluster: RunningCluster) -> list[dict[str, object]]:
    workers = httpx.get(cluster.url + "/admin/workers").json()
    return [w for w in workers if w["running_requests"] or w["waiting_requests"] or w["open_streams"]]


def wait_idle(cluster: RunningCluster, limit_s: float) -> float:
    t0 = time.monotonic()
    while busy_workers(cluster):
        assert time.monotonic() - t0 < limit_s, busy_workers(cluster)
        time.sleep(0.1)
    return time.monotonic() - t0


def test_streaming_client_disconnect_aborts_everywhere(scripted_cluster: RunningCluster) -> None:
    wait_idle(scripted_cluster, 10)
    stream = client(scripted_cluster).chat.completions.create(
        model="model", messages=[{"role": "user", "content": "go on"}], temperature=0, stream=True,
        max_tokens=1900, extra_body={"ignore_eos": True})
    for i, _ in enumerate(stream):
        if i == 20:
            break
    assert busy_workers(scripted_cluster), "the request should still be decoding when the client leaves"
    stream.close()
    assert wait_idle(scripted_cluster, 2.0) <= 2.0


def test_non_streaming_client_disconnect_aborts_everywhere(scripted_cluster: RunningCluster) -> None:
    wait_idle(scripted_cluster, 10)
    body = {"model": "model", "messages": [{"role": "user", "content": "go on"}], "temperature": 0,
            "max_tokens": 1900, "ignore_eos": True}
    try:
        httpx.post(scripted_cluster.url + "/v1/chat/completions", json=body, timeout=1.5)
    except httpx.TimeoutException:
        pass
    else:
        raise AssertionError("the request should outlast the client's 1.5 s timeout")
    assert wait_idle(scripted_cluster, 2.0) <= 2.0


def test_leaving_a_stream_of_n_choices_aborts_every_sample(scripted_cluster: RunningCluster) -> None:
    wait_idle(scripted_cluster, 10)
    stream = client(scripted_cluster).chat.completions.create(
        model="model", messages=[{"role": "user", "content": "go on"}], n=4, stream=True, max_tokens=1900,
        extra_body={"ignore_eos": True})
    seen: set[int] = set()
    for chunk in stream:
        seen.update(c.index for c in chunk.choices if c.delta.content or c.delta.model_extra)
        if len(seen) == 4:
            break
    workers = {w["id"]: w for w in busy_workers(scripted_cluster)}
    assert workers["decode-0"]["open_streams"] == 4, "every choice is decoding when the client leaves"
    stream.close()
    assert wait_idle(scripted_cluster, 2.0) <= 2.0
