"""api/sse.py on its own, against a scripted ASGI server: what each way a stream ends leaves
behind. (The real app through real clients: tests/e2e/test_openai_api.py, test_slow_reader.py,
test_edge.py's drain.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from api.sse import RAW_SEND, SSEStream, comment, data


class Script:
    """A generator of events whose end the tests can see, and an ASGI server's two callables."""

    def __init__(self, events: list[bytes], *, then_wait: bool = False, block_send_after: int | None = None) -> None:
        self.events = events
        self.then_wait = then_wait
        self.block_send_after = block_send_after
        self.sent: list[dict[str, Any]] = []
        self.closed = False
        self.disconnect = asyncio.Event()

    async def generator(self) -> AsyncGenerator[bytes, None]:
        try:
            for e in self.events:
                yield e
            if self.then_wait:
                await asyncio.sleep(3600)
        finally:
            self.closed = True

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        bodies = [m for m in self.sent if m["type"] == "http.response.body"]
        if self.block_send_after is not None and len(bodies) > self.block_send_after:
            await asyncio.sleep(3600)  # the client's socket is full

    async def receive(self) -> dict[str, Any]:
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def _stream(script: Script, *, ping_s: float = 5.0, send_timeout_s: float = 5.0, drain_s: float = 5.0,
            shutting_down: Any = lambda: False) -> SSEStream:
    return SSEStream(script.generator(), ping_s=ping_s, send_timeout_s=send_timeout_s, drain_s=drain_s,
                     shutting_down=shutting_down)


def _run(stream: SSEStream, script: Script, scope: dict[str, Any] | None = None, limit_s: float = 10) -> None:
    asyncio.run(asyncio.wait_for(stream(scope or {"type": "http"}, script.receive, script.send), limit_s))


def test_events_go_out_framed_as_openai_frames_them_and_the_response_completes() -> None:
    script = Script([data('{"a": 1}'), comment("served-by x\ny"), data("[DONE]")])
    stream = _stream(script)
    _run(stream, script)
    assert script.sent[0]["type"] == "http.response.start" and script.sent[0]["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in script.sent[0]["headers"]
    assert script.body() == b'data: {"a": 1}\n\n: served-by x y\n\ndata: [DONE]\n\n'
    assert script.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert script.closed and stream.ended == ""


def test_body_messages_take_the_servers_own_send_when_the_edge_gave_it() -> None:
    script = Script([data("1"), data("2")])
    raw: list[dict[str, Any]] = []

    async def server_send(message: dict[str, Any]) -> None:
        raw.append(message)

    _run(_stream(script), script, {"type": "http", RAW_SEND: server_send})
    assert [m["type"] for m in script.sent] == ["http.response.start"]  # through the middlewares
    assert b"".join(m["body"] for m in raw) == b"data: 1\n\ndata: 2\n\n" and raw[-1]["more_body"] is False


def test_a_client_that_reads_nothing_is_dropped_after_the_send_timeout() -> None:
    script = Script([data(str(i)) for i in range(100)], block_send_after=2)
    stream = _stream(script, send_timeout_s=0.4)
    loop_t0 = asyncio.run(_timed(stream, script))
    assert stream.ended == "send_timeout" and script.closed  # the generator's cleanup ran: aborts go out
    assert 0.4 <= loop_t0 < 3.0, loop_t0
    assert not any(m.get("more_body") is False for m in script.sent)


async def _timed(stream: SSEStream, script: Script) -> float:
    t0 = asyncio.get_running_loop().time()
    await asyncio.wait_for(stream({"type": "http"}, script.receive, script.send), 10)
    return asyncio.get_running_loop().time() - t0


def _leave_after(stream: SSEStream, script: Script, seconds: float) -> None:
    """Serve the stream for `seconds`, then the client disconnects."""
    async def serve() -> None:
        task = asyncio.ensure_future(stream({"type": "http"}, script.receive, script.send))
        await asyncio.sleep(seconds)
        script.disconnect.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(serve())


def test_a_client_that_leaves_ends_the_stream_and_closes_the_generator() -> None:
    script = Script([data("1")], then_wait=True)
    stream = _stream(script)
    _leave_after(stream, script, 0.2)
    assert stream.ended == "disconnect" and script.closed


def test_a_silent_stream_is_pinged() -> None:
    script = Script([data("1")], then_wait=True)
    stream = _stream(script, ping_s=0.3)
    _leave_after(stream, script, 1.0)
    assert script.body().startswith(b"data: 1\n\n: ping\n\n"), script.body()
    assert script.body().count(b": ping\n\n") >= 2


def test_on_shutdown_a_stream_gets_its_drain_then_is_cut() -> None:
    script = Script([data("1")], then_wait=True)
    stream = _stream(script, ping_s=0.2, drain_s=0.5, shutting_down=lambda: True)
    took = asyncio.run(_timed(stream, script))
    assert stream.ended == "drained" and script.closed
    assert 0.5 <= took < 3.0, took


def test_a_stream_that_ends_within_the_drain_ends_normally() -> None:
    script = Script([data("1"), data("[DONE]")])
    stream = _stream(script, drain_s=5, shutting_down=lambda: True)
    _run(stream, script)
    assert stream.ended == "" and script.sent[-1]["more_body"] is False


def test_cancelled_from_outside_it_closes_the_generator_and_passes_the_cancel_on() -> None:
    script = Script([data("1")], then_wait=True)
    stream = _stream(script)

    async def cancel_it() -> None:
        task = asyncio.ensure_future(stream({"type": "http"}, script.receive, script.send))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_it())
    assert script.closed and stream.ended == ""


def test_an_error_in_the_generator_reaches_the_caller_after_cleanup() -> None:
    async def broken() -> AsyncGenerator[bytes, None]:
        yield data("1")
        raise RuntimeError("bug")

    script = Script([])
    stream = SSEStream(broken(), ping_s=5, send_timeout_s=5, drain_s=5, shutting_down=lambda: False)
    with pytest.raises(RuntimeError, match="bug"):
        _run(stream, script)


def test_unicode_line_ends_in_a_payload_leave_the_event_on_one_line_for_any_line_splitter() -> None:
    """A sampled token can hold U+0085, U+2028 or U+2029: JSON leaves them raw, and httpx's
    aiter_lines() (Unicode line ends, like str.splitlines) split the event; the chaos bench's
    client then failed on half a JSON object. Escaped, every splitter sees one line that reads back the same."""
    import json

    text = "a\u2028b\x85c\u2029d \u00e9\u4e2d"
    payload = json.dumps({"text": text}, ensure_ascii=False)
    # str.splitlines() splits where httpx's line decoder does (its documented behaviour)
    assert len(("data: " + payload + "\n\n").splitlines()) > 2  # the hazard, unescaped
    event = data(payload).decode()
    lines = event.splitlines()
    assert lines == [event.rstrip("\n"), ""]
    assert json.loads(lines[0].removeprefix("data: "))["text"] == text
    assert data(b'{"text": "plain"}') == b'data: {"text": "plain"}\n\n'
