"""Processes started with the launcher's environment die with their parent, however it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from splitmind import lifeline

# A parent that starts a child (the "node") which forks a grandchild (the "engine"), then waits.
FAMILY = """
import os, sys, time
from splitmind import lifeline
assert lifeline.die_with_parent()
if os.fork() == 0:
    time.sleep(600)
    sys.exit(0)
time.sleep(600)
"""


def _wait_gone(pids: list[int], limit_s: float) -> list[int]:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return []
        time.sleep(0.05)
    return alive


# The launcher: starts the family in its own session, as `splitmind up` starts nodes, then waits.
LAUNCHER = """
import os, subprocess, sys, time
from splitmind import lifeline
env = {**os.environ, **lifeline.child_environment(os.getpid())}
subprocess.Popen([sys.executable, "-c", sys.argv[1]], env=env, start_new_session=True)
time.sleep(600)
"""


def test_a_child_and_its_forked_child_die_when_the_launcher_is_killed() -> None:
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, FAMILY], env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        deadline = time.monotonic() + 20
        while len(psutil.Process(launcher.pid).children(recursive=True)) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        family = [p.pid for p in psutil.Process(launcher.pid).children(recursive=True)]
        launcher.send_signal(signal.SIGKILL)  # no cleanup runs in the launcher
        launcher.wait()
        assert _wait_gone(family, 10) == []
    finally:
        for p in psutil.Process().children(recursive=True):
            p.kill()


def test_without_the_launchers_environment_nothing_is_armed(monkeypatch) -> None:
    monkeypatch.delenv(lifeline.ENV, raising=False)
    assert lifeline.die_with_parent() is False


# A "node" whose engine process ignores its SIGTERM (one CI run had an engine core and worker
# outlive their node for minutes): with a grace, the backstop stops it and says where it was.
STUCK = """
import signal, sys, time
from splitmind import lifeline
signal.signal(signal.SIGTERM, signal.SIG_IGN)
assert lifeline.die_with_parent(grace_s=float(sys.argv[1]) if sys.argv[1] != "none" else None)
assert lifeline.die_with_parent(grace_s=60)  # a second call (vLLM's plugin in a node) changes nothing
print("armed", flush=True)
time.sleep(600)
"""


def _stuck_child(grace: str, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER_WITH_LOG, STUCK, grace, str(log)],
                                env={**os.environ, "PYTHONPATH": os.getcwd()})
    deadline = time.monotonic() + 20
    while "armed" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline and launcher.poll() is None
        time.sleep(0.05)
    (child,) = psutil.Process(launcher.pid).children()
    return launcher, child.pid


LAUNCHER_WITH_LOG = """
import os, subprocess, sys, time
from splitmind import lifeline
env = {**os.environ, **lifeline.child_environment(os.getpid())}
with open(sys.argv[3], "wb") as log:
    subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], env=env, start_new_session=True,
                     stdout=log, stderr=log)
time.sleep(600)
"""


def test_a_child_that_ignores_its_sigterm_is_stopped_after_its_grace(tmp_path: Path) -> None:
    launcher, child = _stuck_child("1", tmp_path / "child.log")
    try:
        t0 = time.monotonic()
        launcher.kill()
        launcher.wait()
        assert _wait_gone([child], 10) == []
        took = time.monotonic() - t0
        assert took >= 1.0, took  # not before its grace
        out = (tmp_path / "child.log").read_text()
        assert f"pid {child} still runs 1 s after its parent exited" in out, out
        assert "Current thread" in out and "in _backstop" in out and "<module>" in out, out  # every thread's stack
    finally:
        for p in psutil.Process().children(recursive=True):
            p.kill()


def test_without_a_grace_a_child_that_ignores_its_sigterm_runs_on(tmp_path: Path) -> None:
    """What the backstop is for: the signal alone does not stop it."""
    launcher, child = _stuck_child("none", tmp_path / "child.log")
    try:
        launcher.kill()
        launcher.wait()
        assert _wait_gone([child], 3) == [child]
    finally:
        psutil.Process(child).kill()
