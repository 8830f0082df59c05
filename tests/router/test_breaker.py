"""Circuit breakers (router/breaker.py): the state machine on a fake clock, then a real node
server whose engine fails every request, behind the real registry and worker client."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from router.registry import WorkerRegistry
from splitmind.config import WorkerAddress
from splitmind.errors import WorkerError
from splitmind.protocol import GenerateRequest, Role, Sampling
from tests.splitmind.node_thread import FakeEngine, NodeThread, engine_output


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_failures_in_a_row_probes_once_and_doubles_its_cooldown() -> None:
    clock = Clock()
    b = Breaker(threshold=3, cooldown_s=5, max_cooldown_s=15, clock=clock)
    b.failure()
    b.failure()
    b.success()  # the count is of failures in a row
    b.failure()
    b.failure()
    assert b.state == CLOSED and b.allows()
    b.failure()
    assert (b.state, b.allows(), b.trips) == (OPEN, False, 1)
    clock.now += 5
    assert b.state == HALF_OPEN and b.allows()
    b.started("probe-1")
    assert not b.allows()  # one probe at a time
    b.ended("probe-1")  # the client left before it answered: no verdict, probe again
    assert b.allows()
    b.started("probe-2")
    b.failure()
    assert (b.state, b.trips) == (OPEN, 2)
    clock.now += 9.9
    assert b.state == OPEN  # 10 s now
    clock.now += 0.1
    b.started("probe-3")
    b.failure()
    clock.now += 14.9
    assert b.state == OPEN  # capped at 15 s
    clock.now += 0.1
    b.started("probe-4")
    b.success()
    assert (b.state, b.failures, b.cooldown_s) == (CLOSED, 0, 5)


def test_threshold_zero_never_opens() -> None:
    b = Breaker(threshold=0)
    for _ in range(100):
        b.failure()
    assert b.allows()


class SwitchableEngine(FakeEngine):
    """Fails every request (vLLM raising inside generate) until `healed` is set."""

    def __init__(self) -> None:
        self.healed = threading.Event()

    async def generate(self, prompt: Any, params: Any, request_id: str) -> AsyncIterator[Any]:
        if not self.healed.is_set():
            raise RuntimeError("KV transfer failed")
        yield engine_output(1, True)


def test_a_failing_node_is_taken_out_and_probed_back() -> None:
    engine = SwitchableEngine()
    node = NodeThread(engine=engine)
    address = WorkerAddress("decode-0", Role.DECODE, node.spec.rpc_address, node.spec.stats_address)

    async def request(registry: WorkerRegistry, rid: str) -> None:
        w = registry.workers["decode-0"]
        stream = await w.open(GenerateRequest(rid, [1, 2], Sampling(max_tokens=1)))
        try:
            await stream.next(30)
        finally:
            w.release(stream)

    async def run() -> None:
        registry = WorkerRegistry([address], 30.0, breaker=lambda: Breaker(threshold=2, cooldown_s=0.5))
        registry.start()
        try:
            async with asyncio.timeout(30):
                while not registry.healthy(Role.DECODE):  # noqa: ASYNC110 (the handshake runs on its own task)
                    await asyncio.sleep(0.05)
            for i in range(2):
                with pytest.raises(WorkerError, match="KV transfer failed"):
                    await request(registry, f"r{i}")
            assert registry.healthy(Role.DECODE) == []  # out: the router picks others, or answers 503
            await asyncio.sleep(0.6)
            assert len(registry.healthy(Role.DECODE)) == 1  # half-open: one probe may go
            with pytest.raises(WorkerError):
                await request(registry, "probe-1")
            assert registry.healthy(Role.DECODE) == []  # the probe failed: out for 1 s now
            engine.healed.set()
            await asyncio.sleep(1.1)
            await request(registry, "probe-2")
            assert registry.workers["decode-0"].breaker.state == CLOSED
            assert len(registry.healthy(Role.DECODE)) == 1
        finally:
            await registry.close()

    try:
        asyncio.run(run())
    finally:
        node.stop()
