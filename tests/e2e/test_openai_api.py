"""The OpenAI-compatible API through the real disaggregated path, with the official client.

The scripted model's greedy reply is known exactly: it thinks " Let me think carefully.",
closes the think block, and answers " The answer is 42".
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.e2e.cluster import RunningCluster, metric, settled
from tests.e2e.conftest import client

REASONING = " Let me think carefully."
ANSWER = " The answer is 42"
MESSAGES = [{"role": "user", "content": "What is 6*7?"}]


def test_chat_non_streaming_splits_reasoning_from_answer(scripted_cluster: RunningCluster) -> None:
    raw = client(scripted_cluster).chat.completions.with_raw_response.create(
        model="model", messages=MESSAGES, temperature=0)
    r = raw.parse()
    msg = r.choices[0].message
    assert msg.content == ANSWER
    extra = msg.model_extra or {}
    assert extra["reasoning_content"] == REASONING
    assert extra["reasoning"] == REASONING
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.completion_tokens_details is not None
    # reasoning tokens: the reasoning text plus the closing marker
    assert r.usage.completion_tokens_details.reasoning_tokens == r.usage.completion_tokens - 6
    h = raw.http_response.headers
    assert (h["x-splitmind-prefill"], h["x-splitmind-decode"]) == ("prefill-0", "decode-0")
    assert h["x-request-id"]


def test_chat_streaming_fields_and_usage(scripted_cluster: RunningCluster) -> None:
    stream = client(scripted_cluster).chat.completions.create(
        model="model", messages=MESSAGES, temperature=0, stream=True, stream_options={"include_usage": True})
    reasoning, content, finish, usage = [], [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            if extra.get("reasoning_content"):
                assert extra["reasoning"] == extra["reasoning_content"]
                assert not choice.delta.content, "reasoning and answer travel in separate chunks"
                reasoning.append(extra["reasoning_content"])
            if choice.delta.content:
                content.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert "".join(reasoning) == REASONING
    assert "".join(content) == ANSWER
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens_details.reasoning_tokens > 0  # type: ignore[union-attr]


def test_stream_events_end_with_a_blank_line(scripted_cluster: RunningCluster) -> None:
    """Bug: sse-starlette framed each event with `\r\n` (its default, whatever the response's
    separator), so clients that split a stream on `\n\n`, as OpenAI and vLLM frame it, saw one
    event. Every event is one `data: ...` (or comment) line and a blank line."""
    with httpx.stream("POST", scripted_cluster.url + "/v1/chat/completions", timeout=60, json={
            "model": "model", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}) as r:
        body = r.read()
    assert b"\r" not in body
    events = body.decode().split("\n\n")
    assert events[-1] == "" and len(events) > 5
    assert all(e.startswith(("data: ", ": ")) and "\n" not in e for e in events[:-1]), events  # ": ping"
    assert events[-2] == "data: [DONE]"


def test_continuous_usage_in_every_chunk(scripted_cluster: RunningCluster) -> None:
    """vLLM's `continuous_usage_stats`: usage so far in every chunk (it was accepted and ignored)."""
    stream = client(scripted_cluster).chat.completions.create(
        model="model", messages=MESSAGES, temperature=0, stream=True,
        stream_options={"include_usage": True, "continuous_usage_stats": True})  # type: ignore[typeddict-unknown-key]
    counts = []
    for chunk in stream:
        assert chunk.usage is not None
        counts.append(chunk.usage.completion_tokens)
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] > 5


def test_thinking_off_gives_no_reasoning(scripted_cluster: RunningCluster) -> None:
    r = client(scripted_cluster).chat.completions.create(
        model="model", messages=MESSAGES, temperature=0, max_tokens=8,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    extra = r.choices[0].message.model_extra or {}
    assert extra.get("reasoning_content") is None
    assert r.usage.completion_tokens_details.reasoning_tokens == 0  # type: ignore[union-attr]
    assert r.choices[0].message.content


def test_completions_return_raw_text(scripted_cluster: RunningCluster) -> None:
    c = client(scripted_cluster)
    prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n"
    r = c.completions.create(model="model", prompt=prompt, temperature=0, max_tokens=64)
    assert r.choices[0].text == REASONING + "</think>" + ANSWER
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model="model", prompt=prompt, temperature=0, max_tokens=64, stream=True))
    assert streamed == r.choices[0].text


def test_max_tokens_cuts_inside_reasoning(scripted_cluster: RunningCluster) -> None:
    r = client(scripted_cluster).chat.completions.create(model="model", messages=MESSAGES, temperature=0,
                                                         max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == ""
    assert (r.choices[0].message.model_extra or {})["reasoning_content"] == " Let me think"


def test_max_tokens_one_is_served_by_prefill_alone(scripted_cluster: RunningCluster) -> None:
    r = client(scripted_cluster).completions.create(model="model", prompt="hello", temperature=0, max_tokens=1)
    assert r.usage.completion_tokens == 1 and r.choices[0].finish_reason == "length"  # type: ignore[union-attr]


def test_stop_string_applies_to_the_answer(scripted_cluster: RunningCluster) -> None:
    r = client(scripted_cluster).chat.completions.create(model="model", messages=MESSAGES, temperature=0,
                                                         stop=["answer", "think"])
    # "think" occurs in the reasoning and does not cut it; "answer" ends the reply
    assert (r.choices[0].message.model_extra or {})["reasoning_content"] == REASONING
    assert r.choices[0].message.content == " The "
    assert r.choices[0].finish_reason == "stop"


def test_sampling_parameters_pass_through(scripted_cluster: RunningCluster) -> None:
    c = client(scripted_cluster)
    kwargs = dict(model="model", prompt="hello there", max_tokens=12, temperature=1.0, top_p=0.9, seed=7,
                  extra_body={"top_k": 20, "ignore_eos": True})
    a = c.completions.create(**kwargs)  # type: ignore[call-overload]
    b = c.completions.create(**kwargs)  # type: ignore[call-overload]
    assert a.choices[0].text == b.choices[0].text, "same seed, same text"


def test_sixteen_concurrent_streams(scripted_cluster: RunningCluster) -> None:
    c = client(scripted_cluster)

    def one(_: int) -> tuple[str, str]:
        reasoning, content = [], []
        for chunk in c.chat.completions.create(model="model", messages=MESSAGES, temperature=0, stream=True):
            for choice in chunk.choices:
                reasoning.append((choice.delta.model_extra or {}).get("reasoning_content") or "")
                content.append(choice.delta.content or "")
        return "".join(reasoning), "".join(content)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    assert results == [(REASONING, ANSWER)] * 16


def test_models_health_admin_metrics(scripted_cluster: RunningCluster) -> None:
    client(scripted_cluster).completions.create(model="model", prompt="6*7?", max_tokens=4,
                                               extra_headers={"x-splitmind-route": "disaggregated"})
    models = client(scripted_cluster).models.list()
    assert [m.id for m in models.data] == ["model"]
    health = httpx.get(scripted_cluster.url + "/health")
    assert health.status_code == 200 and health.headers["x-request-id"]
    workers = {w["id"]: w for w in httpx.get(scripted_cluster.url + "/admin/workers").json()}
    assert set(workers) == {"prefill-0", "decode-0"}
    for w in workers.values():
        assert w["state"] == "ready" and w["pid"] > 0 and w["address"].startswith("tcp://")
        assert {"running_requests", "waiting_requests"} <= set(w)
    metrics = httpx.get(scripted_cluster.url + "/metrics").text
    assert re.search(r'^splitmind_requests_total\{route="disaggregated"\} [1-9]', metrics, re.M)
    for name in ("splitmind_ttft_seconds_bucket", "splitmind_itl_seconds_bucket",
                 "splitmind_kv_transfer_seconds_bucket", "splitmind_decode_remote_kv_tokens_total"):
        assert name in metrics, name
    # every read of a stream's output on a worker is timed in the gateway (at least the prefill's
    # and the decode's first reads of the request above)
    waits = metric(scripted_cluster.url, "splitmind_output_wait_seconds_count")
    assert waits is not None and waits >= 2, waits
    transfers = settled(lambda: metric(scripted_cluster.url, "splitmind_kv_transfer_seconds_count", worker="decode-0"),
                        lambda n: bool(n))  # from the decode node's heartbeat
    assert transfers is not None and transfers >= 1


PHASES = ("queue", "prefill", "kv_transfer", "first_decode_step")


def _phases(url: str, suffix: str) -> dict[str, float]:
    return {p: metric(url, f"splitmind_ttft_phase_seconds_{suffix}", phase=p) or 0.0 for p in PHASES}


def test_time_before_the_tokens_is_split_by_phase(scripted_cluster: RunningCluster) -> None:
    """`splitmind_ttft_phase_seconds{phase}`: vLLM's own request timings from the engines. A
    disaggregated request has all four phases; a colocated one only queue and prefill. The
    decode node's two phases fit inside the gateway's round trip to its first token."""
    url = scripted_cluster.url
    c = client(scripted_cluster)
    for route, stream, temperature in (("disaggregated", True, None), ("colocated", False, 0.0)):
        count, total = _phases(url, "count"), _phases(url, "sum")
        decode_first = metric(url, "splitmind_decode_first_token_seconds_sum") or 0.0
        sampled = {} if temperature is None else {"temperature": temperature}  # None: the default, 1.0
        out = c.chat.completions.create(model="model", messages=MESSAGES, stream=stream, max_tokens=8,
                                        extra_headers={"x-splitmind-route": route}, **sampled)
        if stream:
            assert "".join((ch.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                           for ch in out if ch.choices)
        else:
            assert (out.choices[0].message.model_extra or {}).get("reasoning_content")
        grew = {p: _phases(url, "count")[p] - count[p] for p in PHASES}
        spent = {p: _phases(url, "sum")[p] - total[p] for p in PHASES}
        want = 1.0 if route == "disaggregated" else 0.0
        assert grew == {"queue": 1.0, "prefill": 1.0, "kv_transfer": want, "first_decode_step": want}, (route, grew)
        assert all(v >= 0.0 for v in spent.values()) and spent["prefill"] > 0.0, spent
        round_trip = (metric(url, "splitmind_decode_first_token_seconds_sum") or 0.0) - decode_first
        if route == "disaggregated":
            assert 0.0 < spent["kv_transfer"] + spent["first_decode_step"] <= round_trip, (spent, round_trip)


def test_client_request_ids_are_echoed_and_may_repeat(scripted_cluster: RunningCluster) -> None:
    """Bug: the client's x-request-id became the engine request id, so two concurrent requests
    with the same header collided on a node. Fix: echo it; use a fresh id internally."""
    c = client(scripted_cluster)

    def one(_: int) -> tuple[str, str | None]:
        raw = c.chat.completions.with_raw_response.create(
            model="model", messages=MESSAGES, temperature=0, extra_headers={"x-request-id": "same-id"})
        return raw.http_response.headers["x-request-id"], raw.parse().choices[0].message.content

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, range(4))) == [("same-id", ANSWER)] * 4
