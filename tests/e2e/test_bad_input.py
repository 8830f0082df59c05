"""A client's mistakes get a 4xx in OpenAI's error shape; nothing hangs, no 5xx."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.cluster import RunningCluster

GOOD_CHAT: dict[str, Any] = {"model": "model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
LONG_TEXT = "word " * 3000  # about 3000 tokens > max_model_len 2048

CASES: list[tuple[str, str, Any, int, str | None]] = [
    # (name, path, body (str = raw), status, code)
    ("malformed json", "/v1/chat/completions", '{"model": "model", "messages": [', 400, None),
    ("body not an object", "/v1/chat/completions", "[1, 2]", 400, None),
    ("messages wrong type", "/v1/chat/completions", {**GOOD_CHAT, "messages": "hi"}, 400, None),
    ("temperature wrong type", "/v1/chat/completions", {**GOOD_CHAT, "temperature": "hot"}, 400, None),
    ("empty messages", "/v1/chat/completions", {**GOOD_CHAT, "messages": []}, 400, None),
    ("negative max_tokens", "/v1/chat/completions", {**GOOD_CHAT, "max_tokens": -1}, 400, None),
    ("zero max_tokens", "/v1/completions", {"model": "model", "prompt": "x", "max_tokens": 0}, 400, None),
    ("unknown model", "/v1/chat/completions", {**GOOD_CHAT, "model": "gpt-9"}, 404, "model_not_found"),
    ("prompt too long", "/v1/chat/completions",
     {**GOOD_CHAT, "messages": [{"role": "user", "content": LONG_TEXT}]}, 400, "context_length_exceeded"),
    ("max_tokens past context", "/v1/completions", {"model": "model", "prompt": "x", "max_tokens": 5000},
     400, "context_length_exceeded"),
    ("store true", "/v1/chat/completions", {**GOOD_CHAT, "store": True}, 400, "unsupported_parameter"),
    ("n = 0", "/v1/chat/completions", {**GOOD_CHAT, "n": 0}, 400, None),
    ("n past its maximum", "/v1/chat/completions", {**GOOD_CHAT, "n": 65}, 400, None),
    ("best_of", "/v1/completions", {"model": "model", "prompt": "x", "best_of": 3}, 400, "unsupported_parameter"),
    ("top_logprobs without logprobs", "/v1/chat/completions", {**GOOD_CHAT, "top_logprobs": 2}, 400, None),
    ("top_logprobs past 20", "/v1/chat/completions", {**GOOD_CHAT, "logprobs": True, "top_logprobs": 21}, 400, None),
    ("completion logprobs past 20", "/v1/completions", {"model": "model", "prompt": "x", "logprobs": 21}, 400, None),
    ("seed past int64", "/v1/chat/completions", {**GOOD_CHAT, "seed": 2**64}, 400, None),
    ("top_k past the vocabulary", "/v1/chat/completions", {**GOOD_CHAT, "top_k": 10**6}, 400, None),
    ("stop_token_ids out of vocab", "/v1/chat/completions", {**GOOD_CHAT, "stop_token_ids": [10**9]}, 400, None),
    ("logit_bias key not a token id", "/v1/chat/completions", {**GOOD_CHAT, "logit_bias": {"x": 1}}, 400, None),
    ("logit_bias out of range", "/v1/chat/completions", {**GOOD_CHAT, "logit_bias": {"5": 101}}, 400, None),
    ("logit_bias token past the vocabulary", "/v1/chat/completions", {**GOOD_CHAT, "logit_bias": {"999999": 1}},
     400, None),
    ("tools", "/v1/chat/completions",
     {**GOOD_CHAT, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "unsupported_parameter"),
    ("unknown field", "/v1/chat/completions", {**GOOD_CHAT, "temprature": 0.5}, 400, None),
    ("missing model", "/v1/completions", {"prompt": "x"}, 400, None),
    ("bad role", "/v1/chat/completions", {**GOOD_CHAT, "messages": [{"role": "robot", "content": "x"}]}, 400, None),
    ("token id out of vocab", "/v1/completions", {"model": "model", "prompt": [1, 10**9]}, 400, None),
    ("empty prompt", "/v1/completions", {"model": "model", "prompt": ""}, 400, None),
    ("top_p out of range", "/v1/completions", {"model": "model", "prompt": "x", "top_p": 1.5}, 400, None),
    ("stream_options without stream", "/v1/chat/completions",
     {**GOOD_CHAT, "stream_options": {"include_usage": True}}, 400, None),
]


@pytest.mark.parametrize("name, path, body, status, code", CASES, ids=[c[0] for c in CASES])
def test_bad_input(scripted_cluster: RunningCluster, name: str, path: str, body: Any, status: int,
                   code: str | None) -> None:
    kwargs: dict[str, Any] = {"content": body} if isinstance(body, str) else {"json": body}
    r = httpx.post(scripted_cluster.url + path, headers={"content-type": "application/json"}, timeout=30, **kwargs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and err["type"] == "invalid_request_error"
    if code is not None:
        assert err["code"] == code
    assert r.headers["x-request-id"]
    assert r.headers["x-splitmind-decode"] == "none"


def test_the_server_still_serves_after_bad_input(scripted_cluster: RunningCluster) -> None:
    r = httpx.post(scripted_cluster.url + "/v1/chat/completions", json=GOOD_CHAT, timeout=30)
    assert r.status_code == 200
