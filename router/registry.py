"""The gateway's view of its workers: connections, health, load.

A worker is *healthy* when it answered a health request (protocol version checked) and its
stats heartbeat is fresh. When a worker's heartbeat stops, the monitor fails every stream open
on it at once, instead of letting each wait out its own timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import zmq.asyncio

from router.client import WorkerClient
from splitmind.config import WorkerAddress
from splitmind.curve import CurveClientKeys
from splitmind.protocol import Role

logger = logging.getLogger(__name__)


class WorkerRegistry:
    def __init__(self, addresses: Sequence[WorkerAddress], heartbeat_timeout_s: float,
                 keys: CurveClientKeys | None = None) -> None:
        self.ctx = zmq.asyncio.Context()
        self.workers = {a.worker_id: WorkerClient(a, self.ctx, keys) for a in addresses}
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._monitor: asyncio.Task[None] | None = None
        self._handshakes: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for w in self.workers.values():
            w.start()
        self._monitor = asyncio.create_task(self._monitor_loop())
        self._handshakes = [asyncio.create_task(self._handshake(w)) for w in self.workers.values()]

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

    async def close(self) -> None:
        for task in [self._monitor, *self._handshakes]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for w in self.workers.values():
            await w.close()
        self.ctx.term()

    def healthy(self, role: Role) -> list[WorkerClient]:
        return [w for w in self.workers.values() if w.role == role and w.is_healthy(self.heartbeat_timeout_s)]

    def speculative_decoding(self) -> bool:
        """Whether any worker that answered its handshake runs speculative decoding (MTP)."""
        return any(w.info is not None and w.info.mtp_tokens > 0 for w in self.workers.values())

    def max_model_len(self) -> int | None:
        lens = [w.info.max_model_len for w in self.workers.values() if w.info is not None]
        return min(lens) if lens else None

    async def _monitor_loop(self) -> None:
        was_healthy: dict[str, bool] = {}
        while True:
            await asyncio.sleep(0.5)
            for w in self.workers.values():
                ok = w.is_healthy(self.heartbeat_timeout_s)
                if was_healthy.get(w.worker_id) and not ok:
                    logger.warning("worker %s stopped sending heartbeats; failing %d streams",
                                   w.worker_id, len(w.streams))
                    for stream in list(w.streams.values()):
                        stream.fail("worker stopped responding")
                was_healthy[w.worker_id] = ok
