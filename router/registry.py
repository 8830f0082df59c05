"""The gateway's view of its workers: connections, health, load, and workers joining and leaving.

A worker is *healthy* when it answered a health request (protocol version checked), its stats
heartbeat is fresh, it is not leaving, and its circuit breaker (`router/breaker.py`) lets requests
through. When a worker's heartbeat stops, the monitor fails
every stream open on it at once, instead of letting each wait out its own timeout.

Workers come from the static list in the config and from DNS (`router/discovery.py`), which
calls `join` and `leave`. A worker that leaves takes no new requests; its open streams finish, and
then its connection is closed and it is forgotten. One that comes back before that rejoins (after
a fresh handshake: it may be a restarted node). Several gateways can share workers: each has its
own connections, and load comes from the nodes' own heartbeats, so they share no state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence

import zmq.asyncio

from router.breaker import CLOSED, Breaker
from router.client import WorkerClient
from router.discovery import Discovery, Resolve, resolve_dns
from splitmind.config import WorkerAddress, WorkerDNS
from splitmind.curve import CurveClientKeys
from splitmind.protocol import KVTransferParams, Role

logger = logging.getLogger(__name__)

MONITOR_INTERVAL_S = 0.5


class WorkerRegistry:
    def __init__(self, addresses: Sequence[WorkerAddress], heartbeat_timeout_s: float,
                 keys: CurveClientKeys | None = None, discover: Sequence[WorkerDNS] = (),
                 resolve_interval_s: float = 5.0, resolve: Resolve = resolve_dns,
                 breaker: Callable[[], Breaker] = lambda: Breaker(threshold=0)) -> None:
        self.ctx = zmq.asyncio.Context()
        self.keys = keys
        self.new_breaker = breaker
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.workers: dict[str, WorkerClient] = {}
        self.leaving: set[str] = set()
        self.on_leave: list[Callable[[str, Role], None]] = []  # (worker id, role): it stopped answering or left
        self.on_output_wait: Callable[[float], None] | None = None  # every worker's streams' (RequestStream)
        self._initial = list(addresses)
        self.discovery = Discovery(discover, self, resolve_interval_s, resolve) if discover else None
        self._monitor: asyncio.Task[None] | None = None
        self._discover: asyncio.Task[None] | None = None
        self._handshakes: dict[str, asyncio.Task[None]] = {}
        self._started = False
        self._sends: set[asyncio.Task[None]] = set()  # fire-and-forget messages, held until sent
        # `healthy`'s last answer per role: (version, its oldest heartbeat, workers); see there
        self._version = 0
        self._healthy: dict[Role, tuple[int, float, list[WorkerClient]]] = {}

    def start(self) -> None:
        self._started = True
        for address in self._initial:
            self.join(address)
        self._monitor = asyncio.create_task(self._monitor_loop())
        if self.discovery is not None:
            self._discover = asyncio.create_task(self.discovery.run())

    def join(self, address: WorkerAddress) -> None:
        """Add a worker (or take back one that was leaving); it serves once its handshake answers."""
        w = self.workers.get(address.worker_id)
        if w is not None:
            if address.worker_id in self.leaving:
                self.leaving.discard(address.worker_id)
                self.health_changed()
                logger.info("worker %s is back; checking it again", address.worker_id)
                w.info = None  # it may be a new process: handshake again before it serves
                self._start_handshake(w)
            return
        w = WorkerClient(address, self.ctx, self.keys, self.new_breaker())
        w.on_orphan_kv = self._release_orphan
        w.on_health_change = self.health_changed
        w.on_output_wait = self.on_output_wait
        self.workers[address.worker_id] = w
        self.health_changed()
        if self._started:
            logger.info("worker %s (%s) joined at %s", w.worker_id, w.role.name.lower(), address.rpc_address)
        w.start()
        self._start_handshake(w)

    def leave(self, worker_id: str) -> None:
        """Stop sending it requests; forget it once its open streams have ended."""
        w = self.workers.get(worker_id)
        if w is None or worker_id in self.leaving:
            return
        self.leaving.add(worker_id)
        self.health_changed()
        logger.info("worker %s left (%d streams still open there finish first)", worker_id, len(w.streams))
        for callback in self.on_leave:
            callback(worker_id, w.role)

    def _release_orphan(self, request_id: str, kv: KVTransferParams) -> None:
        """Prefill KV that no request will pull: a decode node tells the prefill engine to free
        it (protocol.ReleaseKV) instead of leaving it to the lease."""
        decode = self.healthy(Role.DECODE)
        if not decode:
            return
        target = min(decode, key=lambda w: len(w.streams))
        logger.info("request %s: prefill KV left behind (aborted as it finished); releasing it through %s",
                    request_id, target.worker_id)
        task = asyncio.create_task(target.release_kv(request_id, kv))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    def _start_handshake(self, w: WorkerClient) -> None:
        old = self._handshakes.pop(w.worker_id, None)
        if old is not None:
            old.cancel()
        self._handshakes[w.worker_id] = asyncio.create_task(self._handshake(w))

    async def _handshake(self, w: WorkerClient) -> None:
        """Keep asking until the worker answers: nodes may start after the gateway."""
        while w.info is None:
            try:
                info = await w.health(2.0)
                logger.info("worker %s ready: %s, pid %d, max_model_len %d",
                            w.worker_id, info.role.name.lower(), info.pid, info.max_model_len)
            except TimeoutError:
                continue
            except Exception as exc:  # version mismatch: say so, keep the worker out of rotation
                logger.error("worker %s refused the handshake: %s", w.worker_id, exc)
                await asyncio.sleep(5)

    async def _forget(self, worker_id: str) -> None:
        self.leaving.discard(worker_id)
        w = self.workers.pop(worker_id)
        self.health_changed()
        task = self._handshakes.pop(worker_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await w.close()
        logger.info("worker %s forgotten", worker_id)

    async def close(self) -> None:
        for task in [self._discover, self._monitor, *self._handshakes.values()]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for w in self.workers.values():
            await w.close()
        self.ctx.term()

    def health_changed(self) -> None:
        """Something may have changed which workers are healthy: a worker joined, left or was
        forgotten, answered a handshake (or must again), was heard from while out of rotation, or
        its circuit breaker opened. Call it after changing `workers`, `leaving` or
        `heartbeat_timeout_s` by hand."""
        self._version += 1

    def healthy(self, role: Role) -> list[WorkerClient]:
        """The workers of `role` that may take requests, in `workers` order.

        A decision asks for this list of a thousand workers each time; it is kept between calls
        while it cannot have changed: no `health_changed()` since, no heartbeat in it grown older
        than `heartbeat_timeout_s`, and every breaker of the role closed (a closed breaker lets
        requests through until it opens, which it says; an open one turns half-open with time)."""
        now = time.monotonic()
        kept = self._healthy.get(role)
        if kept is not None and kept[0] == self._version and now - kept[1] < self.heartbeat_timeout_s:
            return list(kept[2])
        version, timeout, leaving = self._version, self.heartbeat_timeout_s, self.leaving
        out: list[WorkerClient] = []
        oldest = math.inf  # the oldest heartbeat in the list
        closed = True
        for w in self.workers.values():
            if w.role != role:
                continue
            w.on_health_change = self.health_changed
            w.in_rotation = (w.worker_id not in leaving and w.is_healthy(timeout, now) and w.breaker.allows())
            if w.in_rotation:
                out.append(w)
                oldest = min(oldest, w.last_seen_s or 0.0)
            closed = closed and w.breaker.state == CLOSED
        if closed:
            self._healthy[role] = (version, oldest, out)
        else:
            self._healthy.pop(role, None)
        return list(out)

    def speculative_decoding(self) -> bool:
        """Whether any worker that answered its handshake runs speculative decoding (MTP)."""
        return any(w.info is not None and w.info.mtp_tokens > 0 for w in self.workers.values())

    def max_model_len(self) -> int | None:
        lens = [w.info.max_model_len for w in self.workers.values() if w.info is not None]
        return min(lens) if lens else None

    async def _monitor_loop(self) -> None:
        was_healthy: dict[str, bool] = {}
        while True:
            await asyncio.sleep(MONITOR_INTERVAL_S)
            for w in list(self.workers.values()):
                ok = w.is_healthy(self.heartbeat_timeout_s)
                if was_healthy.get(w.worker_id) and not ok:
                    logger.warning("worker %s stopped sending heartbeats; failing %d streams",
                                   w.worker_id, len(w.streams))
                    for stream in list(w.streams.values()):
                        stream.fail("worker stopped responding")
                    for callback in self.on_leave:
                        callback(w.worker_id, w.role)
                was_healthy[w.worker_id] = ok
                if w.worker_id in self.leaving and not w.streams:
                    was_healthy.pop(w.worker_id, None)
                    await self._forget(w.worker_id)
