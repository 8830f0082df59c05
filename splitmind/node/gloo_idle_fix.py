"""One Gloo device for every single-rank process group, so that an idle engine is idle.

vLLM's worker creates about a dozen torch.distributed process groups (world, TP, PP, DP, EP,
... each with a Gloo CPU group and, on CPU, a Gloo device group) even when every one of them
holds only this process. torch gives each Gloo group its own TCP device, and each device runs an
event-loop thread that wakes every 10 ms (`epoll_wait` with a 10 ms timeout in Gloo's
`tcp::Loop`). An idle node's worker spent 1.8% of a core on 13 such threads, and the bundled
cluster's two workers 3.7%: more than splitmind's every other process together once NIXL's
progress thread was calmed (bench/idle_cpu.py; issue #16 asks under 2% for the whole cluster).
No upstream issue was found; torch's own way to share one is `ProcessGroupGloo._Options._devices`.

A group of size 1 never connects to anyone, so one device serves all of them with nothing to
share: `apply()` replaces the `ProcessGroupGloo` class that torch.distributed builds Gloo groups
from with a subclass that hands such a group the process's one shared device. Groups with peers
(tensor parallelism across processes) keep their own device, exactly as before.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

# What `apply()` decided in this process: "fixed", "not_needed" or "not_loaded".
status = "not_loaded"


def apply() -> None:
    global status
    from torch.distributed import distributed_c10d as c10d

    base: Any = getattr(c10d, "ProcessGroupGloo", None)
    if base is None:
        status = "not_needed"  # torch without Gloo
        return
    if getattr(base, "__splitmind_one_device__", False):
        status = "fixed"
        return
    shared: list[Any] = []

    class OneDeviceGloo(base):  # type: ignore[misc]
        __splitmind_one_device__ = True

        def __init__(self, store: Any, rank: int, size: int, *args: Any, **kwargs: Any) -> None:
            timeout = kwargs.get("timeout")
            if size != 1 or args or set(kwargs) != {"timeout"} or timeout is None:
                super().__init__(store, rank, size, *args, **kwargs)
                return
            options = base._Options()
            options._timeout = timeout
            if not shared:
                shared.append(base.create_default_device())
            options._devices = [shared[0]]
            super().__init__(store, rank, size, options)

    OneDeviceGloo.__name__ = OneDeviceGloo.__qualname__ = base.__name__
    c10d.ProcessGroupGloo = OneDeviceGloo  # type: ignore[misc]
    status = "fixed"
    logger.info("splitmind: single-rank Gloo groups share one device (one idle event-loop thread, not one per group)")
