"""Start a real `splitmind up` (the CLI users run) for end-to-end tests, and stop it.

`stop()` checks what users are promised: SIGTERM ends every process the launcher started
(nodes, vLLM engine cores and workers, gateway) within 20 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from splitmind.launcher import free_port

ROOT = Path(__file__).resolve().parents[2]
SPLITMIND = ROOT / ".venv" / "bin" / "splitmind"
STOP_LIMIT_S = 20.0
HEARTBEAT_WAIT_S = 1.2  # nodes publish their counters every 0.5 s (`splitmind.node.runtime.STATS_INTERVAL_S`)

T = TypeVar("T")


def settled(read: Callable[[], T], moved: Callable[[T], bool], timeout_s: float = 20.0) -> T:
    """`read()` of node counters on the gateway once they include the last request: read until
    `moved` holds and the value stayed the same across a wait of two heartbeats. On a loaded
    machine the counters arrive later than two heartbeats (a fixed wait read a stale counter in a
    full suite run). After `timeout_s`, the last value read, for the caller's check to judge."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while True:
        now = read()
        if (now == last and moved(now)) or time.monotonic() > deadline:
            return now
        last = now
        time.sleep(HEARTBEAT_WAIT_S)


def metric(url: str, name: str, **labels: str) -> float | None:
    """The sum of `name`'s samples on `url`/metrics whose labels include `labels`; None when the
    gateway exports no such sample. Counters by their exposed name (`..._total`)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    found = [s.value for family in text_string_to_metric_families(text) for s in family.samples
             if s.name == name and labels.items() <= s.labels.items()]
    return sum(found) if found else None


def make_keys(keys_dir: Path) -> Path:
    """CURVE keys for a cluster's internal plane, made as users make them: `splitmind keys DIR`."""
    subprocess.run([str(SPLITMIND), "keys", str(keys_dir)], check=True, capture_output=True, cwd=ROOT)
    return keys_dir


class RunningCluster:
    def __init__(self, model: Path, workdir: Path, *, prefill: int, decode: int = 1, config: str = "",
                 keys_dir: Path | None = None) -> None:
        self.port = free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = workdir / "splitmind.toml"
        cfg.write_text(config)
        self.log = workdir / "up.log"
        self._log_file = open(self.log, "wb")
        self.keys_dir = keys_dir  # CURVE on the internal plane (`splitmind up --keys-dir`); None: plain TCP
        keys = ["--keys-dir", str(keys_dir)] if keys_dir is not None else []
        self.proc = subprocess.Popen(
            [str(SPLITMIND), "up", "--model", str(model), "--port", str(self.port), "--prefill", str(prefill),
             "--decode", str(decode), "--config", str(cfg), "--log-dir", str(workdir / "logs"), *keys],
            stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
        )
        self.descendants: set[int] = set()

    def wait_ready(self, timeout_s: float = 600.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"splitmind up exited ({self.proc.returncode}):\n{self.log.read_text()}")
            if "ready in" in self.log.read_text():
                self._remember_descendants()
                return
            time.sleep(0.5)
        raise TimeoutError(f"cluster not ready in {timeout_s}s:\n{self.log.read_text()}")

    def _remember_descendants(self) -> None:
        try:
            self.descendants = {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass

    def node_log(self, worker_id: str) -> str:
        return (self.workdir / "logs" / "latest" / f"{worker_id}.log").read_text(errors="replace")

    def stop(self) -> float:
        """SIGTERM the launcher; return seconds until every process it started was gone."""
        self._remember_descendants()
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_LIMIT_S + 10)
        finally:
            self._log_file.close()
        while time.monotonic() - t0 < STOP_LIMIT_S + 10 and self.alive():
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        leftover = self.alive()
        for pid in leftover:  # never leave a stray engine behind for the next test
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if leftover:
            raise AssertionError(f"processes left after stop: {leftover}")
        return elapsed

    def kill_launcher(self, limit_s: float = 60.0) -> float:
        """SIGKILL the launcher, as the OOM killer would: no cleanup runs in it. Every process
        it started must exit by itself (parent-death signals, `splitmind/lifeline.py`); return
        the seconds that took."""
        self._remember_descendants()
        assert self.descendants, "the launcher started no process"
        t0 = time.monotonic()
        self.proc.kill()
        self.proc.wait(10)
        self._log_file.close()
        while time.monotonic() - t0 < limit_s and self.alive():
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        leftover = self.alive()
        for pid in leftover:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if leftover:
            names = []
            for pid in leftover:
                try:
                    names.append(f"{pid} {psutil.Process(pid).name()}")
                except psutil.NoSuchProcess:
                    names.append(str(pid))
            raise AssertionError(f"orphans {limit_s:g} s after the launcher was killed: {names}")
        return elapsed

    def alive(self) -> list[int]:
        out = []
        for pid in self.descendants:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    out.append(pid)
            except psutil.NoSuchProcess:
                pass
        return out


