"""Server-sent events for streamed completions, written straight to the ASGI server.

A stream's events arrive as bytes already framed as OpenAI and vLLM frame them (`data: ...\\n\\n`,
`: comment\\n\\n`). Per event the pump does one `send`, nothing else: no timer, no lock, no
object per event. sse-starlette, which this replaces, cost about a third of the gateway's CPU per
token (py-spy, docs/benchmarks.md): an anyio cancel scope around every send for its send
timeout, an event object encoded per token, and its bytes passed down through every middleware's
`send` wrapper.

Everything with a clock lives in one watchdog task per stream, which wakes a few times a second
and looks at two counters the pump keeps:
- a send that has not returned for `send_timeout_s` (a client that reads nothing: its socket is
  full) ends the stream, and the generator's cleanup aborts the request on the workers;
- `ping_s` without an event sends a comment, so proxies keep a silent stream (hidden thinking, a
  long prefill) open;
- once the server is shutting down (SIGTERM), the stream gets `drain_s` to finish, then is cut.
A third task waits for the client's `http.disconnect`. Whichever ends first ends the others, and
the generator is always closed, within `CLOSE_WAIT_S`, before the response returns.

After the response has started, body messages bypass the middleware stack: `Edge` puts the
server's own `send` in the scope (`RAW_SEND`) and every middleware's wrapper only looks at the
start message, which still goes through them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

logger = logging.getLogger(__name__)

RAW_SEND = "splitmind.raw_send"  # scope key: the server's `send`, set by the outermost middleware we own
CLOSE_WAIT_S = 10.0  # the generator's cleanup (aborts on the workers) gets this long
HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"),
           (b"connection", b"keep-alive"), (b"x-accel-buffering", b"no")]
PING = b": ping\n\n"


# Line ends JSON leaves raw inside strings but Unicode-aware line splitters break lines at:
# NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR. httpx's `aiter_lines()` (str.splitlines' rules) cut
# an event at one in a sampled token, and the chaos bench's client failed on half a JSON object.
# JSON's own escape reads back as the same string, and SSE clients that split on CR/LF only
# (openai's, as the spec says) see no difference. In valid UTF-8 these byte sequences are those
# characters and nothing else.
_UNICODE_LINE_ENDS = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))


def data(payload: bytes | str) -> bytes:
    """One `data:` event. JSON payloads hold no raw newline, and no Unicode line end once
    escaped here, so one line always suffices, however a client splits lines."""
    body = payload.encode() if isinstance(payload, str) else payload
    if not body.isascii():  # one scan for the usual event; the three only where one can be
        for raw, escaped in _UNICODE_LINE_ENDS:
            if raw in body:
                body = body.replace(raw, escaped)
    return b"data: " + body + b"\n\n"


def comment(text: str) -> bytes:
    """An SSE comment: every client skips it."""
    return b": " + text.replace("\n", " ").encode() + b"\n\n"


class SSEStream(Response):
    """An ASGI response that streams `events` (bytes, already framed). A `Response` subclass only
    so that FastAPI passes it through; none of `Response`'s body handling is used."""

    def __init__(self, events: AsyncGenerator[bytes, None], *, ping_s: float, send_timeout_s: float, drain_s: float,
                 shutting_down: Callable[[], bool], request_id: str = "-") -> None:
        self.status_code = 200
        self.background: BackgroundTask | None = None  # FastAPI may hand it its background tasks
        self.raw_headers = list(HEADERS)
        self.events = events
        self.ping_s = ping_s
        self.send_timeout_s = send_timeout_s
        self.drain_s = drain_s
        self.shutting_down = shutting_down
        self.request_id = request_id
        self.tick_s = max(0.05, min(1.0, ping_s / 2, send_timeout_s / 4))  # at most 20 wake-ups a second
        self.sent = 0  # events and pings whose send returned
        self.sending = False  # a send is under way
        self.ended = ""  # why the stream ended early: "", "disconnect", "send_timeout", "drained"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        raw = scope.get(RAW_SEND, send)
        pump = asyncio.ensure_future(self._pump(raw))
        helpers = [asyncio.ensure_future(self._watch(raw, pump)), asyncio.ensure_future(self._listen(receive, pump))]
        try:
            await pump
        except asyncio.CancelledError:
            if not self.ended:  # cancelled from outside (server shutdown past its grace): pass it on
                raise
        finally:
            for task in helpers:
                task.cancel()
            if not pump.done():
                pump.cancel()
            await asyncio.wait([pump, *helpers], timeout=CLOSE_WAIT_S)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.events.aclose(), CLOSE_WAIT_S)
        if self.ended == "send_timeout":
            logger.warning("request %s: the client read nothing for %.0f s; stream dropped",
                           self.request_id, self.send_timeout_s)
        elif self.ended == "drained":
            logger.warning("request %s: stream cut after the %.0f s drain", self.request_id, self.drain_s)
        if self.background is not None and not self.ended:
            await self.background()

    async def _pump(self, send: Send) -> None:
        async for chunk in self.events:
            self.sending = True
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            self.sending = False
            self.sent += 1
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _watch(self, send: Send, pump: asyncio.Future[Any]) -> None:
        loop = asyncio.get_running_loop()
        seen, seen_at = self.sent, loop.time()
        drain_until: float | None = None
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            if self.sent != seen:
                seen, seen_at = self.sent, now
            elif self.sending and now - seen_at >= self.send_timeout_s:
                self._end(pump, "send_timeout")
                return
            elif not self.sending and now - seen_at >= self.ping_s:
                try:
                    await asyncio.wait_for(send({"type": "http.response.body", "body": PING, "more_body": True}),
                                           self.send_timeout_s)
                except TimeoutError:
                    self._end(pump, "send_timeout")
                    return
                self.sent += 1
            if drain_until is None and self.shutting_down():
                drain_until = now + self.drain_s
            if drain_until is not None and now >= drain_until:
                self._end(pump, "drained")
                return

    async def _listen(self, receive: Receive, pump: asyncio.Future[Any]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._end(pump, "disconnect")
                return

    def _end(self, pump: asyncio.Future[Any], why: str) -> None:
        if not self.ended:
            self.ended = why
        pump.cancel()
