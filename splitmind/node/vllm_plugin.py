"""splitmind's vLLM general plugin: fixes for upstream bugs, applied inside every vLLM process.

vLLM calls every `vllm.general_plugins` entry point (pyproject.toml) in the process that builds
the engine, in the engine-core process and in each worker, before the platform registers its
kernels. The engine core and workers are spawned fresh, so patching the node process alone
would not reach the code that samples; a plugin is how a fix reaches them without forking vLLM.

Each fix decides for itself whether it is needed (platform, installed vLLM) and says what it
did in one log line. Loading twice in one process is harmless.
"""

from __future__ import annotations

import logging

from splitmind import lifeline
from splitmind.node import cpu_expand_fix, cpu_seed_fix, gloo_idle_fix, shm_spin_fix

logger = logging.getLogger(__name__)

PLUGIN_NAME = "splitmind_fixes"  # the entry point's name: what VLLM_PLUGINS must list if set

# An engine process still running this long after its node exited is stopped outright
# (`splitmind.lifeline`). vLLM's own exit takes 0.1-0.3 s for the engine core here, 2.5-3 s for
# a worker (most of it the interpreter's final garbage collection of the worker's heap).
ENGINE_GRACE_S = 5.0


# Each fix, and what goes wrong if it cannot be applied.
FIXES = (
    (cpu_expand_fix.apply, "the CPU expand fix (vLLM issue 55005); sampling with speculative decoding may be wrong"),
    (cpu_seed_fix.apply, "the CPU seed fix; a seeded request in a chunked step may kill the engine"),
    (gloo_idle_fix.apply, "the no-Gloo-for-one-rank fix; an idle worker keeps a dozen event-loop threads waking"),
    (shm_spin_fix.apply, "the short shared-memory spin; the engine core spins on its worker's core after each step"),
)


def register() -> None:
    """Entry point (`vllm.general_plugins`); vLLM calls it once per process."""
    # Engine core and workers of a node `splitmind up` started. In the node itself (vLLM loads
    # plugins there too) the node's own earlier call stands, without this grace.
    lifeline.die_with_parent(grace_s=ENGINE_GRACE_S)
    for apply, failing in FIXES:
        try:
            apply()
        except Exception:  # never stop an engine from starting; say so loudly instead
            logger.exception("splitmind: could not apply %s", failing)
