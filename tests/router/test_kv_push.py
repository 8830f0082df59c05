"""The gateway names the decode node in a prefill request only when both nodes push KV over ZMQ."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from router.kv_push import kv_address_of, push_kv_to
from splitmind.protocol import HealthReply, Role


def node(transport: str | None, address: str = "") -> Any:
    info = None if transport is None else HealthReply("h", "n", Role.DECODE, 1, 5, "m", 64, kv_transport=transport,
                                                      kv_address=address)
    return SimpleNamespace(info=info)


def test_push_only_between_zmq_nodes() -> None:
    decode = node("zmq", "tcp://10.0.0.2:5600")
    params = push_kv_to(node("zmq"), decode, "r1@prefill-0")
    assert params is not None and params.push_to == "tcp://10.0.0.2:5600" and params.transfer_id == "r1@prefill-0"
    assert push_kv_to(node("nixl"), decode, "t") is None, "a NIXL prefill node cannot push"
    assert push_kv_to(node("zmq"), node("nixl"), "t") is None
    assert push_kv_to(node("zmq"), node(None), "t") is None, "not handshaken yet"
    assert kv_address_of(node("nixl", "tcp://x:1")) == ""
