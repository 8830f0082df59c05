"""The gateway serves the chat page: at `/`, open while `/v1` needs a key (the page asks for the
key itself), with a Content-Security-Policy, and only the files of its static folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import Keys
from api.ui import STATIC, vendored
from models.test_checkpoints import CheckpointSpec, build_checkpoint
from splitmind.config import GatewayConfig, GatewayTuning
from tests.e2e.gateway import absent_decode_worker


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    model = build_checkpoint(tmp_path_factory.mktemp("m") / "model", CheckpointSpec(weights="scripted"))
    config = GatewayConfig(model=str(Path(model)), served_model_name="model", host="127.0.0.1", port=0,
                           workers=(absent_decode_worker(),), tuning=GatewayTuning(reasoning="hidden"))
    with TestClient(create_app(config, Keys.of(["sk-page"]))) as client:
        yield client


def test_page_is_open_and_locked_down(gateway: TestClient) -> None:
    r = gateway.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/app.js">' in r.text
    csp = r.headers["content-security-policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-request-id"]


@pytest.mark.parametrize("asset", ["app.js", "controls.js", "sse.js", "markdown.js", "style.css"])
def test_assets_are_served_open(gateway: TestClient, asset: str) -> None:
    r = gateway.get(f"/ui/{asset}")
    assert r.status_code == 200 and r.content == (STATIC / asset).read_bytes()
    assert r.headers["x-content-type-options"] == "nosniff"
    expected = "text/css" if asset.endswith(".css") else "javascript"
    assert expected in r.headers["content-type"]


def test_vendored_libraries_are_there() -> None:
    """scripts/setup.sh vendors them from the npm registry; without them answers show as plain text."""
    assert vendored(), "run ./scripts/setup.sh (scripts/vendor_ui.sh) to vendor marked and DOMPurify"


def test_the_api_still_needs_the_key(gateway: TestClient) -> None:
    assert gateway.get("/v1/models").status_code == 401
    assert gateway.get("/v1/models", headers={"authorization": "Bearer sk-page"}).status_code == 200


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/%2e%2e/__init__.py", "/ui/..%2f__init__.py", "/ui/"])
def test_nothing_outside_the_static_folder(gateway: TestClient, path: str) -> None:
    r = gateway.get(path)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text


def test_models_card_tells_the_page_what_the_controls_may_send(gateway: TestClient) -> None:
    (card,) = gateway.get("/v1/models", headers={"authorization": "Bearer sk-page"}).json()["data"]
    assert card["reasoning"]["thinks"] is True  # the scripted model has think tokens
    assert card["reasoning"]["visibility"] == "hidden"
    assert set(card["reasoning"]["effort_budgets"]) == {"minimal", "low", "medium", "high"}
