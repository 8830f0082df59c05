"""CURVE on the internal plane: `splitmind keys`, the checks on a keys directory, and a node that
serves the gateway's key and nobody else, on the request plane and the stats plane."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import stat
import time
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
import zmq.auth
from typer.testing import CliRunner

from splitmind import curve
from splitmind.cli import app
from splitmind.config import ClusterConfig, EngineConfig, NodeSpec
from splitmind.launcher import ping_node
from splitmind.protocol import HealthRequest, Role, encoder
from tests.splitmind.node_thread import NUM_TOKENS, NodeThread, generate_once

NO_REPLY_S = 2.0


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    out = tmp_path / "keys"
    result = CliRunner().invoke(app, ["keys", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_keys_writes_both_pairs_with_private_secrets(keys_dir: Path) -> None:
    names = {str(p.relative_to(keys_dir)) for p in keys_dir.rglob("*")}
    assert names == {"node.key", "node.key_secret", "gateway.key", "gateway.key_secret", "authorized",
                     "authorized/gateway.key"}
    for name in ("node.key_secret", "gateway.key_secret"):
        assert stat.S_IMODE((keys_dir / name).stat().st_mode) == 0o600
        public, secret = zmq.auth.load_certificate(keys_dir / name)  # zmq.auth's own format
        assert len(public) == 40 and secret is not None and len(secret) == 40
    assert stat.S_IMODE(keys_dir.stat().st_mode) & 0o077 == 0
    assert zmq.auth.load_certificate(keys_dir / "node.key")[1] is None  # public files hold no secret
    assert (keys_dir / "authorized" / "gateway.key").read_text() == (keys_dir / "gateway.key").read_text()
    curve.check_cluster_keys(str(keys_dir))


def test_keys_refuses_to_overwrite_without_force(keys_dir: Path) -> None:
    before = (keys_dir / "node.key_secret").read_text()
    result = CliRunner().invoke(app, ["keys", str(keys_dir)])
    assert result.exit_code == 2 and "already exist" in result.output
    assert (keys_dir / "node.key_secret").read_text() == before
    result = CliRunner().invoke(app, ["keys", str(keys_dir), "--force"])
    assert result.exit_code == 0, result.output
    assert (keys_dir / "node.key_secret").read_text() != before
    assert stat.S_IMODE((keys_dir / "node.key_secret").stat().st_mode) == 0o600
    curve.check_cluster_keys(str(keys_dir))


def test_a_keys_dir_missing_a_file_names_it(keys_dir: Path) -> None:
    (keys_dir / "gateway.key_secret").unlink()
    with pytest.raises(ValueError, match=r"gateway\.key_secret is missing"):
        ClusterConfig(keys_dir=str(keys_dir))
    shutil.rmtree(keys_dir / "authorized")
    with pytest.raises(ValueError, match="authorized is missing"):
        NodeSpec("d", Role.DECODE, "/m", EngineConfig(), "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "127.0.0.1", 3,
                 keys_dir=str(keys_dir))
    with pytest.raises(ValueError, match="keys_dir must name a directory"):
        ClusterConfig(keys_dir="")


def test_a_gateway_key_the_nodes_do_not_know_is_caught_before_start(keys_dir: Path, tmp_path: Path) -> None:
    (keys_dir / "authorized" / "gateway.key").unlink()
    curve.create_keys(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "gateway.key", keys_dir / "authorized" / "other.key")
    with pytest.raises(ValueError, match=r"gateway\.key is not in authorized/"):
        ClusterConfig(keys_dir=str(keys_dir))


def test_nodes_reachable_from_other_machines_need_keys(keys_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"node_host 0\.0\.0\.0 is reachable"):
        ClusterConfig(node_host="0.0.0.0")
    assert ClusterConfig(node_host="0.0.0.0", keys_dir=str(keys_dir)).node_host == "0.0.0.0"
    assert ClusterConfig(node_host="::1").keys_dir is None


def test_the_launcher_puts_nodes_on_loopback_whatever_the_gateways_host(keys_dir: Path) -> None:
    """Bug: nodes bound the gateway's host, so `--host 10.0.0.5` put the unauthenticated
    request plane on the network. Fix: nodes bind `cluster.node_host`, loopback by default."""
    from splitmind.launcher import plan_nodes

    specs = plan_nodes(ClusterConfig(host="10.0.0.5", num_prefill=1), "/m")
    assert all(s.rpc_address.startswith("tcp://127.0.0.1:") and s.nixl_host == "127.0.0.1" for s in specs)
    assert all(s.keys_dir == "" for s in specs)
    cfg = dataclasses.replace(ClusterConfig(), keys_dir=str(keys_dir))
    assert {s.keys_dir for s in plan_nodes(cfg, "/m")} == {str(keys_dir.resolve())}


async def no_reply(address: str, keys: curve.CurveClientKeys | None = None) -> bool:
    """Whether a DEALER (with `keys`, else none) gets no answer to a health request."""
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        curve.make_client(sock, keys)
    sock.connect(address)
    try:
        await sock.send(encoder.encode(HealthRequest("stranger")))
        return not await sock.poll(int(NO_REPLY_S * 1000))
    finally:
        sock.close()
        ctx.term()


async def no_stats(address: str) -> bool:
    ctx = zmq.asyncio.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(address)
    try:
        return not await sub.poll(int(NO_REPLY_S * 1000))
    finally:
        sub.close()
        ctx.term()


def test_a_node_with_keys_serves_the_gateway_key_and_nobody_else(keys_dir: Path, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """The issue's acceptance test: a node started with keys refuses an unkeyed client and one
    with a key it does not know, on both planes, and serves a gateway with the gateway's keys."""
    caplog.set_level(logging.WARNING)
    node = NodeThread(str(keys_dir))
    gateway_keys = curve.load_client_keys(str(keys_dir))
    curve.create_keys(tmp_path / "stranger")
    stranger = dataclasses.replace(curve.load_client_keys(str(tmp_path / "stranger")),
                                   server_public=gateway_keys.server_public)  # knows the node, unknown to it

    async def scenario() -> None:
        assert await no_reply(node.spec.rpc_address), "an unkeyed client got a reply"
        assert await no_reply(node.spec.rpc_address, stranger), "a client with an unknown key got a reply"
        with pytest.raises(TimeoutError):
            async with node.gateway(stranger, NO_REPLY_S):  # a gateway with a key the node does not know
                pass
        assert await no_stats(node.spec.stats_address), "an unkeyed subscriber got the node's stats"
        async with node.gateway(gateway_keys) as client:
            assert client.info is not None and client.info.worker_id == "decode-0"
            assert await generate_once(client) == list(range(NUM_TOKENS))
            deadline = time.monotonic() + 5
            while client.stats is None:  # the stats plane serves the keyed subscriber
                assert time.monotonic() < deadline, "no stats for the keyed gateway"
                await asyncio.sleep(0.1)

    try:
        asyncio.run(scenario())
        # the node logs the unkeyed peers (libzmq reports them with or without detail) and the stranger
        assert "node decode-0 request plane: a peer on tcp://127.0.0.1" in caplog.text
        assert "handshake failed" in caplog.text
        assert "authentication refused (ZAP status 400)" in caplog.text
        assert "worker decode-0 request plane" in caplog.text  # the refused gateway says so too
        assert node.serving()
    finally:
        node.stop()


def test_the_launchers_readiness_ping_uses_the_gateway_keys(keys_dir: Path) -> None:
    node = NodeThread(str(keys_dir))
    try:
        reply = ping_node(node.spec.rpc_address, 5.0, curve.load_client_keys(str(keys_dir)))
        assert reply is not None and reply.worker_id == "decode-0"
        assert ping_node(node.spec.rpc_address, 1.0) is None
    finally:
        node.stop()


def test_a_gateway_without_keys_serves_a_node_without_keys() -> None:
    """Plain TCP stays what it was when no keys are configured."""
    node = NodeThread()
    try:
        reply = ping_node(node.spec.rpc_address, 5.0)
        assert reply is not None and reply.worker_id == "decode-0"
    finally:
        node.stop()
