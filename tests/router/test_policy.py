"""Routing plugins, on stand-in workers (a fake is fine for router unit tests)."""

import random
from dataclasses import dataclass, field

from router.policy import LeastLoadedScorer, Profile, PromptLengthDecider, RouteRequest, WeightedScorer
from splitmind.protocol import NodeStats, Role


@dataclass
class FakeWorker:
    worker_id: str
    stats: NodeStats | None = None
    streams: dict[str, object] = field(default_factory=dict)


def worker(wid: str, running: int, waiting: int = 0, in_flight: int = 0) -> FakeWorker:
    stats = NodeStats(worker_id=wid, role=Role.DECODE, pid=1, seq=1, num_running=running, num_waiting=waiting)
    return FakeWorker(wid, stats, {str(i): object() for i in range(in_flight)})


REQ = RouteRequest("r", 10)


def test_least_loaded_wins() -> None:
    profile = Profile([WeightedScorer(LeastLoadedScorer())])
    workers = [worker("a", 3), worker("b", 1, 1), worker("c", 5)]
    assert profile.pick(REQ, workers).worker_id == "b"  # type: ignore[arg-type, union-attr]


def test_gateway_in_flight_counts_before_the_next_heartbeat() -> None:
    profile = Profile([WeightedScorer(LeastLoadedScorer())])
    workers = [worker("a", 0, in_flight=4), worker("b", 2)]
    assert profile.pick(REQ, workers).worker_id == "b"  # type: ignore[arg-type, union-attr]


def test_ties_break_randomly() -> None:
    profile = Profile([WeightedScorer(LeastLoadedScorer())], rng=random.Random(1))
    workers = [worker("a", 0), worker("b", 0)]
    picks = {profile.pick(REQ, workers).worker_id for _ in range(50)}  # type: ignore[arg-type, union-attr]
    assert picks == {"a", "b"}


def test_no_workers() -> None:
    assert Profile([WeightedScorer(LeastLoadedScorer())]).pick(REQ, []) is None


def test_prompt_length_decider() -> None:
    d = PromptLengthDecider(64)
    assert d.should_disaggregate(RouteRequest("r", 63)) == (False, "short_prompt")
    assert d.should_disaggregate(RouteRequest("r", 64)) == (True, "long_prompt")
