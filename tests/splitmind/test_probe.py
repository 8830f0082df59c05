"""`splitmind probe` and `splitmind drain` (splitmind/probe.py), the commands the deploy manifests'
probes and pre-stop hooks run: against a real NodeServer on CURVE (tests/splitmind/node_thread.py),
a stand-in gateway's /health, and a stats publisher the test controls."""

from __future__ import annotations

import http.server
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from typer.testing import CliRunner

from splitmind.cli import app
from splitmind.ports import free_port
from splitmind.probe import wait_idle
from splitmind.protocol import NodeStats, Role, encoder
from tests.e2e.cluster import make_keys
from tests.splitmind.node_thread import NodeThread


def port_of(address: str) -> str:
    return address.rsplit(":", 1)[1]


def invoke(args: list[str], env: dict[str, str]) -> Any:
    return CliRunner().invoke(app, args, env=env)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_keys(tmp_path_factory.mktemp("probe") / "keys")


@pytest.fixture(scope="module")
def node(keys: Path) -> Iterator[NodeThread]:
    n = NodeThread(keys_dir=str(keys))
    yield n
    n.stop()


def node_env(node: NodeThread, keys_dir: Path, **extra: str) -> dict[str, str]:
    return {"SPLITMIND__NODE__HOST": "0.0.0.0", "SPLITMIND__NODE__KEYS_DIR": str(keys_dir),
            "SPLITMIND__NODE__RPC_PORT": port_of(node.spec.rpc_address),
            "SPLITMIND__NODE__STATS_PORT": port_of(node.spec.stats_address), **extra}


def test_a_node_that_answers_is_ready_in_its_own_role_only(node: NodeThread, keys: Path) -> None:
    """The node binds loopback; the config says 0.0.0.0, as in a pod: the probe asks 127.0.0.1."""
    ok = invoke(["probe", "--role", "decode"], node_env(node, keys))
    assert ok.exit_code == 0 and ok.stdout.strip() == "ok: decode", ok.output
    wrong = invoke(["probe", "--role", "prefill"], node_env(node, keys))
    assert wrong.exit_code == 1 and "is a decode node, not prefill" in wrong.output
    auto = invoke(["probe"], node_env(node, keys, SPLITMIND__SERVE__PORT=str(free_port("127.0.0.1"))))
    assert auto.exit_code == 0 and auto.stdout.strip() == "ok: node", auto.output


def test_the_probe_needs_the_gateways_keys_and_a_node_refuses_other_keys(node: NodeThread, keys: Path,
                                                                           tmp_path: Path) -> None:
    server_only = tmp_path / "server-only"
    (server_only / "authorized").mkdir(parents=True)
    shutil.copy(keys / "node.key_secret", server_only)
    shutil.copy(keys / "authorized" / "gateway.key", server_only / "authorized")
    missing = invoke(["probe", "--role", "decode"], node_env(node, server_only))
    assert missing.exit_code == 2 and "needs gateway.key_secret and node.key" in missing.output
    strangers = make_keys(tmp_path / "strangers")  # another deployment's keys: the handshake fails
    refused = invoke(["probe", "--role", "decode", "--timeout-s", "1"], node_env(node, strangers))
    assert refused.exit_code == 1 and "no health reply" in refused.output


def test_nothing_listening_is_not_ready() -> None:
    env = {"SPLITMIND__SERVE__PORT": str(free_port("127.0.0.1")),
           "SPLITMIND__NODE__RPC_PORT": str(free_port("127.0.0.1"))}
    result = invoke(["probe"], env)
    assert result.exit_code == 1 and "nothing listens" in result.output
    silent = invoke(["probe", "--role", "prefill", "--timeout-s", "0.5"], env)
    assert silent.exit_code == 1 and "no health reply" in silent.output


class Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/health" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b'{"status": "unavailable"}' if code != 200 else b'{"status": "ok"}')

    def log_message(self, *args: Any) -> None:
        pass


def test_a_gateway_is_ready_when_its_health_is_200() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"SPLITMIND__SERVE__HOST": "0.0.0.0", "SPLITMIND__SERVE__PORT": str(server.server_address[1])}
    try:
        Health.status = 200
        assert invoke(["probe", "--role", "gateway"], env).exit_code == 0
        auto = invoke(["probe"], env)
        assert auto.exit_code == 0 and auto.stdout.strip() == "ok: gateway"
        Health.status = 503
        down = invoke(["probe"], env)
        assert down.exit_code == 1 and "answered 503" in down.output and "unavailable" in down.output
    finally:
        server.shutdown()


class Publisher:
    """A node's stats plane as the test wants it: `running` requests, every 0.1 s."""

    def __init__(self) -> None:
        self.running = 1
        self.port = free_port("127.0.0.1")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sock = zmq.Context.instance().socket(zmq.PUB)
        sock.bind(f"tcp://127.0.0.1:{self.port}")
        seq = 0
        while not self.stop.is_set():
            seq += 1
            sock.send(encoder.encode(NodeStats("decode-0", Role.DECODE, 1, seq, num_running=self.running)))
            time.sleep(0.1)
        sock.close(linger=0)


def test_drain_waits_for_the_last_request_then_a_quiet_spell() -> None:
    pub = Publisher()
    said: list[str] = []
    try:
        threading.Timer(1.0, lambda: setattr(pub, "running", 0)).start()
        t0 = time.monotonic()
        assert wait_idle(f"tcp://127.0.0.1:{pub.port}", None, quiet_s=0.5, max_s=10, say=said.append)
        assert 1.4 < time.monotonic() - t0 < 4, said
        assert said == ["1 request(s) open on decode-0; waiting"]
        pub.running = 2  # never idle: gives up at max_s
        t0 = time.monotonic()
        assert not wait_idle(f"tcp://127.0.0.1:{pub.port}", None, quiet_s=0.5, max_s=1.0, say=said.append)
        assert 0.9 < time.monotonic() - t0 < 2
    finally:
        pub.stop.set()


def test_drain_of_a_node_that_is_gone_returns_at_once() -> None:
    said: list[str] = []
    t0 = time.monotonic()
    assert wait_idle(f"tcp://127.0.0.1:{free_port('127.0.0.1')}", None, quiet_s=30, max_s=60, say=said.append,
                     gone_s=0.5)
    assert time.monotonic() - t0 < 2 and "nothing to drain" in said[0]


def test_drain_command_on_a_real_idle_node(node: NodeThread, keys: Path) -> None:
    result = invoke(["drain", "--quiet-s", "0.5", "--max-s", "10"], node_env(node, keys))
    assert result.exit_code == 0 and re.fullmatch(r"drained in [12] s", result.stdout.strip()), result.output
