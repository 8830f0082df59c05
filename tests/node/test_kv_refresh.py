"""The idle-engine stepping that keeps a node's KV report true (splitmind/node/kv_refresh.py),
with a stand-in engine whose steps change the reported usage. The real path (a prefill node's
report back at zero within 2 s of a released request) is tests/e2e/test_kv_release.py."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from splitmind.node import kv_refresh
from splitmind.node.counters import EngineCounters


@dataclass
class Node:
    engine: Any = None
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    last_request_at: float = 0.0
    release_steps_until: float = 0.0
    counters: EngineCounters = field(default_factory=EngineCounters)
    stats_due: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kv_refresh, "IDLE_S", 0.02)
    monkeypatch.setattr(kv_refresh, "STEP_S", 0.01)
    monkeypatch.setattr(kv_refresh, "STALE_MAX_S", 0.08)


def run(node: Node, steps: list[float], seconds: float, usage_after: list[float] | None = None) -> None:
    """Runs the loop for `seconds`; each step is recorded in `steps` and sets the usage to the
    next value of `usage_after` (unchanged when it runs out)."""
    async def step(engine: Any) -> None:
        steps.append(time.monotonic())
        assert node.counters.refreshes_pending == 1, "a step's token is marked as not traffic"
        node.counters.refreshes_pending = 0
        if usage_after:
            node.counters.kv_usage = usage_after.pop(0)

    async def main() -> None:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(kv_refresh, "refresh", step)
            task = asyncio.create_task(kv_refresh.keep_report_true(node))
            await asyncio.sleep(seconds)
            task.cancel()

    asyncio.run(main())


def test_an_idle_node_whose_report_shows_kv_steps_until_the_report_changes_and_publishes_it() -> None:
    node = Node()
    node.counters.kv_usage = 0.0004
    steps: list[float] = []
    run(node, steps, 0.3, usage_after=[0.0004, 0.0])
    assert len(steps) == 2, steps  # unchanged, then freed; a zero report needs no more steps
    assert node.counters.kv_usage == 0.0
    assert node.stats_due.is_set(), "a changed report is published at once"


def test_a_report_that_does_not_change_is_stepped_less_and_less_often() -> None:
    node = Node()
    node.counters.kv_usage = 0.0004  # leased to a decode node that has not pulled it
    steps: list[float] = []
    run(node, steps, 0.6)
    gaps = [b - a for a, b in itertools.pairwise(steps)]
    assert len(steps) >= 4 and gaps[-1] >= 0.07 > gaps[0], gaps
    assert not node.stats_due.is_set()


def test_a_busy_node_is_not_stepped_and_a_release_steps_an_idle_one() -> None:
    busy = Node(tasks={"r": None}, release_steps_until=time.monotonic() + 10)  # type: ignore[dict-item]
    busy.counters.kv_usage = 0.5
    steps: list[float] = []
    run(busy, steps, 0.1)
    assert steps == []
    idle = Node(release_steps_until=time.monotonic() + 0.1)  # a ReleaseKV: its notification goes out at a step
    steps = []
    run(idle, steps, 0.3)
    assert 3 <= len(steps) <= 11, steps  # every STEP_S until release_steps_until, then no more
    assert steps[-1] <= idle.release_steps_until + 0.02
