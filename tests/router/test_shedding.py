"""Load shedding: with every healthy decode node full, the gateway refuses with 429 and starts
nothing; a node with room takes the request."""

from __future__ import annotations

import pytest

from router.orchestrator import Orchestrator
from router.policies.base import WorkerView
from router.request_stream import RequestStream, view_of
from splitmind.config import GatewayTuning
from splitmind.errors import NoWorkerError, OverloadedError
from splitmind.protocol import NodeStats, Role, Sampling


class Worker:
    def __init__(self, worker_id: str, open_here: int, running: int, waiting: int) -> None:
        self.worker_id = worker_id
        self.role = Role.DECODE
        self.streams = {f"s{i}": RequestStream(f"s{i}", worker_id) for i in range(open_here)}
        self.stats = NodeStats(worker_id, Role.DECODE, 1, 1, num_running=running, num_waiting=waiting)

    def view(self) -> WorkerView:
        return view_of(self.worker_id, self.role, len(self.streams), 0, self.stats)


class Registry:
    def __init__(self, decode: list[Worker]) -> None:
        self.decode = decode
        self.on_leave: list[object] = []

    def healthy(self, role: Role) -> list[Worker]:
        return self.decode if role == Role.DECODE else []


def plan(workers: list[Worker], limit: int, n: int = 1) -> str:
    orchestrator = Orchestrator(Registry(workers), GatewayTuning(max_streams_per_decode=limit))  # type: ignore[arg-type]
    return orchestrator.plan("r", [1, 2, 3], Sampling(max_tokens=4), n=n).decode.worker_id


def test_a_full_node_is_passed_over() -> None:
    # d0 is full by the node's own count (other gateways' requests); d1 by this gateway's streams.
    full_by_node, full_here, room = Worker("d0", 0, 3, 1), Worker("d1", 4, 0, 0), Worker("d2", 1, 2, 0)
    assert plan([full_by_node, full_here, room], limit=4) == "d2"


def test_every_node_full_is_a_429_with_retry_after() -> None:
    with pytest.raises(OverloadedError) as refused:
        plan([Worker("d0", 4, 0, 0), Worker("d1", 0, 2, 2)], limit=4)
    assert refused.value.retry_after_s >= 1


def test_n_choices_need_room_for_all_of_them() -> None:
    with pytest.raises(OverloadedError):
        plan([Worker("d0", 2, 0, 0)], limit=4, n=3)
    assert plan([Worker("d0", 2, 0, 0)], limit=4, n=2) == "d0"


def test_no_limit_by_default_and_no_node_is_still_a_503() -> None:
    assert plan([Worker("d0", 500, 500, 500)], limit=0) == "d0"
    with pytest.raises(NoWorkerError):
        plan([], limit=4)
