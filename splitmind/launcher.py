"""`splitmind up`: start the nodes and the gateway on this machine, supervise, stop them all.

Before anything loads, the ports it was told to use are checked. Each node and the gateway run
in their own session (process group), so a stop reaches vLLM's engine-core and worker processes
too, and each dies with the launcher even when it is killed outright (`splitmind/lifeline.py`).
A process that fails while the cluster starts stops it, with the reason on the terminal. One that
dies later is restarted with backoff (`splitmind/restarts.py`) while the gateway routes around it;
one that keeps dying stops everything (exit code 1). Stop order: the gateway first (drain), then
SIGTERM to every group, up to `STOP_GRACE_S` for them to exit, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import msgspec
import zmq

from splitmind import curve, lifeline
from splitmind.config import ClusterConfig, GatewayConfig, NodeSpec, WorkerAddress
from splitmind.failure_report import failure_report
from splitmind.ports import PortError, check_free, free_port
from splitmind.protocol import PROTOCOL_VERSION, HealthReply, HealthRequest, Role, encoder, from_node_decoder
from splitmind.restarts import RestartPolicy

STOP_GRACE_S = 12.0
_GONE = (ProcessLookupError, PermissionError, subprocess.TimeoutExpired)
KEY_VARIABLES = ("SPLITMIND_API_KEY", "SPLITMIND_ADMIN_KEY")  # only the gateway is given keys
NODE_MODULES = {Role.PREFILL: "prefill_node", Role.DECODE: "decode_node"}


class LaunchError(RuntimeError):
    pass


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    argv: list[str]
    extra_env: dict[str, str] | None
    restart_at: float | None = None  # when a dead child is due to start again


def split_cpus(num_nodes: int) -> list[str]:
    """Give each node its own cores when there are enough; otherwise share round-robin."""
    cpus = sorted(os.sched_getaffinity(0))
    if num_nodes <= 0:
        return []
    if len(cpus) < num_nodes:
        return [str(cpus[i % len(cpus)]) for i in range(num_nodes)]
    per = len(cpus) // num_nodes
    out = []
    for i in range(num_nodes):
        chunk = cpus[i * per:(i + 1) * per]
        out.append(str(chunk[0]) if len(chunk) == 1 else f"{chunk[0]}-{chunk[-1]}")
    return out


def resolved_keys_dir(cfg: ClusterConfig) -> str:
    """Absolute, so that no child depends on its working directory; "": no CURVE."""
    return str(Path(cfg.keys_dir).resolve()) if cfg.keys_dir else ""


def plan_nodes(cfg: ClusterConfig, model: str) -> list[NodeSpec]:
    """Nodes bind `cfg.node_host` (loopback unless configured), not the gateway's host: only the
    gateway, on this machine, talks to them. The NIXL side channel binds there too."""
    host = cfg.node_host
    keys_dir = resolved_keys_dir(cfg)
    roles = [Role.PREFILL] * cfg.num_prefill + [Role.DECODE] * cfg.num_decode
    cpus = split_cpus(len(roles))
    next_port = cfg.base_port

    def port() -> int:
        nonlocal next_port
        if cfg.base_port == 0:
            return free_port(host)
        next_port += 1
        return next_port - 1

    specs, counts = [], {Role.PREFILL: 0, Role.DECODE: 0}
    for role, cpu in zip(roles, cpus, strict=True):
        wid = f"{role.name.lower()}-{counts[role]}"
        counts[role] += 1
        specs.append(NodeSpec(
            worker_id=wid, role=role, model=model, engine=cfg.engine,
            rpc_address=f"tcp://{host}:{port()}", stats_address=f"tcp://{host}:{port()}",
            nixl_host=host, nixl_port=port(), cpus=cpu, keys_dir=keys_dir,
        ))
    return specs


def ping_node(address: str, timeout_s: float, keys: curve.CurveClientKeys | None = None) -> HealthReply | None:
    """A node's health reply, or None. With `keys`, as the gateway: a node with CURVE keys
    answers only clients whose key it knows."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        curve.make_client(sock, keys)
    sock.connect(address)
    try:
        sock.send(encoder.encode(HealthRequest("launcher", PROTOCOL_VERSION)))
        if sock.poll(int(timeout_s * 1000)):
            msg = from_node_decoder.decode(sock.recv())
            return msg if isinstance(msg, HealthReply) else None
        return None
    finally:
        sock.close()


def _reason(c: Child) -> str:
    return failure_report(c.log_path)


def gateway_healthy(url: str, prefill: int = 0, decode: int = 1) -> bool:
    """The gateway serves, and routes to at least `prefill` prefill and `decode` decode nodes:
    "ready" before the prefill nodes' first heartbeat reached it sent the first requests
    colocated (and a request that asked for the disaggregated route got a 503)."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            body = json.loads(r.read())
            return bool(r.status == 200 and body.get("prefill_workers", 0) >= prefill
                        and body.get("decode_workers", 0) >= decode)
    except Exception:
        return False


class Cluster:
    def __init__(self, cfg: ClusterConfig, model: str, log_dir: Path, say: object = print,
                 gateway_env: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.gateway_env = gateway_env or {}  # the gateway's API keys: never on a command line
        self.model = model
        self.log_dir = log_dir
        self.say = say
        self.children: list[Child] = []
        self.specs = plan_nodes(cfg, model)
        self.spec_by_id = {s.worker_id: s for s in self.specs}
        self.restarts = RestartPolicy()
        self.keys_dir = resolved_keys_dir(cfg)
        self.client_keys = curve.client_keys(self.keys_dir)
        self.served_model_name = cfg.served_model_name or Path(model).name
        self.url = f"http://{cfg.host if cfg.host != '0.0.0.0' else '127.0.0.1'}:{cfg.port}"

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        # Append-only for every writer: after a restart, processes of the old incarnation that
        # still hold the log (vLLM's resource tracker) would otherwise overwrite the new lines.
        log_file = open(log_path, "ab")
        child = Child(name, self._popen(argv, extra_env, log_file), log_path, log_file, argv, extra_env)
        self.children.append(child)
        return child

    def _popen(self, argv: list[str], extra_env: dict[str, str] | None, log_file: IO[bytes]
               ) -> subprocess.Popen[bytes]:
        root = str(Path(__file__).resolve().parent.parent)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(KEY_VARIABLES)}
        env = {**inherited, **(extra_env or {}), **lifeline.child_environment(os.getpid()),
               "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        return subprocess.Popen([sys.executable, *argv], stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=env)

    def _say(self, text: str) -> None:
        assert callable(self.say)
        self.say(text)

    def _check_alive(self) -> None:
        for c in self.children:
            if c.proc.poll() is not None:
                raise LaunchError(f"{c.name} exited with code {c.proc.returncode}{_reason(c)}")

    def check_ports(self) -> None:
        """Before anything loads: the gateway's port, and the nodes' when they are fixed."""
        wanted = [("gateway", self.cfg.host, self.cfg.port)]
        if self.cfg.base_port:
            for spec in self.specs:
                for what, address in (("rpc", spec.rpc_address), ("stats", spec.stats_address)):
                    host, _, port = address.removeprefix("tcp://").rpartition(":")
                    wanted.append((f"{spec.worker_id} {what}", host, int(port)))
                wanted.append((f"{spec.worker_id} NIXL side channel", spec.nixl_host, spec.nixl_port))
        try:
            check_free(wanted)
        except PortError as exc:
            raise LaunchError(str(exc)) from None

    def start(self, timeout_s: float = 900.0) -> None:
        t0 = time.monotonic()
        self.check_ports()
        for spec in self.specs:
            self._say(f"starting {spec.worker_id} (cpus {spec.cpus or 'all'}, log {self.log_dir / spec.worker_id}.log)")
            self._spawn(spec.worker_id, ["-m", NODE_MODULES[spec.role], "--spec", msgspec.json.encode(spec).decode()])
        pending = {s.worker_id: s for s in self.specs}
        deadline = t0 + timeout_s
        while pending:
            self._check_alive()
            if time.monotonic() > deadline:
                raise LaunchError(f"nodes not ready after {timeout_s:g}s: {', '.join(pending)}")
            for wid, spec in list(pending.items()):
                reply = ping_node(spec.rpc_address, 0.5, self.client_keys)
                if reply is not None:
                    del pending[wid]
                    self._say(f"{wid} ready ({time.monotonic() - t0:.1f}s, max_model_len {reply.max_model_len})")
            if pending:
                time.sleep(0.5)
        gw = GatewayConfig(
            model=self.model, served_model_name=self.served_model_name,
            host=self.cfg.host, port=self.cfg.port, tuning=self.cfg.gateway, reasoning_profile=self.cfg.reasoning,
            keys_dir=self.keys_dir,
            workers=tuple(WorkerAddress(s.worker_id, s.role, s.rpc_address, s.stats_address) for s in self.specs),
        )
        self._say("starting gateway")
        self._spawn("gateway", ["-m", "api", "--config", msgspec.json.encode(gw).decode()], self.gateway_env)
        while not gateway_healthy(self.url, self.cfg.num_prefill, self.cfg.num_decode):
            self._check_alive()
            if time.monotonic() > deadline:
                raise LaunchError(f"gateway not healthy after {timeout_s:g}s")
            time.sleep(0.3)

    def wait(self, stop_requested: list[bool]) -> int:
        """Supervise until a stop is requested (0) or a child died too often (1): a child that
        dies is restarted after its backoff; meanwhile the gateway routes around it."""
        while not stop_requested:
            now = time.monotonic()
            for c in self.children:
                if c.restart_at is not None:
                    if now >= c.restart_at:
                        self._restart(c)
                elif c.proc.poll() is not None:
                    delay = self.restarts.on_death(c.name, now)
                    if delay is None:
                        self._say(f"{c.name} exited (code {c.proc.returncode}) {self.restarts.max_restarts + 1} times "
                                  f"in {self.restarts.window_s:g} s; giving up and stopping{_reason(c)}")
                        return 1
                    self._say(f"{c.name} exited (code {c.proc.returncode}); restart {self.restarts.total[c.name]} "
                              f"in {delay:g} s{_reason(c)}")
                    c.restart_at = now + delay
            time.sleep(0.3)
        return 0

    def _restart(self, c: Child) -> None:
        """The same command line, ports and log file (appended: the crash stays readable)."""
        c.log_file.close()
        c.log_file = open(c.log_path, "ab")
        c.log_file.write(f"\n[splitmind] restart {self.restarts.total[c.name]} of {c.name}\n".encode())
        c.log_file.flush()
        argv = c.argv
        if c.name in self.spec_by_id:  # the node reports its restarts in its heartbeat (/admin/workers)
            spec = dataclasses.replace(self.spec_by_id[c.name], restarts=self.restarts.total[c.name])
            argv = [*c.argv[:-1], msgspec.json.encode(spec).decode()]
        c.proc = self._popen(argv, c.extra_env, c.log_file)
        c.restart_at = None
        self._say(f"{c.name} restarted (pid {c.proc.pid})")

    def stop(self, hurry: Callable[[], bool] = lambda: False) -> None:
        """The gateway first: it stops taking requests and gives open streams `drain_s` to
        finish (none open: it exits at once), while the nodes still serve them. Then the
        nodes. `hurry()` true (a second Ctrl-C) cuts the drain short."""
        gateway = [c for c in self.children if c.name == "gateway" and c.proc.poll() is None]
        for c in gateway:
            with contextlib.suppress(*_GONE):
                os.killpg(c.proc.pid, signal.SIGTERM)
            drain_until = time.monotonic() + self.cfg.gateway.drain_s + STOP_GRACE_S
            while c.proc.poll() is None and time.monotonic() < drain_until and not hurry():
                time.sleep(0.1)
        for c in reversed(self.children):
            if c.proc.poll() is None:
                with contextlib.suppress(*_GONE):
                    os.killpg(c.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for c in self.children:
            left = max(0.0, deadline - time.monotonic())
            with contextlib.suppress(*_GONE):
                c.proc.wait(timeout=left)
        for c in self.children:
            # The group may hold vLLM's engine-core/worker processes even after the leader left.
            with contextlib.suppress(*_GONE):
                os.killpg(c.proc.pid, signal.SIGKILL)
            with contextlib.suppress(*_GONE):
                c.proc.wait(timeout=2)
            c.log_file.close()
