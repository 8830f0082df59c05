"""Keeps an idle engine's KV usage report true.

vLLM reports KV cache usage with the stats of an engine step, and an idle engine does not step.
KV that is due to be freed while the engine idles (a prefill's KV released through a decode
node's `ReleaseKV`, or whose lease ran out) is freed at its next step, so until a client sends
something the node's heartbeat went on reporting it in use: seen as 0.04% of the prefill node's
KV "held" for as long as the cluster stayed idle after a released request (tests/e2e/
test_kv_release.py), which an operator reads as a leak, and which load-aware routing reads as load.

So when a node has had no request for `IDLE_S` and its engine's last report shows KV in use, the
node runs a one-token local request (greedy, no KV transfer: nothing is leased) through the
engine, at most every `STALE_S`: the step frees what is due and reports what is left. The same
step is what makes a decode node's engine send a `ReleaseKV`'s notification to the prefill engine
(its worker sends notifications during steps, after a NIXL handshake the first time): for
`RELEASE_STEPS_S` after a release an idle decode node steps every `STEP_S`. The engine counters
discount the step's token (`EngineCounters.refreshes_pending`), so it is not traffic.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

logger = logging.getLogger(__name__)

IDLE_S = 0.5  # no request this long: the node is idle
STEP_S = 0.25
STALE_S = 0.5
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
