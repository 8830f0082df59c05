"""What a routing decision reads of the workers is kept between decisions (router/client.py's
snapshots, router/registry.py's healthy list) and must never be stale: each change to a worker's
load or health shows in the next decision. Real clients and registry, with sockets never connected."""

from __future__ import annotations

import asyncio
import time

from router.breaker import Breaker
from router.client import WorkerClient
from router.orchestrator import Orchestrator
from router.registry import WorkerRegistry
from router.request_stream import view_of
from splitmind.config import GatewayTuning, WorkerAddress
from splitmind.protocol import PROTOCOL_VERSION, GenerateRequest, HealthReply, NodeStats, Role, Sampling, TokenDelta
from tests.router.null_sockets import NullContext


def client(wid: str, role: Role = Role.DECODE, breaker: Breaker | None = None,
           prefix_caching: bool = False) -> WorkerClient:
    w = WorkerClient(WorkerAddress(wid, role, "tcp://null:1", "tcp://null:2"), NullContext(),  # type: ignore[arg-type]
                     breaker=breaker)
    w.info = HealthReply("h", wid, role, 1, PROTOCOL_VERSION, "model", 4096, prefix_caching=prefix_caching)
    heartbeat(w)
    return w


def heartbeat(w: WorkerClient, running: int = 0, tokens: int = 0, kv: float = 0.0) -> None:
    w.stats = NodeStats(w.worker_id, w.role, 1, 1, num_running=running, tokens_in_flight=tokens, kv_usage=kv)
    w.last_seen_s = time.monotonic()


def fresh(w: WorkerClient) -> object:
    """The snapshot built from scratch, as before snapshots were kept."""
    return view_of(w.worker_id, w.role, len(w.streams), w.load.tokens, w.stats,
                   w.info is not None and w.info.prefix_caching)


def registry_of(*workers: WorkerClient, heartbeat_timeout_s: float = 60.0) -> WorkerRegistry:
    registry = WorkerRegistry([], heartbeat_timeout_s)
    for w in workers:
        registry.workers[w.worker_id] = w
    registry.health_changed()
    return registry


def scan(registry: WorkerRegistry, role: Role) -> list[WorkerClient]:
    """`healthy()` worked out afresh, as before the list was kept."""
    return [w for w in registry.workers.values()
            if w.role == role and w.worker_id not in registry.leaving
            and w.is_healthy(registry.heartbeat_timeout_s) and w.breaker.allows()]


def test_a_snapshot_is_kept_until_something_it_shows_changes() -> None:
    async def run() -> None:
        w = client("d0")
        first = w.view()
        assert w.view() is first  # nothing changed: the same snapshot
        heartbeat(w, running=3, tokens=500, kv=0.5)
        assert w.view() == fresh(w) and w.view().kv_usage == 0.5
        stream = await w.open(GenerateRequest("a", [1] * 700, Sampling(max_tokens=5)))  # a stream opens
        assert w.view() == fresh(w) and w.view().tokens_in_flight == 700 and w.view().requests == 3
        stream.push(TokenDelta("a", [1, 2]))  # tokens arrive
        assert w.view() == fresh(w) and w.view().tokens_in_flight == 702
        await w.open(GenerateRequest("b", [1] * 10, Sampling(max_tokens=5)))
        await w.open(GenerateRequest("c", [1] * 10, Sampling(max_tokens=5)))
        assert w.view() == fresh(w) and w.view().requests == 3  # as many as the heartbeat says
        await w.open(GenerateRequest("d", [1] * 10, Sampling(max_tokens=5)))
        assert w.view() == fresh(w) and w.view().requests == 4  # now its own 4 do
        w.release(stream)  # a stream ends
        assert w.view() == fresh(w) and w.view().tokens_in_flight == 500
        await w.abort("b")
        assert w.view() == fresh(w) and w.view().requests == 3
        # a new handshake: the node restarted with prefix caching on
        w.info = HealthReply("h", "d0", Role.DECODE, 2, PROTOCOL_VERSION, "model", 4096, prefix_caching=True)
        assert w.view() == fresh(w) and w.view().prefix_caching

    asyncio.run(run())


def test_the_next_decision_sees_each_heartbeat_and_stream() -> None:
    async def run() -> None:
        a, b = client("a"), client("b")
        heartbeat(a, tokens=100)
        heartbeat(b, tokens=200)
        orch = Orchestrator(registry_of(a, b), GatewayTuning())

        def decode() -> str:
            return orch.plan("r", [1, 2, 3], Sampling(max_tokens=4)).decode.worker_id

        assert decode() == "a"
        heartbeat(a, tokens=5000)  # a heartbeat says a is busy
        assert decode() == "b"
        stream = await b.open(GenerateRequest("r1", [1] * 9000, Sampling(max_tokens=4)))  # b takes a long prompt
        assert decode() == "a"
        heartbeat(b, tokens=300)  # its heartbeat lags: the stream still counts
        assert decode() == "a"
        b.release(stream)
        assert decode() == "b"
        stream = await b.open(GenerateRequest("r2", [1] * 4000, Sampling(max_tokens=4)))
        assert decode() == "b"
        for _ in range(3):
            stream.push(TokenDelta("r2", [1] * 400))  # its reasoning grows past a's load
        assert decode() == "a"

    asyncio.run(run())


def test_the_healthy_list_follows_leaving_handshakes_and_breakers() -> None:
    async def run() -> None:
        now = [0.0]
        tripping = Breaker(threshold=1, cooldown_s=5.0, clock=lambda: now[0])
        workers = [client("d0"), client("d1", breaker=tripping), client("d2"), client("p0", Role.PREFILL)]
        registry = registry_of(*workers)

        def check(expected: list[str]) -> None:
            got = registry.healthy(Role.DECODE)
            assert [w.worker_id for w in got] == expected
            assert got == scan(registry, Role.DECODE)
            assert registry.healthy(Role.PREFILL) == scan(registry, Role.PREFILL) == [workers[3]]

        check(["d0", "d1", "d2"])
        check(["d0", "d1", "d2"])  # kept
        registry.leave("d0")
        check(["d1", "d2"])
        workers[2].info = None  # it must answer a handshake again
        check(["d1"])
        workers[2].info = HealthReply("h", "d2", Role.DECODE, 1, PROTOCOL_VERSION, "model", 4096)
        check(["d1", "d2"])
        tripping.failure()  # d1's breaker opens
        check(["d2"])
        now[0] = 6.0  # half-open: one probe may go
        check(["d1", "d2"])
        tripping.started("probe")
        check(["d2"])
        tripping.success()
        check(["d1", "d2"])
        registry.join(WorkerAddress("d0", Role.DECODE, "tcp://null:1", "tcp://null:2"))  # back: a new handshake first
        check(["d1", "d2"])
        workers[0].info = HealthReply("h", "d0", Role.DECODE, 2, PROTOCOL_VERSION, "model", 4096)
        check(["d0", "d1", "d2"])
        await registry.close()

    asyncio.run(run())


def test_a_worker_whose_heartbeat_stops_drops_out_and_comes_back_with_it() -> None:
    workers = [client("d0"), client("d1")]
    registry = registry_of(*workers, heartbeat_timeout_s=0.2)
    assert registry.healthy(Role.DECODE) == workers
    for _ in range(3):
        time.sleep(0.1)
        heartbeat(workers[0])  # d1 falls silent
    assert registry.healthy(Role.DECODE) == scan(registry, Role.DECODE) == [workers[0]]
    heartbeat(workers[1])
    assert registry.healthy(Role.DECODE) == scan(registry, Role.DECODE) == workers
    workers[1].last_seen_s = None  # as a reply from a worker never heard from leaves it
    assert registry.healthy(Role.DECODE) == scan(registry, Role.DECODE) == [workers[0]]
