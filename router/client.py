"""The gateway's connection to one worker: a DEALER for requests, a SUB for its stats.

Replies are routed by request id into a `RequestStream` (router/request_stream.py), which
merges token deltas while the reader lags.

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
from collections.abc import Callable, Iterator

import zmq
import zmq.asyncio

from router.breaker import Breaker
from router.policies.base import WorkerView
from router.request_stream import RequestStream, TokenLoad, view_of
from splitmind import curve
from splitmind.config import WorkerAddress
from splitmind.errors import WorkerError
from splitmind.protocol import (
    AbortRequest,
    ErrorReply,
    GenerateRequest,
    HealthReply,
    HealthRequest,
    KVTransferParams,
    NodeStats,
    ReleaseKV,
    TokenDelta,
    encoder,
    from_node_decoder,
    stats_decoder,
)
from splitmind.wire_guard import RateLimitedLog, decode_frames, limit_message_size, watch_handshakes

logger = logging.getLogger(__name__)


RECV_BATCH = 256  # messages read per wake-up at most, so one busy worker cannot hold the loop


def _queued(sock: zmq.Socket[bytes], limit: int) -> Iterator[list[bytes]]:
    """Messages already waiting on `sock`, read without blocking, at most `limit`."""
    for _ in range(limit):
        try:
            yield sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return


class WorkerClient:
    def __init__(self, address: WorkerAddress, ctx: zmq.asyncio.Context,
                 keys: curve.CurveClientKeys | None = None, breaker: Breaker | None = None) -> None:
        self.address = address
        self.worker_id = address.worker_id
        self._reply_where = f"worker {self.worker_id} reply"  # names dropped replies in the log; built once
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
        self.load = TokenLoad()  # tokens of `streams`
        self.breaker = breaker or Breaker(threshold=0)
        self.breaker.on_open = self._health_changed
        # The registry's: told of any change to whether this worker is healthy other than its
        # heartbeat growing old (`WorkerRegistry.healthy`); `in_rotation`: its last list had it.
        self.on_health_change: Callable[[], None] | None = None
        self.in_rotation = False
        # Prefill KV whose owner is gone: its request was aborted or released with the KV's
        # address unread, or its reply came after that. The registry has a decode node release it.
        self.on_orphan_kv: Callable[[str, KVTransferParams], None] | None = None
        # Told how long each read of a stream's output waited in the gateway (RequestStream).
        self.on_output_wait: Callable[[float], None] | None = None
        self._health_waiters: dict[str, asyncio.Future[HealthReply]] = {}
        self._info: HealthReply | None = None
        self._stats: NodeStats | None = None
        self._last_seen_s: float | None = None
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

    @property
    def info(self) -> HealthReply | None:
        """The handshake's answer; None until the worker answered one."""
        return self._info

    @info.setter
    def info(self, info: HealthReply | None) -> None:
        self._info = info
        self.load.view = None
        self._health_changed()

    @property
    def last_seen_s(self) -> float | None:
        """Monotonic time of the last stats message (or reply, once there was one)."""
        return self._last_seen_s

    @last_seen_s.setter
    def last_seen_s(self, t: float | None) -> None:
        before, self._last_seen_s = self._last_seen_s, t
        # Heard from while out of rotation: maybe back in. (A worker in rotation stays in as its
        # heartbeat moves on; only going back in time could take it out.)
        if not self.in_rotation or t is None or before is None or t < before:
            self._health_changed()

    def _health_changed(self) -> None:
        if self.on_health_change is not None:
            self.on_health_change()

    @property
    def stats(self) -> NodeStats | None:
        """The last heartbeat."""
        return self._stats

    @stats.setter
    def stats(self, stats: NodeStats | None) -> None:
        self._stats = stats
        self.load.view = None

    def view(self) -> WorkerView:
        """The worker's routing snapshot: the one built for an earlier decision while nothing it
        shows has changed since (`TokenLoad`), else a new one."""
        view = self.load.view
        if view is None:
            view = self.load.view = view_of(self.worker_id, self.role, len(self.streams), self.load.tokens,
                                            self._stats, self._info is not None and self._info.prefix_caching)
        return view

    def is_healthy(self, heartbeat_timeout_s: float, now: float | None = None) -> bool:
        """`now`: `time.monotonic()`, read once for a pass over many workers."""
        seen = self._last_seen_s
        return (self._info is not None and seen is not None
                and (time.monotonic() if now is None else now) - seen < heartbeat_timeout_s)

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
        stream = RequestStream(req.request_id, self.worker_id, len(req.prompt_token_ids), self.load, self.breaker,
                               self.on_output_wait)
        self._forget(req.request_id)  # a reused id (n samples, a retry) replaces its stream
        self.streams[req.request_id] = stream
        self.load.view = None  # one stream more
        self.breaker.started(req.request_id)
        await self.dealer.send(encoder.encode(req))
        return stream

    def _forget(self, request_id: str) -> None:
        stream = self.streams.pop(request_id, None)
        if stream is not None:
            stream.stop_timer()
            self.load.tokens -= stream.tokens  # drops the snapshot: the stream count changed too
            self.breaker.ended(request_id)
            unread = stream.unread_kv()
            if unread is not None:
                self._orphan(request_id, unread)

    def _orphan(self, request_id: str, kv: KVTransferParams) -> None:
        if self.on_orphan_kv is not None:
            self.on_orphan_kv(request_id, kv)

    def release(self, stream: RequestStream) -> None:
        if self.streams.get(stream.request_id) is stream:
            self._forget(stream.request_id)

    async def abort(self, request_id: str) -> None:
        self._forget(request_id)
        await self.dealer.send(encoder.encode(AbortRequest(request_id)))

    async def release_kv(self, request_id: str, kv: KVTransferParams) -> None:
        """Ask this decode node to have a prefill node free KV nobody will pull (protocol.ReleaseKV)."""
        await self.dealer.send(encoder.encode(ReleaseKV(request_id, kv)))

    async def _recv_loop(self) -> None:
        # After each awaited message, what is already queued is read without a future per message
        # (`_queued`): under load a wake-up finds dozens, and the asyncio socket's machinery per
        # message was a tenth of the gateway's CPU per token (bench/gateway_throughput.py).
        sync: zmq.Socket[bytes] = zmq.Socket.shadow(self.dealer.underlying)
        while True:
            self._handle(await self.dealer.recv_multipart())
            for frames in _queued(sync, RECV_BATCH):
                self._handle(frames)
            # Reads on the shadow socket process libzmq's commands, which can take the edge of the
            # socket's descriptor that a send waiting for room would wake on; asking the asyncio
            # socket for its events makes pyzmq look again and wake such a waiter.
            self.dealer.get(zmq.EVENTS)

    def _handle(self, frames: list[bytes]) -> None:
        msg = decode_frames(frames, 1, from_node_decoder, self.drops, self._reply_where)
        if msg is None:
            return
        # Any reply shows the node alive: a node busy streaming tokens whose heartbeat runs
        # late is not declared dead mid-stream; only silence on both planes is.
        if self.last_seen_s is not None:
            self.last_seen_s = time.monotonic()
        if isinstance(msg, HealthReply):
            fut = self._health_waiters.get(msg.request_id)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        if isinstance(msg, ErrorReply) and msg.request_id in self._health_waiters:
            fut = self._health_waiters[msg.request_id]
            if not fut.done():
                fut.set_exception(WorkerError(self.worker_id, msg.message))
            return
        stream = self.streams.get(msg.request_id)
        if stream is not None:
            stream.push(msg)
        elif isinstance(msg, TokenDelta) and msg.kv_transfer is not None:
            self._orphan(msg.request_id, msg.kv_transfer)  # a prefill that finished as it was aborted
        # else: aborted or released; late output is dropped

    async def _stats_loop(self) -> None:
        where = f"worker {self.worker_id} stats"
        while True:
            stats = decode_frames(await self.sub.recv_multipart(), 1, stats_decoder, self.drops, where)
            if stats is None:
                continue
            self.stats = stats
            self.last_seen_s = time.monotonic()
