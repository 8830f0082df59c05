"""The internal plane of a real cluster (issue #11): `scripted_cluster` runs with CURVE keys
(`splitmind keys`, `splitmind up --keys-dir`). A client without a key gets nothing from its nodes,
garbage from a client with the key is dropped, and the cluster serves on."""

from __future__ import annotations

import time

import httpx
import zmq

from splitmind import curve
from splitmind.protocol import PROTOCOL_VERSION, HealthReply, HealthRequest, encoder, from_node_decoder
from tests.e2e.cluster import RunningCluster
from tests.e2e.conftest import client

NO_REPLY_S = 2.0


def dealer(address: str, keys: curve.CurveClientKeys | None) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        curve.make_client(sock, keys)
    sock.connect(address)
    return sock


def health(sock: zmq.Socket[bytes], timeout_s: float) -> HealthReply | None:
    sock.send(encoder.encode(HealthRequest("internal-plane-test", PROTOCOL_VERSION)))
    if not sock.poll(int(timeout_s * 1000)):
        return None
    reply = from_node_decoder.decode(sock.recv())
    assert isinstance(reply, HealthReply)
    return reply


def test_keyed_nodes_refuse_strangers_drop_garbage_and_serve_on(scripted_cluster: RunningCluster) -> None:
    assert scripted_cluster.keys_dir is not None, "scripted_cluster runs without CURVE keys"
    workers = httpx.get(scripted_cluster.url + "/admin/workers", timeout=10).json()
    assert len(workers) == 2
    gateway_keys = curve.load_client_keys(str(scripted_cluster.keys_dir))
    for w in workers:
        stranger = dealer(w["address"], None)
        keyed = dealer(w["address"], gateway_keys)
        try:
            stranger.send_multipart([b"garbage", b"from", b"a stranger"])
            assert health(stranger, NO_REPLY_S) is None, f"{w['id']} answered a client without a key"
            keyed.send_multipart([b"garbage", b"in three frames"])
            keyed.send(b"\xc1 undecodable")
            reply = health(keyed, 30)  # the node took the garbage and still answers the gateway's key
            assert reply is not None and reply.worker_id == w["id"]
        finally:
            stranger.close()
            keyed.close()

    chat = client(scripted_cluster).chat.completions.create(
        model="model", messages=[{"role": "user", "content": "What is 12+30?"}], max_tokens=32)
    assert chat.choices[0].finish_reason in ("stop", "length")
    deadline = time.monotonic() + 10
    while True:
        states = {w["id"]: w["state"] for w in httpx.get(scripted_cluster.url + "/admin/workers", timeout=10).json()}
        if set(states.values()) == {"ready"}:
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.3)
    for w in workers:
        log = scripted_cluster.node_log(w["id"])
        assert "CURVE, clients from" in log
        assert "dropped a message of 3 frames (expected 2)" in log
        assert "dropped an undecodable message" in log
        assert "request plane: a peer on" in log and "handshake failed" in log  # the stranger
