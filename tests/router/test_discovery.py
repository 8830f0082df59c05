"""Workers found through DNS (router/discovery.py): real node servers (fake engines) listening on
two loopback addresses at the same ports, as pods behind a headless Service do; the lookup is a
stand-in whose answer the test changes."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from router import discovery
from router.discovery import resolve_dns, worker_address
from router.registry import WorkerRegistry
from splitmind.config import GatewayConfig, WorkerDNS
from splitmind.launcher import free_port
from splitmind.protocol import GenerateRequest, Role, Sampling
from tests.splitmind.node_thread import FakeEngine, NodeThread, engine_output

HOSTS = ("127.0.0.2", "127.0.0.3")  # Linux answers on all of 127/8
# generous: a node's first request imports vLLM's TokensPrompt on the node's event loop (seconds)
HEARTBEAT_TIMEOUT_S = 30.0


class GatedEngine(FakeEngine):
    """Streams a token every 20 ms until the test opens the gate: a stream that stays open."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    async def generate(self, prompt: Any, params: Any, request_id: str) -> AsyncIterator[Any]:
        while True:
            done = self.gate.is_set()
            yield engine_output(1, done)
            if done:
                return
            await asyncio.sleep(0.02)


async def until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 (polls state that changes on other tasks and threads)
            await asyncio.sleep(0.05)


def healthy_ids(registry: WorkerRegistry) -> set[str]:
    return {w.worker_id for w in registry.healthy(Role.DECODE)}


def test_workers_join_leave_after_their_streams_and_rejoin_without_a_restart() -> None:
    rpc, stats = free_port(HOSTS[0]), free_port(HOSTS[0])
    engines = [GatedEngine(), GatedEngine()]
    nodes = [NodeThread(engine=e, host=h, ports=(rpc, stats)) for e, h in zip(engines, HOSTS, strict=True)]
    source = WorkerDNS(Role.DECODE, "decode.splitmind.test", rpc, stats)
    ids = [worker_address(source, h).worker_id for h in HOSTS]
    answer = [HOSTS[0]]
    lookups: list[str] = []

    def resolve(name: str) -> list[str]:
        lookups.append(name)
        if answer == ["fail"]:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return list(answer)

    async def run() -> None:
        registry = WorkerRegistry([], HEARTBEAT_TIMEOUT_S, discover=[source], resolve_interval_s=0.1, resolve=resolve)
        left: list[str] = []
        registry.on_leave.append(lambda wid, role: left.append(wid))
        registry.start()
        try:
            await until(lambda: healthy_ids(registry) == {ids[0]})
            assert lookups[0] == "decode.splitmind.test"
            answer[:] = list(HOSTS)  # a pod appears
            await until(lambda: healthy_ids(registry) == set(ids))

            first = registry.workers[ids[0]]
            stream = await first.open(GenerateRequest("r1", [1, 2], Sampling(max_tokens=1000)))
            await stream.next(10)
            answer[:] = [HOSTS[1]]  # the first pod vanishes mid-stream
            await until(lambda: healthy_ids(registry) == {ids[1]})
            assert left == [ids[0]] and ids[0] in registry.workers  # leaving, not cut
            engines[0].gate.set()
            tokens = 0
            while True:
                delta = await stream.next(10)
                tokens += len(delta.token_ids)
                if delta.finish_reason is not None:
                    break
            first.release(stream)
            await until(lambda: ids[0] not in registry.workers)  # forgotten once its stream ended

            answer[:] = ["fail"]  # DNS breaks: nobody leaves
            await asyncio.sleep(0.5)
            assert healthy_ids(registry) == {ids[1]}

            answer[:] = list(HOSTS)  # the first pod comes back
            await until(lambda: healthy_ids(registry) == set(ids))
            assert tokens > 0
        finally:
            await registry.close()

    try:
        asyncio.run(run())
    finally:
        for n in nodes:
            n.stop()


def test_a_worker_back_before_it_was_forgotten_rejoins_after_a_new_handshake() -> None:
    engine = GatedEngine()
    rpc, stats = free_port(HOSTS[0]), free_port(HOSTS[0])
    node = NodeThread(engine=engine, host=HOSTS[0], ports=(rpc, stats))
    source = WorkerDNS(Role.DECODE, "d", rpc, stats)
    wid = worker_address(source, HOSTS[0]).worker_id
    answer = [HOSTS[0]]

    async def run() -> None:
        registry = WorkerRegistry([], HEARTBEAT_TIMEOUT_S, discover=[source], resolve_interval_s=0.1,
                                  resolve=lambda n: list(answer))
        registry.start()
        try:
            await until(lambda: healthy_ids(registry) == {wid})
            w = registry.workers[wid]
            stream = await w.open(GenerateRequest("r1", [1], Sampling(max_tokens=1000)))
            await stream.next(10)
            answer.clear()  # NXDOMAIN: the Service has no ready pod
            await until(lambda: not healthy_ids(registry))
            assert registry.leaving == {wid}
            answer.append(HOSTS[0])
            await until(lambda: healthy_ids(registry) == {wid})
            assert registry.workers[wid] is w and not registry.leaving
            engine.gate.set()
            while (await stream.next(10)).finish_reason is None:
                pass
        finally:
            await registry.close()

    try:
        asyncio.run(run())
    finally:
        node.stop()


def test_the_real_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "127.0.0.1" in resolve_dns("localhost")

    def fails(errno: int) -> Callable[..., Any]:
        def getaddrinfo(*args: Any, **kwargs: Any) -> Any:
            raise socket.gaierror(errno, "test")
        return getaddrinfo

    monkeypatch.setattr(discovery.socket, "getaddrinfo", fails(socket.EAI_NONAME))
    assert resolve_dns("gone.example") == []  # no such name: no workers
    monkeypatch.setattr(discovery.socket, "getaddrinfo", fails(socket.EAI_AGAIN))
    with pytest.raises(socket.gaierror):  # a failed lookup is not an empty answer
        resolve_dns("flaky.example")


def test_discovered_ids_and_addresses() -> None:
    s = WorkerDNS(Role.PREFILL, "prefill", 18100, 18101)
    a = worker_address(s, "10.0.0.7")
    assert (a.worker_id, a.rpc_address, a.stats_address) == (
        "prefill@10.0.0.7:18100", "tcp://10.0.0.7:18100", "tcp://10.0.0.7:18101")
    assert worker_address(s, "fd00::7").rpc_address == "tcp://[fd00::7]:18100"


def test_a_gateway_may_know_its_decode_workers_only_through_dns() -> None:
    GatewayConfig(model="m", served_model_name="m", host="127.0.0.1", port=1, workers=(),
                  discover=(WorkerDNS(Role.DECODE, "decode", 1, 2),))
    with pytest.raises(ValueError, match="at least one decode worker"):
        GatewayConfig(model="m", served_model_name="m", host="127.0.0.1", port=1, workers=(),
                      discover=(WorkerDNS(Role.PREFILL, "prefill", 1, 2),))
    with pytest.raises(ValueError, match="port out of range"):
        WorkerDNS(Role.DECODE, "decode", 0, 2)
