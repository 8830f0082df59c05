"""The registry's monitor fails a silent worker's streams, and only a silent one's. A gateway whose
own event loop was held up longer than the heartbeat timeout (CPU starvation, a GC pause) has the
node's heartbeats of that time unread in its sockets; it must not take that for the node's
silence. (Asked because bench/chaos.py saw a busy decode node declared dead with 10 streams open:
the readers catch up before the monitor judges, on uvloop as on asyncio's own loop (checked when
this was written), so that node itself was silent.) On uvloop, as the gateway runs (uvicorn picks
it when installed)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
import uvloop
import zmq

from router.registry import MONITOR_INTERVAL_S, WorkerRegistry
from router.request_stream import RequestStream
from splitmind.config import WorkerAddress
from splitmind.protocol import (
    GenerateRequest,
    HealthReply,
    HealthRequest,
    NodeStats,
    Role,
    Sampling,
    encoder,
    to_node_decoder,
)

TIMEOUT_S = 1.0


class FakeNode:
    """A node in its own thread: answers the handshake, and sends a heartbeat every 0.1 s until
    `silent` is set. It keeps sending while the gateway's event loop is held up, as a real node
    (another process) does."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.rpc, self.pub = self.ctx.socket(zmq.ROUTER), self.ctx.socket(zmq.PUB)
        rpc_port = self.rpc.bind_to_random_port("tcp://127.0.0.1")
        stats_port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        self.address = WorkerAddress("d0", Role.DECODE, f"tcp://127.0.0.1:{rpc_port}",
                                     f"tcp://127.0.0.1:{stats_port}")
        self.silent, self.stop = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.rpc, zmq.POLLIN)
        seq = 0
        while not self.stop.is_set():
            if dict(poller.poll(100)).get(self.rpc):
                identity, payload = self.rpc.recv_multipart()
                msg = to_node_decoder.decode(payload)
                if isinstance(msg, HealthRequest) and not self.silent.is_set():
                    reply = HealthReply(msg.request_id, "d0", Role.DECODE, 1, msg.protocol_version, "m", 64)
                    self.rpc.send_multipart([identity, encoder.encode(reply)])
            if not self.silent.is_set():
                seq += 1
                self.pub.send(encoder.encode(NodeStats("d0", Role.DECODE, 1, seq)))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.rpc.close(0)
        self.pub.close(0)
        self.ctx.term()


async def open_stream(node: FakeNode) -> tuple[WorkerRegistry, RequestStream]:
    registry = WorkerRegistry([node.address], TIMEOUT_S)
    registry.start()
    worker = registry.workers["d0"]
    deadline = time.monotonic() + 10
    while not worker.is_healthy(TIMEOUT_S):
        assert time.monotonic() < deadline, "the fake node never became healthy"
        await asyncio.sleep(0.05)
    await asyncio.sleep(3 * MONITOR_INTERVAL_S)  # the monitor has seen it healthy
    return registry, await worker.open(GenerateRequest("r", [1], Sampling(max_tokens=8)))


def failed(stream: RequestStream) -> bool:
    return stream._error is not None


def held_up(seconds: float) -> None:
    """What a starved or paused gateway does to its event loop."""
    time.sleep(seconds)


@pytest.fixture
def node() -> Iterator[FakeNode]:
    fake = FakeNode()
    yield fake
    fake.close()


def test_a_gateway_held_up_does_not_declare_a_live_node_dead(node: FakeNode) -> None:
    async def run() -> tuple[bool, bool]:
        registry, stream = await open_stream(node)
        try:
            held_up(2 * TIMEOUT_S)  # the node goes on sending
            await asyncio.sleep(4 * MONITOR_INTERVAL_S)
            return failed(stream), registry.workers["d0"].is_healthy(TIMEOUT_S)
        finally:
            await registry.close()

    was_failed, healthy = uvloop.run(run())
    assert not was_failed, "the monitor failed a live node's stream after the gateway's own stall"
    assert healthy


def test_a_silent_node_still_has_its_streams_failed(node: FakeNode) -> None:
    """The other side: the monitor still acts, also after a stall of its own."""

    async def run() -> tuple[bool, float]:
        registry, stream = await open_stream(node)
        try:
            node.silent.set()
            held_up(2 * TIMEOUT_S)  # and the node really went silent meanwhile
            t0 = time.monotonic()
            for _ in range(100):
                if failed(stream):
                    break
                await asyncio.sleep(0.05)
            return failed(stream), time.monotonic() - t0
        finally:
            await registry.close()

    was_failed, after_s = uvloop.run(run())
    assert was_failed, "a silent node's stream was never failed"
    assert after_s < 3 * MONITOR_INTERVAL_S + 0.5, after_s  # at most one round of catching up
