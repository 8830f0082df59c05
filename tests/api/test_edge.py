"""The gateway's edge with the real app and no worker answering: keys, body cap, per-key
limits, the catch-all, hostile JSON. Each attack from issue #11 that needs no engine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import Keys, keys_from_environment
from models.test_checkpoints import CheckpointSpec, build_checkpoint
from splitmind.config import GatewayConfig, GatewayTuning, WorkerAddress
from splitmind.launcher import free_port
from splitmind.protocol import Role

API_KEY, ADMIN_KEY = "sk-test-api", "sk-test-admin"
CHAT = {"model": "model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("m") / "model", CheckpointSpec(weights="scripted"))


def make_app(model_dir: Path, keys: Keys | None = None, **tuning: object) -> FastAPI:
    silent = [WorkerAddress("decode-0", Role.DECODE, f"tcp://127.0.0.1:{free_port('127.0.0.1')}",
                            f"tcp://127.0.0.1:{free_port('127.0.0.1')}")]
    config = GatewayConfig(model=str(model_dir), served_model_name="model", host="127.0.0.1", port=0,
                           workers=tuple(silent), tuning=GatewayTuning(**tuning))  # type: ignore[arg-type]
    return create_app(config, keys)


@pytest.fixture(scope="module")
def keyed(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(make_app(model_dir, Keys.of([API_KEY], [ADMIN_KEY]), metrics_access="admin_key",
                             max_body_bytes=64 * 1024)) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_request_without_a_key_is_401_in_openai_shape(keyed: TestClient) -> None:
    r = keyed.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_api_key"
    assert r.headers["www-authenticate"] == "Bearer" and r.headers["x-request-id"]


def test_a_wrong_key_is_401(keyed: TestClient) -> None:
    for header in (bearer("sk-wrong"), {"Authorization": API_KEY}, {"Authorization": "Basic " + API_KEY}):
        r = keyed.post("/v1/chat/completions", json=CHAT, headers=header)
        assert r.status_code == 401, header
        assert API_KEY not in r.text


def test_the_right_key_passes_the_edge(keyed: TestClient) -> None:
    """Past the edge, the request meets the missing worker: 503, not 401."""
    assert keyed.post("/v1/chat/completions", json=CHAT, headers=bearer(API_KEY)).status_code == 503
    assert keyed.post("/v1/chat/completions", json=CHAT, headers=bearer(ADMIN_KEY)).status_code == 503
    assert keyed.get("/v1/models", headers=bearer(API_KEY)).status_code == 200


def test_admin_endpoints_need_the_admin_key(keyed: TestClient) -> None:
    assert keyed.get("/admin/workers").status_code == 401
    r = keyed.get("/admin/workers", headers=bearer(API_KEY))
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_key_required"
    assert keyed.get("/admin/workers", headers=bearer(ADMIN_KEY)).status_code == 200


def test_metrics_follow_their_access_setting(keyed: TestClient) -> None:
    assert keyed.get("/metrics", headers=bearer(API_KEY)).status_code == 403
    r = keyed.get("/metrics", headers=bearer(ADMIN_KEY))
    assert r.status_code == 200 and 'splitmind_edge_rejections_total{reason="unauthorized"}' in r.text


def test_health_and_the_schema_stay_open(keyed: TestClient) -> None:
    assert keyed.get("/health").status_code == 503  # open, and honest: no worker
    assert keyed.get("/openapi.json").status_code == 200


def test_without_an_admin_key_admin_endpoints_are_closed(model_dir: Path) -> None:
    with TestClient(make_app(model_dir, Keys.of([API_KEY]))) as client:
        assert client.get("/admin/workers", headers=bearer(API_KEY)).status_code == 403
        assert client.get("/metrics").status_code == 200  # open by default


def test_keys_come_from_the_environment_and_files(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("# team keys\nsk-file-1\nsk-file-2\n")
    keys = keys_from_environment({"SPLITMIND_API_KEY": "sk-a, sk-b", "SPLITMIND_API_KEY_FILE": str(key_file),
                                  "SPLITMIND_ADMIN_KEY": "sk-admin"})
    for key in ("sk-a", "sk-b", "sk-file-1", "sk-file-2"):
        assert keys.check(__import__("api.auth").auth.Access.API, f"Bearer {key}") is not None
    assert len(keys.api) == 4 and len(keys.admin) == 1
    assert not keys_from_environment({}).enabled


def test_a_body_over_the_cap_is_413(keyed: TestClient) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 100_000}]}
    r = keyed.post("/v1/chat/completions", json=big, headers=bearer(API_KEY))
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_a_chunked_body_over_the_cap_is_413(keyed: TestClient) -> None:
    """No Content-Length: the cap applies as the body arrives."""
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "model", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}]}'
    r = keyed.post("/v1/chat/completions", content=chunks(), headers=bearer(API_KEY))
    assert r.status_code == 413


@pytest.mark.parametrize("body", [
    b"9" * 5000,  # Python's int parser refuses >4,300 digits with a ValueError
    b"[" * 100_000 + b"]" * 100_000,  # RecursionError in json
    b'{"model": "model", "messages": [{"role": "user", "content": "\\ud800"}]}',  # lone surrogate
    b'{"model": "model", "prompt": "hi", "logit_bias": {"' + b"1" * 5000 + b'": 1}}',
    b'{"model": "model", "messages": [{"role": "user", "content": "hi"}], "metadata": {"a": {"b": 1}}}',
    b"\xff\xfe",
])
def test_hostile_json_is_a_400(model_dir: Path, body: bytes) -> None:
    """Bug: a 5,000-digit number or 100,000 nested brackets raised ValueError/RecursionError past
    the JSON check: a plain-text 500. Fix: every parse failure is a 400; the model check and the
    deployment check come after it."""
    with TestClient(make_app(model_dir)) as client:
        path = "/v1/completions" if b"prompt" in body else "/v1/chat/completions"
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code in (400, 503), r.text  # 503: valid, and no worker to serve it
        assert "error" in r.json()


def test_a_template_from_the_request_is_refused_at_once(model_dir: Path) -> None:
    """Bug: chat_template_kwargs went straight into apply_chat_template, which takes
    `chat_template`: any client ran its own Jinja on the event loop (a 3000x3000 loop blocked it
    1.1 s). Fix: only the switches the model's template reads (`enable_thinking`), with scalar
    values; the request is refused before anything is rendered."""
    loop = "{% for i in range(3000) %}{% for j in range(3000) %}x{% endfor %}{% endfor %}"
    with TestClient(make_app(model_dir)) as client:
        for kwargs in ({"chat_template": loop}, {"chat_template": "{{ messages }}"}, {"tools": "x"},
                       {"enable_thinking": {"nested": 1}}, {"unknown_switch": True}):
            r = client.post("/v1/chat/completions", json={**CHAT, "chat_template_kwargs": kwargs})
            assert r.status_code == 400, (kwargs, r.text)
            assert r.json()["error"]["param"].startswith("chat_template_kwargs"), r.text
        ok = client.post("/v1/chat/completions", json={**CHAT, "chat_template_kwargs": {"enable_thinking": False}})
        assert ok.status_code == 503  # accepted; no worker


def test_a_prompt_over_the_character_limit_is_400(model_dir: Path) -> None:
    with TestClient(make_app(model_dir, max_prompt_chars=1000)) as client:
        r = client.post("/v1/completions", json={"model": "model", "prompt": "x" * 1001})
        assert r.status_code == 400 and r.json()["error"]["code"] == "prompt_too_long"


def test_per_key_rate_limit_is_429_with_retry_after(model_dir: Path) -> None:
    with TestClient(make_app(model_dir, Keys.of([API_KEY, "sk-other"]), key_requests_per_s=0.5, key_burst=2)) as c:
        statuses = [c.post("/v1/chat/completions", json=CHAT, headers=bearer(API_KEY)).status_code for _ in range(3)]
        assert statuses == [503, 503, 429]
        r = c.post("/v1/chat/completions", json=CHAT, headers=bearer(API_KEY))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert c.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-other")).status_code == 503


def test_an_unexpected_error_is_a_500_in_openai_shape(model_dir: Path) -> None:
    """Bug: any exception no handler mapped became Starlette's plain-text 500, without the
    OpenAI error shape or x-request-id. Fix: the edge's catch-all."""
    app = make_app(model_dir)

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/v1/boom", headers={"x-request-id": "abc-123"})
        assert r.status_code == 500
        assert r.headers["x-request-id"] == "abc-123"
        assert r.json()["error"]["type"] == "internal_error"
        assert "secret internals" not in r.text and "Traceback" not in r.text


def test_a_request_id_that_could_break_a_header_is_replaced(model_dir: Path) -> None:
    with TestClient(make_app(model_dir)) as client:
        r = client.get("/health", headers={"x-request-id": "a b\tc"})
        assert r.headers["x-request-id"] != "a b\tc" and len(r.headers["x-request-id"]) == 32


def test_the_schema_describes_the_request_bodies(model_dir: Path) -> None:
    with TestClient(make_app(model_dir)) as client:
        schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    chat = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert chat["properties"]["messages"]["maxItems"] == 4096
    assert "ChatMessage" in json.dumps(schema["components"]["schemas"])


def test_list_bounds_do_not_bound_strings(model_dir: Path) -> None:
    """A bound on a list of content parts must not cap a message's text at 1,024 characters
    (a first draft of this change did: a 15,000-character message got a 400)."""
    with TestClient(make_app(model_dir)) as client:
        message = {"role": "user", "content": "w" * 15000}
        long = client.post("/v1/chat/completions", json={**CHAT, "messages": [message]})
        assert long.status_code == 503  # accepted; no worker
        parts = [{"type": "text", "text": "a"}] * 1025
        many = client.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": parts}]})
        assert many.status_code == 400


def test_cors_is_off_unless_origins_are_configured(model_dir: Path) -> None:
    preflight = {"Origin": "https://chat.example.com", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    with TestClient(make_app(model_dir)) as client:
        r = client.options("/v1/chat/completions", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    with TestClient(make_app(model_dir, Keys.of([API_KEY]), cors_origins=("https://chat.example.com",))) as client:
        r = client.options("/v1/chat/completions", headers=preflight)  # a preflight carries no key
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://chat.example.com"
        other = client.options("/v1/chat/completions", headers={**preflight, "Origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"
        r = client.post("/v1/chat/completions", json=CHAT, headers={"Origin": "https://chat.example.com"})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "https://chat.example.com"


def test_unknown_paths_and_methods_get_openai_errors(model_dir: Path) -> None:
    """Bug: Starlette's own 404 and 405 answered `{"detail": ...}` (the fuzzer sent DELETE,
    PUT, TRACE... to every path: 28 such answers). Fix: one handler maps them to OpenAI's shape."""
    with TestClient(make_app(model_dir)) as client:
        r = client.delete("/v1/models")
        assert r.status_code == 405 and r.headers["allow"] == "GET"
        assert r.json()["error"]["code"] == "method_not_allowed" and r.headers["x-request-id"]
        r = client.get("/v1/chat/completions")
        assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
        r = client.get("/nope")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_one_access_line_per_api_request_and_none_for_ops(keyed: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """api/access_log.py: a refused request is logged with its status and no route; ops are not."""
    with caplog.at_level("INFO", logger="splitmind.access"):
        keyed.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": "access-1"})
        keyed.get("/health")
    lines = [r.getMessage() for r in caplog.records if r.name == "splitmind.access"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("access id=access-1 POST /v1/chat/completions status=401 route=- duration=")
