"""`splitmind_request_errors_total{status}` counts the API's error responses (api/edge.py).

Bug: the counter was declared in api/metrics.py but nothing ever incremented it, so the
deployment's error-ratio alert (deploy/k8s/monitoring) could never fire. Fix: the edge counts
every /v1/ response with a status of 400 or more, and a stream's in-band error is counted where
it is sent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.auth import Keys
from models.test_checkpoints import CheckpointSpec, build_checkpoint
from tests.api.test_edge import CHAT, bearer, make_app


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("m") / "model", CheckpointSpec(weights="scripted"))


def errors(client: TestClient) -> dict[str, float]:
    text = client.get("/metrics").text
    found = re.findall(r'^splitmind_request_errors_total\{status="(\d+)"\} (\S+)$', text, re.M)
    return {status: float(value) for status, value in found}


def test_error_responses_are_counted_by_status(model_dir: Path) -> None:
    with TestClient(make_app(model_dir, Keys.of(["sk-a"], [])), raise_server_exceptions=False) as client:
        assert errors(client) == {}
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 401
        assert client.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a")).status_code == 503  # no node
        assert client.post("/v1/chat/completions", json={"model": "model"}, headers=bearer("sk-a")).status_code == 400
        assert client.get("/v1/models", headers=bearer("sk-a")).status_code == 200
        assert client.get("/health").status_code == 503  # an ops endpoint, not an API error
        assert errors(client) == {"401": 1.0, "503": 1.0, "400": 1.0}
