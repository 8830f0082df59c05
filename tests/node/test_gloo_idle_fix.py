"""splitmind/node/gloo_idle_fix.py, in fresh processes: torch alone (the Gloo groups vLLM's worker
creates, without vLLM), with and without the fix. The engine-level check, one loop thread in a real
worker, is tests/node/test_sampling.py's plugin test."""

from __future__ import annotations

import subprocess
import sys

import pytest

GROUPS = 5
SCRIPT = f"""
import os, sys, torch
import torch.distributed as dist
if sys.argv[1] == "fixed":
    from splitmind.node import gloo_idle_fix
    gloo_idle_fix.apply()
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[2], rank=0, world_size=1)
groups = [dist.new_group([0], backend="gloo") for _ in range({GROUPS})]
t = torch.ones(2)
for g in [None, *groups]:
    dist.all_reduce(t, group=g)  # every group still works, as the identity it is for one rank
    out = [torch.zeros(2)]
    dist.all_gather(out, t, group=g)
    both = torch.zeros(2)
    dist.all_gather_into_tensor(both, t, group=g)
    objs = [None]
    dist.all_gather_object(objs, {{"rank": dist.get_rank(g)}}, group=g)
    assert out[0].tolist() == both.tolist() == t.tolist() and objs == [{{"rank": 0}}], (out, both, objs)
    assert dist.get_backend(g) == "gloo" and dist.get_world_size(g) == 1
    dist.barrier(group=g)
names = [open(f"/proc/self/task/{{x}}/comm").read().strip() for x in os.listdir("/proc/self/task")]
for g in groups:  # as vLLM's worker shuts down (it once failed here: "ProcessGroup name not set")
    assert g.group_name
    dist.destroy_process_group(g)
dist.destroy_process_group()
print(int(t.sum().item()), names.count("gloo_tcp_loop"))
"""


def loops(mode: str) -> tuple[int, int]:
    from splitmind.launcher import free_port

    done = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(free_port("127.0.0.1"))], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    total, count = map(int, done.stdout.split()[-2:])
    return total, count


@pytest.mark.parametrize("mode", ["plain", "fixed"])
def test_single_rank_gloo_groups_and_their_loop_threads(mode: str) -> None:
    """Plain torch: a loop thread per group (the day this fails, torch shares devices itself and
    the fix can go). Fixed: no Gloo device and no thread at all, and every group still reduces."""
    total, count = loops(mode)
    assert total == 2
    if mode == "plain":
        assert count >= GROUPS + 1, "torch no longer gives each Gloo group its own device: remove gloo_idle_fix"
    else:
        assert count == 0
