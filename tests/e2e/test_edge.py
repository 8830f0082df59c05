"""The hardened edge on a real cluster: a second gateway with API keys in front of the
scripted cluster's nodes (several gateways share workers), the attacks of issue #11, a client
gone before its first token, and a SIGTERM that lets open streams finish.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from tests.e2e.cluster import RunningCluster
from tests.e2e.conftest import client
from tests.e2e.gateway import Gateway
from tests.e2e.test_disconnect import busy_workers, wait_idle

API_KEY, ADMIN_KEY = "sk-edge-api-key", "sk-edge-admin-key"
CHAT = [{"role": "user", "content": "What is 12+30?"}]
# Rendered, this would run 10^8 loop steps in the gateway (the unguarded gateway took 1.1 s for
# 3000x3000): a gateway that ran it could not answer in time.
HOSTILE_TEMPLATE = "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}"


@pytest.fixture(scope="module")
def keyed(scripted_cluster: RunningCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway(scripted_cluster, tmp_path_factory.mktemp("edge") / "gateway.log",
                      {"SPLITMIND_API_KEY": f"sk-other,{API_KEY}", "SPLITMIND_ADMIN_KEY": ADMIN_KEY})
    yield gateway
    gateway.stop()
    assert API_KEY not in gateway.log.read_text() and ADMIN_KEY not in gateway.log.read_text()


def openai_client(gateway: Gateway, key: str) -> OpenAI:
    return OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=60)


def test_keys_missing_wrong_and_right(keyed: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai_client(keyed, "sk-wrong").chat.completions.create(model="model", messages=CHAT, max_tokens=8)
    r = httpx.post(keyed.url + "/v1/chat/completions", json={"model": "model", "messages": CHAT})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    good = openai_client(keyed, API_KEY)
    reply = good.chat.completions.create(model="model", messages=CHAT, max_tokens=64)  # default temperature 1.0
    assert reply.choices[0].message.content or getattr(reply.choices[0].message, "reasoning_content", None)
    chunks = list(good.chat.completions.create(model="model", messages=CHAT, max_tokens=64, temperature=0,
                                               stream=True))
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_admin_endpoints_need_the_admin_key(keyed: Gateway) -> None:
    assert httpx.get(keyed.url + "/admin/workers", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 403
    r = httpx.get(keyed.url + "/admin/workers", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200 and {w["state"] for w in r.json()} == {"ready"}
    assert httpx.get(keyed.url + "/health").status_code == 200  # probes need no key


def test_a_template_attack_is_refused_at_once_while_streams_keep_flowing(keyed: Gateway) -> None:
    """Bug: `chat_template_kwargs.chat_template` ran a client's Jinja on the event loop; every
    stream stalled while it ran. Fix: only the template's own switches are accepted; the
    request is refused before anything is rendered."""
    gaps: list[float] = []

    def stream() -> None:
        last = time.monotonic()
        for _ in openai_client(keyed, API_KEY).chat.completions.create(
                model="model", messages=CHAT, max_tokens=400, temperature=0, stream=True,
                extra_body={"ignore_eos": True}):
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    streaming = threading.Thread(target=stream)
    streaming.start()
    try:
        for _ in range(10):
            t0 = time.monotonic()
            r = httpx.post(keyed.url + "/v1/chat/completions", timeout=30,
                           headers={"Authorization": f"Bearer {API_KEY}"}, json={"model": "model", "messages": CHAT,
                                 "chat_template_kwargs": {"chat_template": HOSTILE_TEMPLATE}})
            assert r.status_code == 400 and r.json()["error"]["param"] == "chat_template_kwargs.chat_template"
            assert time.monotonic() - t0 < 1.0
    finally:
        streaming.join(120)
    assert len(gaps) > 100 and max(gaps[1:]) < 1.0, max(gaps[1:])


@pytest.mark.parametrize("field", [
    {"seed": 2**64}, {"seed": -(2**63) - 1}, {"top_k": 10**30}, {"stop_token_ids": [10**20]}, {"max_tokens": 10**30},
    {"logit_bias": {"99999999": 1}}, {"n": 10**6}, {"temperature": 1e308}, {"top_logprobs": 10**9, "logprobs": True},
])
def test_huge_integers_are_400_and_leave_nothing_behind(scripted_cluster: RunningCluster, field: dict[str, object]
                                                        ) -> None:
    """Bug: a seed of 2**64 passed validation, then the wire encoder raised after the stream was
    registered: a plain-text 500, and the worker's load inflated for good. Fix: every integer
    is bounded to the engine's range, and all validation ends before any state exists."""
    for stream in (False, True):
        r = httpx.post(scripted_cluster.url + "/v1/chat/completions", timeout=30,
                       json={"model": "model", "messages": CHAT, "stream": stream, **field})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["message"]
    assert wait_idle(scripted_cluster, 2.0) <= 2.0


def test_a_client_gone_before_its_first_token_is_aborted_everywhere(scripted_cluster: RunningCluster) -> None:
    """Bug: a streaming client that left before its first token was noticed only when that token
    came: a request queued behind others kept its place (and later ran) for nobody. Fix: the
    disconnect is watched from the moment the request arrives. One request of n=32 samples fills
    the decode node (max_num_seqs 32), so the next one waits in its queue, with no first token,
    when its client leaves."""
    wait_idle(scripted_cluster, 10)
    colocated = {"x-splitmind-route": "colocated"}
    filler = client(scripted_cluster).chat.completions.create(
        model="model", messages=CHAT, n=32, max_tokens=1500, stream=True, extra_headers=colocated,
        extra_body={"ignore_eos": True})
    try:
        next(iter(filler))
        with pytest.raises(httpx.TimeoutException):
            httpx.post(scripted_cluster.url + "/v1/chat/completions", headers=colocated, timeout=1.5, json={
                "model": "model", "messages": CHAT, "max_tokens": 50, "stream": True})
        decode = [w for w in busy_workers(scripted_cluster) if w["role"] == "decode"]
        assert decode and decode[0]["running_requests"] == 32, decode  # the filler still runs...
        deadline = time.monotonic() + 3
        while True:  # ...and the request that waited behind it is gone
            (decode,) = [w for w in httpx.get(scripted_cluster.url + "/admin/workers").json() if w["role"] == "decode"]
            if decode["waiting_requests"] == 0 and decode["open_streams"] == 32:
                break
            assert time.monotonic() < deadline, decode
            time.sleep(0.1)
    finally:
        filler.close()
    assert wait_idle(scripted_cluster, 5.0) <= 5.0


def test_sigterm_lets_open_streams_finish(scripted_cluster: RunningCluster, tmp_path: Path) -> None:
    """A gateway told to stop (a rolling update) takes no new connection but lets the streams it
    has finish, within `drain_s`."""
    gateway = Gateway(scripted_cluster, tmp_path / "gateway.log", {}, drain_s=60)
    events: list[str] = []

    def stream() -> None:
        with httpx.stream("POST", gateway.url + "/v1/chat/completions", timeout=60, json={
                "model": "model", "messages": CHAT, "max_tokens": 600, "temperature": 0, "stream": True,
                "ignore_eos": True}) as r:
            events.extend(line for line in r.iter_lines() if line.startswith("data: "))

    streaming = threading.Thread(target=stream)
    streaming.start()
    try:
        deadline = time.monotonic() + 30
        while len(events) < 3 and not busy_workers(scripted_cluster):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        gateway.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.HTTPError):
            httpx.post(gateway.url + "/v1/chat/completions", timeout=5, json={"model": "model", "messages": CHAT})
        streaming.join(90)
        assert events[-1] == "data: [DONE]"
        last = json.loads(events[-2].removeprefix("data: "))
        assert last["choices"][0]["finish_reason"] == "length", last
        assert gateway.proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it drained on
    finally:
        gateway.stop()


def test_the_shared_cluster_still_serves(scripted_cluster: RunningCluster) -> None:
    reply = client(scripted_cluster).chat.completions.create(model="model", messages=CHAT, max_tokens=32)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert not busy_workers(scripted_cluster) or wait_idle(scripted_cluster, 5.0) <= 5.0
