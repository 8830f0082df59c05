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
from collections.abc import Callable

import zmq
import zmq.asyncio

from router.breaker import Breaker
from router.policies.base import WorkerView
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
    KVTransferParams,
    NodeStats,
    ReleaseKV,
    Role,
    TokenDelta,
    encoder,
    from_node_decoder,
    merge_deltas,
    stats_decoder,
)
from splitmind.wire_guard import RateLimitedLog, decode_frames, limit_message_size, watch_handshakes

logger = logging.getLogger(__name__)


class TokenLoad:
    """Tokens in flight on one worker from this gateway's streams, kept as a running sum so a
    routing snapshot of a thousand workers costs no walk over their streams.

    It also keeps the worker's last snapshot (`WorkerClient.view`), dropped by any change to what
    the snapshot shows: these tokens (a stream opening, a token arriving, a stream ending), the
    open streams, a heartbeat, a handshake. A decision then rebuilds only the snapshots of workers
    that changed since the last one, not a thousand."""

    __slots__ = ("_tokens", "view")

    def __init__(self) -> None:
        self._tokens = 0
        self.view: WorkerView | None = None

    @property
    def tokens(self) -> int:
        return self._tokens

    @tokens.setter
    def tokens(self, tokens: int) -> None:
        self._tokens = tokens
        self.view = None


class RequestStream:
    """Deltas of one request on one worker, merged while unread."""

    def __init__(self, request_id: str, worker_id: str, tokens: int = 0, load: TokenLoad | None = None,
                 breaker: Breaker | None = None) -> None:
        self.request_id = request_id
        self.worker_id = worker_id
        self.breaker = breaker or Breaker(threshold=0)  # told of the worker's failures and successes
        self._answered = False
        self.tokens = tokens  # prompt + generated so far: the load it puts on the worker (routing)
        self.load = load or TokenLoad()
        self.load.tokens += tokens
        self._pending: TokenDelta | None = None
        self._error: ErrorReply | None = None
        self._ready = asyncio.Event()
        self.finished = False

    def push(self, msg: TokenDelta | ErrorReply) -> None:
        if isinstance(msg, ErrorReply):
            self._error = msg
            self._ready.set()
            return
        self.tokens += len(msg.token_ids)
        self.load.tokens += len(msg.token_ids)
        if self._pending is None:
            self._pending = msg
        else:
            self._pending = merge_deltas(self._pending, msg)
        self._ready.set()

    def unread_kv(self) -> KVTransferParams | None:
        """The KV address of a finished prefill that nobody read from this stream."""
        return self._pending.kv_transfer if self._pending is not None else None

    def fail(self, message: str) -> None:
        self.push(ErrorReply(self.request_id, ErrorCode.INTERNAL, message))

    async def next(self, timeout_s: float, waiting_for: str = "output") -> TokenDelta:
        """The merged deltas since the last call; raises on worker error or silence. `waiting_for`
        names the phase in the timeout's message (and the setting that bounds it)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._ready.wait()
        except TimeoutError:
            self.breaker.failure()
            message = f"no {waiting_for} for request {self.request_id} in {timeout_s:g}s"
            raise WorkerTimeoutError(self.worker_id, message) from None
        self._ready.clear()
        if self._error is not None:
            err = self._error
            if err.code == ErrorCode.BAD_REQUEST:
                raise WorkerRejectedError(self.worker_id, err.message)
            self.breaker.failure()
            raise WorkerError(self.worker_id, err.message)
        delta, self._pending = self._pending, None
        assert delta is not None
        if not self._answered:  # output is proof the worker works
            self._answered = True
            self.breaker.success()
        if delta.finish_reason is not None:
            self.finished = True
        return delta


def view_of(worker_id: str, role: Role, own: int, own_tokens: int, stats: NodeStats | None,
            prefix_caching: bool = False) -> WorkerView:
    """A snapshot for routing: this gateway's own open streams (fresh) or the node's report
    (every gateway's, one heartbeat old), whichever says more."""
    if stats is None:
        return WorkerView(worker_id, role, own, 0, own_tokens, prefix_caching=prefix_caching)
    requests = stats.num_running + stats.num_waiting
    tokens = stats.tokens_in_flight
    # conditionals, not max(): a snapshot of a thousand workers is on every request's path
    return WorkerView(worker_id, role, own if own > requests else requests, stats.num_waiting,
                      own_tokens if own_tokens > tokens else tokens, stats.kv_usage, prefix_caching)


class WorkerClient:
    def __init__(self, address: WorkerAddress, ctx: zmq.asyncio.Context,
                 keys: curve.CurveClientKeys | None = None, breaker: Breaker | None = None) -> None:
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
        stream = RequestStream(req.request_id, self.worker_id, len(req.prompt_token_ids), self.load, self.breaker)
        self._forget(req.request_id)  # a reused id (n samples, a retry) replaces its stream
        self.streams[req.request_id] = stream
        self.load.view = None  # one stream more
        self.breaker.started(req.request_id)
        await self.dealer.send(encoder.encode(req))
        return stream

    def _forget(self, request_id: str) -> None:
        stream = self.streams.pop(request_id, None)
        if stream is not None:
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
