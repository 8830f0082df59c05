"""A shorter busy-wait on vLLM's shared-memory queues on CPU, so that the engine core does not
take its worker's core while the worker computes.

vLLM's multiprocess executor passes each step to its worker, and the step's output back, through
a shared-memory ring (`shm_broadcast.MessageQueue`). A reader that finds nothing there spins
(`sched_yield`) for `busy_loop_s` = 1 s after its last read before it sleeps on a ZMQ
notification. On a GPU the engine core spins on a core the model does not use. On CPU (vLLM forces
the multiprocess executor there, platforms/cpu.py) a node has one or two cores: the engine core
spins while its worker computes the step it is waiting for, on the same core or on the one the
other node computes on. py-spy on a prefill node's engine core under load put 55% of its samples
in that `sched_yield` (docs/benchmarks.md, "Where the time goes").

`apply()` gives every reader's `SpinCondition` a window of `SPIN_S` instead, on CPU only. A
reader then sleeps on the notification the writer already sends after every write. Those can be
lost (vLLM says so: it re-reads the ring every 5 s, `SHM_READER_RECHECK_INTERVAL_MS`, "lost-notify
recovery"), and with a short window a reader sleeps at every step instead of after a second of
idleness: the first suite run with a 2 ms window had one stream stall for 5.015 s. So a reader's
sleep is also capped: a quarter of the time since its last read, between 1 and `MAX_SLEEP_MS`. A
lost notification then costs a few milliseconds (a quarter of the step so far; at most 256 ms
after a long idle spell), and an idle reader wakes 4 times a second to look. The cap was 64 ms:
an idle worker's main thread then took 0.27-0.30% of a core for its 16 looks a second, the most
of anything in an idle worker but Gloo's loop (bench/idle_cpu.py; issue #16 wants the whole
cluster under 2%). (An earlier attempt here with a
window of 0 and no cap, on an older vLLM without the re-check, hung the engine.)
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

SPIN_S = float(os.environ.get("SPLITMIND_SHM_SPIN_S", "0.002"))
MAX_SLEEP_MS = 256

# What `apply()` decided in this process: "fixed", "not_needed", "upstream_changed" or "not_loaded".
status = "not_loaded"


def apply() -> None:
    global status
    from vllm.distributed.device_communicators import shm_broadcast
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        status = "not_needed"
        return
    cls = shm_broadcast.SpinCondition
    if getattr(cls.__init__, "__splitmind_spin__", False):
        status = "fixed"
        return
    if "busy_loop_s" not in inspect.signature(cls.__init__).parameters:
        status = "upstream_changed"
        logger.warning("splitmind: vLLM's SpinCondition has no busy_loop_s any more; the spin window is vLLM's")
        return
    cls.__init__ = _with_window(cls.__init__)  # type: ignore[method-assign]
    cls.wait = _with_capped_sleep(cls.wait)  # type: ignore[method-assign]
    status = "fixed"
    logger.info("splitmind: vLLM's shared-memory readers spin %.1f ms after a read, not 1 s", SPIN_S * 1e3)


def _with_window(init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("busy_loop_s", SPIN_S)
        init(self, *args, **kwargs)

    wrapper.__splitmind_spin__ = True  # type: ignore[attr-defined]
    return wrapper


def _with_capped_sleep(wait: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(wait)
    def wrapper(self: Any, timeout_ms: int | None = None) -> None:
        since_read_ms = (time.monotonic() - self.last_read) * 1e3
        cap = int(min(MAX_SLEEP_MS, max(1.0, since_read_ms / 4)))
        wait(self, timeout_ms=cap if timeout_ms is None else min(timeout_ms, cap))

    return wrapper
