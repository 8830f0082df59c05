"""Reasoning split on other templates, colocated (`--prefill 0`), and the stop promise."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from models.test_checkpoints import CheckpointSpec, build_checkpoint
from tests.e2e.cluster import RunningCluster
from tests.e2e.conftest import BASE_CONFIG, client

MESSAGES = [{"role": "user", "content": "What is 6*7?"}]


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningCluster]]:
    """Two colocated clusters (one decode node each) on models whose template leaves `<think>` to
    the model: "plain" has think tokens, "bare" has none. Both start at once: a node's start is
    mostly one core's imports, so two single-node starts take about as long as one."""
    started: dict[str, RunningCluster] = {}
    try:
        for name, think in (("plain", True), ("bare", False)):
            tmp = tmp_path_factory.mktemp(name)
            model = build_checkpoint(tmp / "model", CheckpointSpec(weights="scripted", template="plain",
                                                                  think_tokens=think))
            started[name] = RunningCluster(model, tmp, prefill=0, config=BASE_CONFIG)
        for cluster in started.values():
            cluster.wait_ready()
        yield started
    finally:
        for cluster in started.values():
            if cluster.proc.poll() is None:
                cluster.stop()


@pytest.fixture
def plain_cluster(clusters: dict[str, RunningCluster]) -> RunningCluster:
    return clusters["plain"]


def test_model_that_opens_its_own_think_block(plain_cluster: RunningCluster) -> None:
    raw = client(plain_cluster).chat.completions.with_raw_response.create(model="model", messages=MESSAGES,
                                                                         temperature=0)
    msg = raw.parse().choices[0].message
    assert (msg.model_extra or {})["reasoning_content"] == " Let me think carefully."
    assert msg.content == " The answer is 42"
    assert raw.http_response.headers["x-splitmind-prefill"] == "none"
    assert raw.http_response.headers["x-splitmind-decode"] == "decode-0"


def test_streamed_split_matches(plain_cluster: RunningCluster) -> None:
    reasoning, content = "", ""
    for chunk in client(plain_cluster).chat.completions.create(model="model", messages=MESSAGES, temperature=0,
                                                               stream=True):
        for choice in chunk.choices:
            reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            content += choice.delta.content or ""
    assert (reasoning, content) == (" Let me think carefully.", " The answer is 42")


def test_sigterm_stops_every_process_within_20s(plain_cluster: RunningCluster) -> None:
    assert plain_cluster.descendants, "the launcher should have started processes"
    elapsed = plain_cluster.stop()  # raises if any process is left
    assert elapsed < 20.0
    with pytest.raises(httpx.ConnectError):
        httpx.get(plain_cluster.url + "/health", timeout=2)


def test_model_without_reasoning(clusters: dict[str, RunningCluster]) -> None:
    r = client(clusters["bare"]).chat.completions.create(model="model", messages=MESSAGES, temperature=0)
    msg = r.choices[0].message
    assert msg.content == " The answer is 42"
    assert (msg.model_extra or {}).get("reasoning_content") is None
    assert r.usage.completion_tokens_details.reasoning_tokens == 0  # type: ignore[union-attr]
