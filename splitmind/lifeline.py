"""Processes that die with their parent: what `splitmind up` starts must not outlive it.

A launcher killed outright (SIGKILL, the OOM killer) runs no cleanup, and its children, each in
its own session so that a stop reaches their whole process group, ran on as orphans holding
memory and ports (a killed launcher once left a gateway and two nodes with their engines running
for half an hour). Linux's parent-death signal (`prctl(PR_SET_PDEATHSIG)`) fixes that without a
watcher thread: the kernel sends SIGTERM to a process the moment its parent exits, and SIGTERM
runs the normal graceful stop (the gateway drains, a node shuts its engine down).

The launcher sets `SPLITMIND_DIE_WITH_PARENT=1` in its children's environment; the gateway, the
nodes and, through splitmind's vLLM plugin, vLLM's engine-core and worker processes (which
inherit that environment) each call `die_with_parent()` at start. The kernel clears the setting
in a forked child, and a forked engine process does not load plugins again, so an at-fork hook
re-arms it in every child forked after the first call. The chain holds hop by hop: launcher ->
node -> engine core -> worker. Without the variable nothing changes, so a vLLM that users run by
themselves in this environment is not affected by the plugin.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

ENV = "SPLITMIND_DIE_WITH_PARENT"
PARENT_ENV = "SPLITMIND_PARENT_PID"  # the launcher's pid, for its direct children's race check
_PR_SET_PDEATHSIG = 1


_fork_hook = False


def _arm() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0)


def _arm_forked_child() -> None:
    if _arm() and os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)


def die_with_parent() -> bool:
    """Ask the kernel for SIGTERM when this process's parent exits; True when armed."""
    global _fork_hook
    if os.environ.get(ENV) != "1" or not sys.platform.startswith("linux"):
        return False
    if not _arm():
        return False
    if not _fork_hook:
        os.register_at_fork(after_in_child=_arm_forked_child)
        _fork_hook = True
    # The parent may have died before the call, and then no signal comes. Only the launcher's
    # direct children know their parent's pid; popped, so that engine processes, whose parent
    # is the node, do not inherit it.
    expected = os.environ.pop(PARENT_ENV, None)
    parent = os.getppid()
    if parent == 1 or (expected is not None and parent != int(expected)):
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def child_environment(launcher_pid: int) -> dict[str, str]:
    return {ENV: "1", PARENT_ENV: str(launcher_pid)}
