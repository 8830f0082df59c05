"""A node is ready only after one real request ran through its engine.

vLLM builds an engine for models it cannot run: with a head size its CPU attention has no kernel
for (hidden 96, 4 heads: 24), `splitmind up` used to print "ready", the first user request killed
the engine (`EngineDeadError`) and every request after it got a 502 from a node still listed as
healthy. So before a node opens its sockets, it prefills a short prompt and decodes a few
tokens, greedy, through the same `AsyncLLM.generate` that serves requests (MTP's draft and
verify steps included when MTP is on). A failure ends the node with the engine's reason in its
log and a non-zero exit, which `splitmind up` puts on the terminal.

The warm-up runs without KV transfer parameters, so the KV connector is idle and nothing is
leased; its blocks stay in the prefix cache like any finished request's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from splitmind.node.failures import WarmUpError

logger = logging.getLogger(__name__)

PROMPT_TOKENS = 16
DECODE_TOKENS = 4
TIMEOUT_S = 600.0  # a first request on a cold CPU engine takes seconds; this bounds a hang
REQUEST_ID = "splitmind-warm-up"


async def warm_up(engine: Any, timeout_s: float = TIMEOUT_S) -> float:
    """Seconds the warm-up took; raises WarmUpError with the engine's reason."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    vocab = int(engine.vllm_config.model_config.get_vocab_size())
    prompt = TokensPrompt(prompt_token_ids=[1 + i % max(1, vocab - 1) for i in range(PROMPT_TOKENS)])
    params = SamplingParams(max_tokens=DECODE_TOKENS, temperature=0.0, ignore_eos=True)
    t0 = time.monotonic()
    out = None
    try:
        async with asyncio.timeout(timeout_s):
            async for item in engine.generate(prompt, params, REQUEST_ID):
                out = item
    except TimeoutError:
        raise WarmUpError(f"the engine did not finish a {PROMPT_TOKENS}-token warm-up request in {timeout_s:g} s"
                          ) from None
    except Exception as exc:
        raise WarmUpError(f"the engine failed its warm-up request: {type(exc).__name__}: {exc}") from exc
    produced = len(out.outputs[0].token_ids) if out is not None else 0
    if produced != DECODE_TOKENS:
        raise WarmUpError(f"the engine's warm-up request produced {produced} tokens, not {DECODE_TOKENS}")
    return time.monotonic() - t0
