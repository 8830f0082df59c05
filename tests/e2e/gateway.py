"""A second gateway (`python -m api`, what `splitmind up` runs) in front of a running cluster's
nodes, or in front of workers that are not there: several gateways share workers, and a gateway
with no live decode node shows what clients see when every decode node is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import msgspec

from splitmind.config import GatewayConfig, GatewayTuning, WorkerAddress, WorkerDNS
from splitmind.launcher import free_port
from splitmind.protocol import Role
from tests.e2e.cluster import ROOT, RunningCluster


def cluster_workers(cluster: RunningCluster) -> tuple[WorkerAddress, ...]:
    workers = httpx.get(cluster.url + "/admin/workers", timeout=10).json()
    return tuple(WorkerAddress(w["id"], Role[w["role"].upper()], w["address"], w["stats_address"]) for w in workers)


def absent_decode_worker() -> WorkerAddress:
    """A decode worker at ports nobody listens on: never healthy."""
    return WorkerAddress("decode-gone", Role.DECODE, f"tcp://127.0.0.1:{free_port('127.0.0.1')}",
                         f"tcp://127.0.0.1:{free_port('127.0.0.1')}")


class Gateway:
    def __init__(self, cluster: RunningCluster, log: Path, env: dict[str, str], *, model: Path | None = None,
                 workers: Sequence[WorkerAddress] | None = None, served_model_name: str = "model",
                 discover: Sequence[WorkerDNS] = (), wait_healthy: bool = True,
                 reasoning_profile: dict[str, object] | None = None, **tuning: object) -> None:
        config = GatewayConfig(
            model=str(model or cluster.workdir / "model"), served_model_name=served_model_name, host="127.0.0.1",
            port=free_port("127.0.0.1"), tuning=GatewayTuning(**tuning),  # type: ignore[arg-type]
            workers=tuple(workers if workers is not None else cluster_workers(cluster)),
            keys_dir=str(getattr(cluster, "keys_dir", "") or ""), discover=tuple(discover),
            reasoning_profile=dict(reasoning_profile or {}))
        self.url = f"http://127.0.0.1:{config.port}"
        self.log = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api", "--config", msgspec.json.encode(config).decode()], cwd=ROOT,
            env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not self._up(wait_healthy):
            assert self.proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)

    def _up(self, healthy: bool) -> bool:
        try:
            status = httpx.get(self.url + "/health", timeout=2).status_code
        except httpx.HTTPError:
            return False
        return status == 200 or not healthy

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(20)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()
