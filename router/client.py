"""The gateway's connection to one worker: a DEALER for requests, a SUB for its stats.

Replies are routed by request id into a `RequestStream`: a one-slot mailbox that merges token
deltas while the reader lags (vLLM's RequestOutputCollector idea), so a slow client costs a
growing token list, never a growing queue of messages.

A reply the gateway cannot use (wrong frame count, undecodable) is logged, rate-limited, and
dropped, as on the node (`splitmind/wire_guard.py`); with CURVE keys both sockets are CURVE
clients that check the node's key, and a handshake the node refused is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import zmq
import zmq.asyncio

from splitmind import curve
from splitmind.config import WorkerAddress
from splitmind.errors import WorkerError, WorkerRejectedError, WorkerTimeoutError
from splitmind.protocol import (
    AbortRequest,
    ErrorCode,
    ErrorReply,
    GenerateRequest,
    HealthReply,
    HealthRequest,
    NodeStats,
    TokenDelta,
    encoder,
    from_node_decoder,
    merge_deltas,
    stats_decoder,
)
from splitmind.wire_guard import RateLimitedLog, decode_frames, limit_message_size, watch_handshakes

logger = logging.getLogger(__name__)


class RequestStream:
    """Deltas of one request on one worker, merged while unread."""

    def __init__(self, request_id: str, worker_id: str) -> None:
        self.request_id = request_id
        self.worker_id = worker_id
        self._pending: TokenDelta | None = None
        self._error: ErrorReply | None = None
        self._ready = asyncio.Event()
        self.finished = False

    def push(self, msg: TokenDelta | ErrorReply) -> None:
        if isinstance(msg, ErrorReply):
            self._error = msg
        elif self._pending is None:
            self._pending = msg
        else:
            self._pending = merge_deltas(self._pending, msg)
        self._ready.set()

    def fail(self, message: str) -> None:
        self.push(ErrorReply(self.request_id, ErrorCode.INTERNAL, message))

    async def next(self, timeout_s: float) -> TokenDelta:
        """The merged deltas since the last call; raises on worker error or silence."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._ready.wait()
        except TimeoutError:
            message = f"no output for request {self.request_id} in {timeout_s:g}s"
            raise WorkerTimeoutError(self.worker_id, message) from None
        self._ready.clear()
        if self._error is not None:
            err = self._error
            if err.code == ErrorCode.BAD_REQUEST:
                raise WorkerRejectedError(self.worker_id, err.message)
            raise WorkerError(self.worker_id, err.message)
        delta, self._pending = self._pending, None
        assert delta is not None
        if delta.finish_reason is not None:
            self.finished = True
        return delta


class WorkerClient:
    def __init__(self, address: WorkerAddress, ctx: zmq.asyncio.Context,
                 keys: curve.CurveClientKeys | None = None) -> None:
        self.address = address
        self.worker_id = address.worker_id
        self.role = address.role
        self.dealer = ctx.socket(zmq.DEALER)
        self.sub = ctx.socket(zmq.SUB)
        for sock in (self.dealer, self.sub):
            sock.setsockopt(zmq.LINGER, 0)
            if keys is not None:
                curve.make_client(sock, keys)
        limit_message_size(self.dealer, self.sub)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.drops = RateLimitedLog(logger)
        self.streams: dict[str, RequestStream] = {}
        self._health_waiters: dict[str, asyncio.Future[HealthReply]] = {}
        self.info: HealthReply | None = None
        self.stats: NodeStats | None = None
        self.last_seen_s: float | None = None  # monotonic time of the last stats message
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.dealer.connect(self.address.rpc_address)
        self.sub.connect(self.address.stats_address)
        where = f"worker {self.worker_id}"
        self._tasks = [asyncio.create_task(self._recv_loop()), asyncio.create_task(self._stats_loop()),
                       asyncio.create_task(watch_handshakes(self.dealer, f"{where} request plane", self.drops)),
                       asyncio.create_task(watch_handshakes(self.sub, f"{where} stats plane", self.drops))]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for stream in self.streams.values():
            stream.fail("gateway shutting down")
        self.dealer.close()
        self.sub.close()

    def is_healthy(self, heartbeat_timeout_s: float) -> bool:
        return (self.info is not None and self.last_seen_s is not None
                and time.monotonic() - self.last_seen_s < heartbeat_timeout_s)

    async def health(self, timeout_s: float) -> HealthReply:
        rid = f"health-{uuid.uuid4().hex[:12]}"
        fut: asyncio.Future[HealthReply] = asyncio.get_running_loop().create_future()
        self._health_waiters[rid] = fut
        try:
            await self.dealer.send(encoder.encode(HealthRequest(rid)))
            async with asyncio.timeout(timeout_s):
                self.info = await fut
            return self.info
        finally:
            self._health_waiters.pop(rid, None)

    async def open(self, req: GenerateRequest) -> RequestStream:
        stream = RequestStream(req.request_id, self.worker_id)
        self.streams[req.request_id] = stream
        await self.dealer.send(encoder.encode(req))
        return stream

    def release(self, stream: RequestStream) -> None:
        self.streams.pop(stream.request_id, None)

    async def abort(self, request_id: str) -> None:
        self.streams.pop(request_id, None)
        await self.dealer.send(encoder.encode(AbortRequest(request_id)))

    async def _recv_loop(self) -> None:
        where = f"worker {self.worker_id} reply"
        while True:
            msg = decode_frames(await self.dealer.recv_multipart(), 1, from_node_decoder, self.drops, where)
            if msg is None:
                continue
            # Any reply shows the node alive: a node busy streaming tokens whose heartbeat runs
            # late is not declared dead mid-stream; only silence on both planes is.
            if self.last_seen_s is not None:
                self.last_seen_s = time.monotonic()
            if isinstance(msg, HealthReply):
                fut = self._health_waiters.get(msg.request_id)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                continue
            if isinstance(msg, ErrorReply) and msg.request_id in self._health_waiters:
                fut = self._health_waiters[msg.request_id]
                if not fut.done():
                    fut.set_exception(WorkerError(self.worker_id, msg.message))
                continue
            stream = self.streams.get(msg.request_id)
            if stream is not None:  # else: aborted or released; late output is dropped
                stream.push(msg)

    async def _stats_loop(self) -> None:
        where = f"worker {self.worker_id} stats"
        while True:
            stats = decode_frames(await self.sub.recv_multipart(), 1, stats_decoder, self.drops, where)
            if stats is None:
                continue
            self.stats = stats
            self.last_seen_s = time.monotonic()
