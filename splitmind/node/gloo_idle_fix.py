"""No Gloo for single-rank process groups, so that an idle engine is idle.

vLLM's worker creates about a dozen torch.distributed process groups (world, TP, PP, DP, EP,
... each with a Gloo CPU group and, on CPU, a Gloo device group) even when every one of them
holds only this process. torch gives each Gloo group its own TCP device, and each device runs an
event-loop thread that wakes every 10 ms (`epoll_wait` with a 10 ms timeout in Gloo's
`tcp::Loop`). An idle node's worker spent 1.8% of a core on 13 such threads, and the bundled
cluster's two workers 3.7%: more than splitmind's every other process together once NIXL's
progress thread was calmed (bench/idle_cpu.py; issue #16 asks under 2% for the whole cluster).
No upstream issue was found.

A group of size 1 never talks to anyone: each of its collectives is the identity (a reduction
over one rank, a gather of one tensor, a broadcast from itself). `apply()` replaces the
`ProcessGroupGloo` class that torch.distributed builds Gloo groups from with one that hands a
single-rank group a `OneRankGroup`, a Python process group (torch supports those: its own
threaded test group is one) that does exactly that, with no device and no thread. Sharing one
Gloo device among the single-rank groups (the first version of this fix) still left one loop
per worker, 0.35% of a core each. Groups with peers (tensor parallelism across processes) keep
Gloo, exactly as before; if torch refuses a Python group, single-rank groups share one Gloo
device instead.
"""

from __future__ import annotations

import logging
import types
from typing import Any

logger = logging.getLogger(__name__)

# What `apply()` decided in this process: "fixed", "not_needed" or "not_loaded".
status = "not_loaded"


def _one_rank_group_class() -> Any:
    import torch.distributed as dist
    from torch._C._distributed_c10d import _create_work_from_future  # type: ignore[attr-defined]
    from torch.futures import Future

    def done(result: Any = None) -> Any:
        fut: Future[Any] = Future()
        fut.set_result(result)
        return _create_work_from_future(fut)

    def copy_all(outs: Any, ins: Any) -> None:
        for out, inp in zip(outs, ins, strict=True):
            out.copy_(inp.reshape(out.shape))

    group: Any = dist.ProcessGroup  # its stubs type the collectives' arguments; these take them as they come

    class OneRankGroup(group):  # type: ignore[misc]
        """Every collective of a group whose only member is this process."""

        def __init__(self, rank: int, size: int) -> None:
            super().__init__(rank, size)
            self.options = types.SimpleNamespace()  # torch sets the group's name and ranks here
            self._name = self._desc = ""

        def getBackendName(self) -> str:  # torch's name
            return "gloo"

        # torch keeps a group's name in its backend, and this group has none: kept here, or
        # `destroy_process_group` (vLLM's worker shutdown) fails with "ProcessGroup name not set"
        def _set_group_name(self, name: str) -> None:
            self._name = name

        @property
        def group_name(self) -> str:
            return self._name

        def _set_group_desc(self, desc: str) -> None:
            self._desc = desc

        @property
        def group_desc(self) -> str:
            return self._desc

        def _set_sequence_number_for_group(self) -> None:
            pass

        def allreduce(self, tensors: Any, opts: Any = None) -> Any:
            return done(tensors)

        allreduce_coalesced = broadcast = reduce = allreduce  # each the identity on one rank

        def barrier(self, opts: Any = None) -> Any:
            return done()

        def allgather(self, outs: Any, ins: Any, opts: Any = None) -> Any:
            copy_all([o[0] for o in outs], ins)
            return done(outs)

        allgather_coalesced = allgather

        def _allgather_base(self, out: Any, inp: Any, opts: Any = None) -> Any:
            copy_all([out], [inp])
            return done(out)

        # one tensor in, one out: on one rank each of these is a copy
        all_gather_single = _reduce_scatter_base = reduce_scatter_single = _allgather_base

        def reduce_scatter(self, outs: Any, ins: Any, opts: Any = None) -> Any:
            copy_all(outs, [i[0] for i in ins])
            return done(outs)

        def gather(self, outs: Any, ins: Any, opts: Any = None) -> Any:
            copy_all([outs[0][0]], [ins[0]])
            return done(outs)

        def scatter(self, outs: Any, ins: Any, opts: Any = None) -> Any:
            copy_all([outs[0]], [ins[0][0]])
            return done(outs)

        def alltoall(self, outs: Any, ins: Any, opts: Any = None) -> Any:
            copy_all(outs, ins)
            return done(outs)

        def alltoall_base(self, out: Any, inp: Any, out_splits: Any, in_splits: Any, opts: Any = None) -> Any:
            copy_all([out], [inp])
            return done(out)

    return OneRankGroup


def apply() -> None:
    global status
    from torch.distributed import distributed_c10d as c10d

    base: Any = getattr(c10d, "ProcessGroupGloo", None)
    if base is None:
        status = "not_needed"  # torch without Gloo
        return
    if getattr(base, "__splitmind_no_gloo__", False):
        status = "fixed"
        return
    one_rank = _one_rank_group_class()
    shared: list[Any] = []

    class Meta(type(base)):  # type: ignore[misc]
        # torch checks that what it built for a "gloo" group is a ProcessGroupGloo
        def __instancecheck__(cls, obj: Any) -> bool:
            return isinstance(obj, (base, one_rank))

    class NoGlooForOneRank(base, metaclass=Meta):  # type: ignore[misc]
        __splitmind_no_gloo__ = True

        def __new__(cls, store: Any, rank: int, size: int, *args: Any, **kwargs: Any) -> Any:
            if size == 1 and not args and set(kwargs) <= {"timeout"}:
                try:
                    return one_rank(rank, size)
                except Exception as exc:  # a torch that refuses Python groups: share one device
                    logger.warning("splitmind: no Python process group (%s); single-rank Gloo groups share a device",
                                   exc)
                    options = base._Options()
                    if "timeout" in kwargs:  # else the options' own default, as Gloo's would be
                        options._timeout = kwargs["timeout"]
                    if not shared:
                        shared.append(base.create_default_device())
                    options._devices = [shared[0]]
                    return base(store, rank, size, options)
            return base(store, rank, size, *args, **kwargs)

    NoGlooForOneRank.__name__ = NoGlooForOneRank.__qualname__ = base.__name__
    c10d.ProcessGroupGloo = NoGlooForOneRank  # type: ignore[misc]
    status = "fixed"
    logger.info("splitmind: single-rank process groups need no Gloo device (no idle event-loop thread)")
