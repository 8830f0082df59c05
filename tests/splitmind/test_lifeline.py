"""Processes started with the launcher's environment die with their parent, however it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

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
