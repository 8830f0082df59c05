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

A signal only asks. An engine process that got its SIGTERM and did not act on it outlived its
node by minutes in one CI run (stop 24: engine core and worker "sleeping", still there at the end
of the session), so `die_with_parent(grace_s=...)` also starts a backstop: a thread that blocks on
a pidfd of the parent (no polling, no CPU while the parent lives) and, `grace_s` after the parent
is gone, writes every thread's stack to stderr (the node's log: where it was stuck) and SIGKILLs
its own process. Nothing is lost by it: the process's only client, its parent, is gone.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import select
import signal
import sys
import threading
import time

ENV = "SPLITMIND_DIE_WITH_PARENT"
PARENT_ENV = "SPLITMIND_PARENT_PID"  # the launcher's pid, for its direct children's race check
_PR_SET_PDEATHSIG = 1


_armed = False  # in this process: the node calls first, then vLLM's plugin loads in it too


def _arm() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0)


def _arm_forked_child() -> None:
    if _arm() and os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)


def die_with_parent(grace_s: float | None = None) -> bool:
    """Ask the kernel for SIGTERM when this process's parent exits; True when armed. With
    `grace_s`, the process also SIGKILLs itself that long after its parent exited. A second
    call in the same process changes nothing (the first caller chose the grace)."""
    global _armed
    if os.environ.get(ENV) != "1" or not sys.platform.startswith("linux"):
        return False
    if _armed:
        return True
    if not _arm():
        return False
    _armed = True
    os.register_at_fork(after_in_child=_arm_forked_child)
    # The parent may have died before the call, and then no signal comes. Only the launcher's
    # direct children know their parent's pid; popped, so that engine processes, whose parent
    # is the node, do not inherit it.
    expected = os.environ.pop(PARENT_ENV, None)
    parent = os.getppid()
    if parent == 1 or (expected is not None and parent != int(expected)):
        os.kill(os.getpid(), signal.SIGTERM)
    elif grace_s is not None:
        _start_backstop(parent, grace_s)
    return True


def _start_backstop(parent: int, grace_s: float) -> None:
    try:
        pidfd = os.pidfd_open(parent)
    except ProcessLookupError:  # gone since getppid(): the signal may not have come
        os.kill(os.getpid(), signal.SIGTERM)
        pidfd = None
    except (AttributeError, OSError):  # no pidfds (Linux before 5.3): the signal alone
        return
    threading.Thread(target=_backstop, args=(pidfd, grace_s), name="splitmind-lifeline", daemon=True).start()


def _backstop(pidfd: int | None, grace_s: float) -> None:
    if pidfd is not None:
        select.select([pidfd], [], [])  # readable once the parent has exited
        os.close(pidfd)
    time.sleep(grace_s)
    sys.stderr.write(f"splitmind: pid {os.getpid()} still runs {grace_s:g} s after its parent exited "
                     "(it ignored or did not finish its SIGTERM); its threads, then SIGKILL:\n")
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def child_environment(launcher_pid: int) -> dict[str, str]:
    return {ENV: "1", PARENT_ENV: str(launcher_pid)}
