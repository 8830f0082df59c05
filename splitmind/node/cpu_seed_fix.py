"""Seeded sampling that cannot kill vLLM's CPU engine.

Upstream bug (vLLM's V1 model runner; no vLLM issue for the CPU backend yet; the same code was
fixed in the vllm-rbln and vllm-qaic forks, PRs 1025 and 92): after each step,
`GPUModelRunner._bookkeeping_sync` rewinds the generator of every request whose sampled token it
discards (a prompt still being prefilled in chunks, a preempted request being recomputed), by
`gen.set_offset(gen.get_offset() - 4)`. That is the Philox offset of a CUDA generator (vLLM PR
10097). The CPU runner inherits it, but a CPU generator (mt19937) has no offset: the call raises
`RuntimeError: CPU Generator does not use offset`, the worker fails and the engine core dies with
every request on it. A request has a generator only when it carries a `seed`, so it takes a
seeded request at temperature > 0 and a step that chunks it: two long seeded prompts at once, or
a busy node (bench/long2short.py's 0.7 half lost its decode node this way).

`apply()` wraps `CPUModelRunner.sample_tokens`: the generators of the requests whose token will be
discarded are taken out of the batch for that one step (the sampler then draws their thrown-away
token from the global generator, and the rewind finds nothing to rewind) and put back after it,
untouched. That is what the CUDA rewind achieves: a seeded request draws the same tokens however
its prompt was chunked.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

# What `apply()` decided in this process: "fixed", "upstream_fixed", "not_needed" or "not_loaded".
status = "not_loaded"
REWIND = "set_offset("  # the upstream rewind, in GPUModelRunner._bookkeeping_sync


def needed() -> str | None:
    """None where the fix is needed, else the status to record."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return "not_needed"  # CUDA generators have the offset the rewind uses
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    return None if REWIND in inspect.getsource(GPUModelRunner._bookkeeping_sync) else "upstream_fixed"


def keep_discarded_generators_out(sample_tokens: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(sample_tokens)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        batch = self.input_batch
        held: dict[int, Any] = {}
        for i in range(batch.num_reqs):
            if self.discard_request_mask.np[i] and i in batch.generators:
                held[i] = batch.generators.pop(i)
        try:
            return sample_tokens(self, *args, **kwargs)
        finally:
            batch.generators.update(held)

    wrapper.__splitmind_seed_fix__ = True  # type: ignore[attr-defined]
    return wrapper


def apply() -> str:
    """Wrap the CPU runner's `sample_tokens` where the installed vLLM needs it; returns (and
    records in `status`) what was done."""
    global status
    reason = needed()
    if reason is not None:
        if reason == "upstream_fixed" and status != reason:
            logger.warning("splitmind: vLLM no longer rewinds generators by offset; splitmind's CPU "
                           "seed fix stays off and can be removed")
        status = reason
        return status
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner

    if not getattr(CPUModelRunner.sample_tokens, "__splitmind_seed_fix__", False):
        setattr(CPUModelRunner, "sample_tokens", keep_discarded_generators_out(CPUModelRunner.sample_tokens))  # noqa: B010
        logger.info("splitmind: seeded requests in chunked steps no longer kill vLLM's CPU engine "
                    "(generator offset rewind)")
    status = "fixed"
    return status
