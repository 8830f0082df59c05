"""The gateway's edge, one pure-ASGI middleware in front of every route: request id, the
workers' headers, keys, per-key limits, the body cap, and the catch-all for errors no handler
mapped.

Order inside a request: request id -> keys (401/403) -> body cap by Content-Length (413) ->
per-key limits (429) -> the route, whose body reads are capped again as they arrive (a chunked
body has no Content-Length). Every refusal is decided before the route runs, so it creates no
state. Pure ASGI rather than Starlette's BaseHTTPMiddleware, so streamed responses pass through
untouched and a client's disconnect still reaches the route.

The catch-all: an exception no handler mapped becomes a 500 in OpenAI's error shape with the
request id, logged once with its traceback; the client never sees a Python traceback. After the
response has started (a stream) nothing can be sent but the end: it is logged and the
connection closes.
"""

from __future__ import annotations

import json
import logging
import string
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import access_log, sse
from api.auth import AuthError, Keys, access_for
from api.errors import error_body
from api.limits import KeyLimits, LimitExceeded
from splitmind.config import GatewayTuning
from splitmind.errors import RequestTooLargeError

logger = logging.getLogger(__name__)

REQUEST_ID_CHARS = frozenset(string.ascii_letters + string.digits + "-_.:")
MAX_REQUEST_ID_CHARS = 128


def request_id_from(headers: dict[bytes, bytes]) -> str:
    """The client's x-request-id when it is a plain token (echoed in a header, so nothing that
    could break one), else a new id."""
    given = headers.get(b"x-request-id", b"").decode("latin-1")[:MAX_REQUEST_ID_CHARS]
    return given if given and set(given) <= REQUEST_ID_CHARS else uuid.uuid4().hex


class Edge:
    def __init__(self, app: ASGIApp, *, keys: Keys, tuning: GatewayTuning) -> None:
        self.app = app
        self.keys = keys
        self.tuning = tuning
        self.limits = KeyLimits(tuning.key_requests_per_s, tuning.key_burst, tuning.key_max_concurrent)
        if not keys.enabled:
            logger.warning("no API key set: every endpoint is open to anyone who can reach the gateway")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = request_id_from(headers)
        state = scope.setdefault("state", {})
        state.update(request_id=rid, prefill_worker="none", decode_worker="none")
        scope[sse.RAW_SEND] = send  # a stream's body messages skip the wrappers below (api/sse.py)
        started = False
        status: int | None = None
        t0 = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *self._headers(state)]}
            await send(message)

        try:
            await self._serve(scope, receive, send_with_headers, headers, rid, lambda: started)
        finally:
            path = scope.get("path", "")
            if access_log.logged(path):
                if status is not None and status >= 400:
                    self._count_error(scope, status)
                access_log.logger.info("%s", access_log.access_line(
                    scope.get("method", "-"), path, status, state, time.perf_counter() - t0))

    async def _serve(self, scope: Scope, receive: Receive, send_with_headers: Send, headers: dict[bytes, bytes],
                     rid: str, started: Callable[[], bool]) -> None:
        try:
            caller = self._admit(scope, headers)
            if caller is None:
                await self.app(scope, self._capped(receive), send_with_headers)
                return
            try:
                await self.app(scope, self._capped(receive), send_with_headers)
            finally:
                self.limits.release(caller)
        except Refusal as refusal:
            self._count(scope, refusal.reason)
            await _respond(send_with_headers, refusal.status, refusal.body, refusal.headers)
        except Exception:
            if started():
                logger.exception("request %s: failed after its response started", rid)
                return
            logger.exception("request %s: unhandled error", rid)
            self._count(scope, "internal_error")
            body = error_body(f"internal error (request id {rid})", "internal_error", None, "internal_error")
            await _respond(send_with_headers, 500, body, [])

    def _admit(self, scope: Scope, headers: dict[bytes, bytes]) -> str | None:
        """The caller holding a limit slot for this request (release it after), or None when no
        limit applies; raises Refusal."""
        path = scope.get("path", "")
        authorization = headers.get(b"authorization", b"").decode("latin-1") or None
        try:
            identity = self.keys.check(access_for(path, self.tuning.metrics_access), authorization)
        except AuthError as exc:
            kind = "invalid_request_error" if exc.status == 401 else "permission_error"
            extra = [(b"www-authenticate", b"Bearer")] if exc.status == 401 else []
            raise Refusal(exc.status, error_body(str(exc), kind, None, exc.code), extra, "unauthorized") from None
        length = headers.get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.tuning.max_body_bytes:
            raise Refusal(413, _too_large(self.tuning.max_body_bytes), [], "body_too_large")
        if not (self.limits.enabled and path.startswith("/v1/") and scope.get("method") == "POST"):
            return None
        caller = identity or f"addr:{(scope.get('client') or ('?', 0))[0]}"
        try:
            self.limits.acquire(caller)
        except LimitExceeded as exc:
            body = error_body(str(exc), "rate_limit_error", None, "rate_limit_exceeded")
            raise Refusal(429, body, [(b"retry-after", exc.retry_after.encode())], "rate_limited") from None
        return caller

    def _capped(self, receive: Receive) -> Receive:
        limit = self.tuning.max_body_bytes
        seen = 0

        async def capped_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise RequestTooLargeError(_too_large(limit)["error"]["message"])
            return message

        return capped_receive

    @staticmethod
    def _headers(state: dict[str, Any]) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-request-id", str(state["request_id"]).encode("latin-1")),
            (b"x-splitmind-prefill", str(state["prefill_worker"]).encode()),
            (b"x-splitmind-decode", str(state["decode_worker"]).encode()),
        ]

    @staticmethod
    def _count_error(scope: Scope, status: int) -> None:
        """splitmind_request_errors_total{status}: every API response that is an error (a stream's
        in-band error is counted where it is sent, api/openai_routes.py)."""
        gateway = getattr(getattr(scope.get("app"), "state", None), "gateway", None)
        if gateway is not None:
            gateway.metrics.errors.labels(str(status)).inc()

    @staticmethod
    def _count(scope: Scope, reason: str) -> None:
        gateway = getattr(getattr(scope.get("app"), "state", None), "gateway", None)
        if gateway is not None:
            gateway.metrics.rejections.labels(reason).inc()


class Refusal(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]], reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.body = body
        self.headers = headers
        self.reason = reason


def _too_large(limit: int) -> dict[str, Any]:
    return error_body(f"request body larger than {limit} bytes", "invalid_request_error", None, "request_too_large")


async def _respond(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *headers]})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
