"""Keeps an idle engine's KV usage report true.

vLLM reports KV cache usage with the stats of an engine step, and an idle engine does not step.
KV that is due to be freed while the engine idles (a prefill's KV released through a decode
node's `ReleaseKV`, or whose lease ran out) is freed at its next step, so until a client sends
something the node's heartbeat went on reporting it in use: seen as 0.04% of the prefill node's
KV "held" for as long as the cluster stayed idle after a released request (tests/e2e/
test_kv_release.py), which an operator reads as a leak, and which load-aware routing reads as load.

So when a node has had no request for `IDLE_S` and its engine's last report shows KV in use, the
node runs a one-token local request (greedy, no KV transfer: nothing is leased) through the
engine: the step frees what is due and reports what is left, and a report that changed is
published at once. A prefill's KV is freed a step after the decode side's notification arrives,
which is some tenths of a second after the request ended, so the first steps come every
`STEP_S`; while the report stays the same (KV leased to a decode node that has not pulled it yet)
the interval doubles up to `STALE_MAX_S`. The same
step is what makes a decode node's engine send a `ReleaseKV`'s notification to the prefill engine
(its worker sends notifications during steps, after a NIXL handshake the first time): for
`RELEASE_STEPS_S` after a release an idle decode node steps every `STEP_S`. The engine counters
discount the step's token (`EngineCounters.refreshes_pending`), so it is not traffic.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any, Protocol

from splitmind.node.counters import EngineCounters

logger = logging.getLogger(__name__)

IDLE_S = 0.5  # no request this long: the node is idle
STEP_S = 0.25
STALE_MAX_S = 4.0
RELEASE_STEPS_S = 2.0
TIMEOUT_S = 30.0
_ids = itertools.count()


async def refresh(engine: Any) -> None:
    """One engine step's worth of request: a one-token prompt, one token out."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(max_tokens=1, temperature=0.0)
    prompt = TokensPrompt(prompt_token_ids=[1])
    async with asyncio.timeout(TIMEOUT_S):
        async for _ in engine.generate(prompt, params, f"splitmind-kv-refresh-{next(_ids)}"):
            pass


class IdleNode(Protocol):
    """What the loop reads and writes on its node (splitmind/node/runtime.py)."""
    engine: Any
    tasks: dict[str, asyncio.Task[None]]
    last_request_at: float
    release_steps_until: float  # step every STEP_S until then (a ReleaseKV's notification)
    counters: EngineCounters
    stats_due: asyncio.Event  # set: publish the node's stats now


async def keep_report_true(node: IdleNode) -> None:
    """Steps the node's idle engine when a step is due: every `STEP_S` until
    `release_steps_until`, and while its last report shows KV in use, every `STEP_S` at first
    and less often while the report does not change."""
    last_refresh = 0.0
    interval = STEP_S
    while True:
        await asyncio.sleep(STEP_S)
        now = time.monotonic()
        if node.tasks or now - node.last_request_at < IDLE_S:
            interval = STEP_S  # requests step the engine; the next idle spell starts quick
            continue
        releasing = now < node.release_steps_until
        stale = node.counters.kv_usage > 0.0 and now - last_refresh >= interval
        if not (releasing or stale):
            continue
        before = node.counters.kv_usage
        if stale and not releasing and interval == STEP_S:
            logger.info("idle, and the engine last reported %.4f%% of its KV in use: refreshing the report",
                        100 * before)
        last_refresh = now
        node.counters.refreshes_pending += 1
        try:
            await refresh(node.engine)
        except Exception as exc:  # an engine that died is the node's engine watch to report
            node.counters.refreshes_pending = 0
            logger.warning("engine step failed: %s: %s", type(exc).__name__, exc)
            continue
        if node.counters.kv_usage != before:
            node.stats_due.set()  # the gateway hears of freed KV now, not a heartbeat later
            interval = STEP_S
        elif stale:
            interval = min(2 * interval, STALE_MAX_S)
