"""The real gateway app with no worker answering: unavailable, said clearly, nothing hangs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from models.test_checkpoints import CheckpointSpec, build_checkpoint
from splitmind.config import GatewayConfig, GatewayTuning, WorkerAddress
from splitmind.launcher import free_port
from splitmind.protocol import Role


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    model = build_checkpoint(tmp_path_factory.mktemp("m") / "model", CheckpointSpec(weights="scripted"))
    silent = [WorkerAddress("decode-0", Role.DECODE, f"tcp://127.0.0.1:{free_port('127.0.0.1')}",
                            f"tcp://127.0.0.1:{free_port('127.0.0.1')}")]
    config = GatewayConfig(model=str(Path(model)), served_model_name="model", host="127.0.0.1", port=0,
                           workers=tuple(silent), tuning=GatewayTuning())
    with TestClient(create_app(config)) as client:
        yield client


def test_health_is_503_without_a_decode_worker(gateway: TestClient) -> None:
    r = gateway.get("/health")
    assert r.status_code == 503
    assert r.json()["decode_workers"] == 0
    assert r.headers["x-request-id"]


def test_requests_get_503_in_openai_shape(gateway: TestClient) -> None:
    r = gateway.post("/v1/chat/completions", json={"model": "model", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "service_unavailable"
    assert r.headers["x-splitmind-decode"] == "none"


def test_admin_shows_the_worker_as_starting(gateway: TestClient) -> None:
    (worker,) = gateway.get("/admin/workers").json()
    assert worker["id"] == "decode-0" and worker["state"] == "starting"


def test_client_errors_still_come_first(gateway: TestClient) -> None:
    """A bad request is the client's fault even when no worker is up: 4xx, not 503."""
    assert gateway.post("/v1/chat/completions", content=b"{nope").status_code == 400
    assert gateway.post("/v1/chat/completions", json={"model": "gpt-9", "messages": [
        {"role": "user", "content": "hi"}]}).status_code == 404
