"""What the gateway holds per request on one worker, and the snapshot routing reads per worker.

`RequestStream` is a one-slot mailbox that merges token deltas while the reader lags (vLLM's
RequestOutputCollector idea), so a slow client costs a growing token list, never a growing
queue of messages. `TokenLoad` keeps a worker's tokens in flight as a running sum, and
`view_of` makes the `WorkerView` that routing policies score.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from router.breaker import Breaker
from router.policies.base import WorkerView
from splitmind.errors import WorkerError, WorkerRejectedError, WorkerTimeoutError
from splitmind.protocol import ErrorCode, ErrorReply, KVTransferParams, NodeStats, Role, TokenDelta, merge_deltas


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
    """Deltas of one request on one worker, merged while unread.

    `on_wait`, when given, is told how long each read's output waited here: from the moment the
    first of its deltas arrived off the worker's socket to the moment the reader took it. That
    wait is the gateway's event loop's queue (the reader's task is ready and waits its turn), or
    a reader still busy with a client slower than the tokens (api/metrics.py, output_wait). It
    starts when the receive loop reads the message, so a message's wait in the socket before
    that is not in it: a lower bound on the gateway's part.

    The silence timeout of `next()` is one timer per stream that moves lazily: each wait only
    sets a deadline, and the timer, when it fires before that deadline, re-arms itself for it. A
    timer armed and cancelled around every token (`asyncio.timeout`) was half of a stream's
    cost to wait for its next delta (bench/gateway_throughput.py's profile)."""

    def __init__(self, request_id: str, worker_id: str, tokens: int = 0, load: TokenLoad | None = None,
                 breaker: Breaker | None = None, on_wait: Callable[[float], None] | None = None) -> None:
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
        self._deadline = 0.0  # of the wait under way: loop time
        self._timer: asyncio.TimerHandle | None = None
        self._waiting = False
        self._timed_out = False
        self.on_wait = on_wait
        self._arrived_at = 0.0  # perf_counter() when the unread output's first delta came

    def push(self, msg: TokenDelta | ErrorReply) -> None:
        if isinstance(msg, ErrorReply):
            self._error = msg
            self._ready.set()
            return
        self.tokens += len(msg.token_ids)
        self.load.tokens += len(msg.token_ids)
        if self._pending is None:
            self._pending = msg
            self._arrived_at = time.perf_counter()
        else:
            self._pending = merge_deltas(self._pending, msg)
        self._ready.set()

    def _on_timer(self) -> None:
        self._timer = None
        if not self._waiting or self._ready.is_set():
            return  # the next wait arms it again
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._on_timer)
            return
        self._timed_out = True
        self._ready.set()

    def stop_timer(self) -> None:
        """The stream is done with: its timer goes now, not at its deadline."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def unread_kv(self) -> KVTransferParams | None:
        """The KV address of a finished prefill that nobody read from this stream."""
        return self._pending.kv_transfer if self._pending is not None else None

    def fail(self, message: str) -> None:
        self.push(ErrorReply(self.request_id, ErrorCode.INTERNAL, message))

    async def next(self, timeout_s: float, waiting_for: str = "output") -> TokenDelta:
        """The merged deltas since the last call; raises on worker error or silence. `waiting_for`
        names the phase in the timeout's message (and the setting that bounds it)."""
        if not self._ready.is_set():
            loop = asyncio.get_running_loop()
            self._deadline = loop.time() + timeout_s
            if self._timer is None or self._timer.when() > self._deadline:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(self._deadline, self._on_timer)
            self._waiting, self._timed_out = True, False
            try:
                await self._ready.wait()
            finally:
                self._waiting = False
            if self._timed_out and self._pending is None and self._error is None:  # else: it came just in time
                self._ready.clear()
                self.breaker.failure()
                message = f"no {waiting_for} for request {self.request_id} in {timeout_s:g}s"
                raise WorkerTimeoutError(self.worker_id, message)
        self._ready.clear()
        if self._error is not None:
            err = self._error
            if err.code == ErrorCode.BAD_REQUEST:
                raise WorkerRejectedError(self.worker_id, err.message)
            self.breaker.failure()
            raise WorkerError(self.worker_id, err.message)
        delta, self._pending = self._pending, None
        assert delta is not None
        if self.on_wait is not None:
            self.on_wait(time.perf_counter() - self._arrived_at)
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
