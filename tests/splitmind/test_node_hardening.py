"""What a node does with messages that are not requests: it logs them, drops them, and serves on.

The node, its sockets and the gateway's client are the real ones (`node_thread.py`); the garbage
comes from raw ZMQ sockets, as a broken or hostile peer on the internal plane would send it.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import pytest
import zmq
import zmq.asyncio

from splitmind.protocol import HealthRequest, NodeStats, Role, encoder, to_node_decoder
from splitmind.wire_guard import MAX_MESSAGE_BYTES, RateLimitedLog, decode_frames
from tests.splitmind.node_thread import NUM_TOKENS, NodeThread, generate_once


def wait_for(caplog: pytest.LogCaptureFixture, text: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in caplog.text:
        assert time.monotonic() < deadline, f"no log line with {text!r} in:\n{caplog.text}"
        time.sleep(0.05)


def test_garbage_on_the_request_plane_is_dropped_and_the_node_serves_on(caplog: pytest.LogCaptureFixture) -> None:
    """Bug: the node unpacked every message as `identity, payload`; a message of another frame
    count (a DEALER sending two frames, a REQ's empty delimiter) raised ValueError in the receive
    loop, which ended the node's TaskGroup: one stray message killed the node, and with it the
    cluster. Fix: a message of the wrong frame count, or that does not decode, is logged
    (rate-limited, without the payload) and dropped; a message over MAX_MESSAGE_BYTES costs its
    sender the connection (zmq.MAXMSGSIZE); the node serves on."""
    caplog.set_level(logging.INFO)
    node = NodeThread()

    async def garbage_then_a_request() -> list[int]:
        ctx = zmq.asyncio.Context()
        dealer = ctx.socket(zmq.DEALER)
        req = ctx.socket(zmq.REQ)
        oversized = ctx.socket(zmq.DEALER)
        for sock in (dealer, req, oversized):
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(node.spec.rpc_address)
        try:
            await dealer.send_multipart([b"first", b"second"])  # 3 frames at the ROUTER
            await dealer.send_multipart([b"a", b"b", b"c"])  # 4
            await req.send(encoder.encode(HealthRequest("via-req")))  # a REQ adds an empty delimiter
            await dealer.send(b"\xc1 not msgpack")
            await dealer.send(encoder.encode(NodeStats("x", Role.DECODE, 1, 1)))  # msgpack, not a request
            await dealer.send(b"")
            await oversized.send(b"\0" * (MAX_MESSAGE_BYTES + 1))
            async with node.gateway() as client:  # its health check went through
                return await generate_once(client)
        finally:
            for sock in (dealer, req, oversized):
                sock.close()
            ctx.term()

    try:
        assert asyncio.run(garbage_then_a_request()) == list(range(NUM_TOKENS))
        wait_for(caplog, "dropped a message of 3 frames (expected 2)")
        wait_for(caplog, "dropped an undecodable message of 13 bytes")
        wait_for(caplog, "request plane: a peer on")  # the oversized sender was cut off
        wait_for(caplog, "disconnected")
        assert "not msgpack" not in caplog.text, "a payload reached the log"
        assert node.serving()
        # The served request's task leaves `tasks` in a callback on the node's thread, which a
        # loaded machine runs a moment after the reply: wait for it, then nothing may be left.
        deadline = time.monotonic() + 5
        while node.server.tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        assert node.server.tasks == {}, "a dropped message started work"
    finally:
        node.stop()


def test_the_receive_loop_checks_every_frame_count() -> None:
    """A ROUTER always prepends the sender's identity, so one frame never reaches the node's
    loop from the network; the check does not rely on that."""
    drops = RateLimitedLog(logging.getLogger("test"))
    payload = encoder.encode(HealthRequest("h"))
    assert decode_frames([b"id", payload], 2, to_node_decoder, drops, "node") == HealthRequest("h")
    for frames in ([payload], [], [b"id", b"", payload], [b"id", b"\x92"]):
        assert decode_frames(frames, 2, to_node_decoder, drops, "node") is None


def test_drop_lines_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    """A peer that sends thousands of bad messages a second writes one line per interval, and the
    next line says how many were not written."""
    drops = RateLimitedLog(logging.getLogger("test"), interval_s=0.2)
    for _ in range(1000):
        decode_frames([b"x"], 2, to_node_decoder, drops, "node")
    assert caplog.text.count("dropped a message") == 1
    time.sleep(0.25)
    decode_frames([b"x"], 2, to_node_decoder, drops, "node")
    assert "and 999 more like it" in caplog.text


def test_a_decode_error_names_the_field_not_the_payload() -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        to_node_decoder.decode(encoder.encode(NodeStats("secret-looking", Role.DECODE, 1, 1)))
    assert "secret-looking" not in str(info.value)


def test_an_abort_right_behind_its_request_leaves_nothing_behind() -> None:
    """Bug: an abort that reached the node in the same read as its request cancelled the
    request's task before its coroutine started, so the `finally` that forgot the task never
    ran: the node counted it as waiting forever (61 of them after bench/soak.py's 10 minutes,
    where clients give up after 0.2 s). Fix: the task is forgotten by a done callback."""
    from splitmind.protocol import AbortRequest, GenerateRequest, Sampling

    node = NodeThread()

    async def burst() -> None:
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(node.spec.rpc_address)
        try:
            for i in range(50):  # queued back to back: the node reads each pair in one go
                await sock.send(encoder.encode(GenerateRequest(f"r{i}", [1, 2, 3], Sampling(max_tokens=3))))
                await sock.send(encoder.encode(AbortRequest(f"r{i}")))
            await asyncio.sleep(1.0)
        finally:
            sock.close()
            ctx.term()

    try:
        asyncio.run(burst())
        deadline = time.monotonic() + 5
        while node.server.tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not node.server.tasks, f"{len(node.server.tasks)} requests left on the node"
        assert node.server.stats().num_waiting == 0
    finally:
        node.stop()


def test_a_node_whose_engine_died_stops_serving() -> None:
    """vLLM cannot restart a dead engine: the server ends with EngineDied (the node exits with
    code 3 and `splitmind up` restarts it) instead of answering every request with an error."""
    from splitmind.node.failures import EngineDied
    from tests.splitmind.node_thread import NodeThread, generate_once

    node = NodeThread()
    try:
        async def serves() -> list[int]:
            async with node.gateway() as client:
                return await generate_once(client)

        assert asyncio.run(serves()) == [0, 1, 2]
        node.engine.errored = True  # what AsyncLLM reports once its engine core died
        node.thread.join(5)
        assert not node.serving()
        assert isinstance(node.task.exception(), ExceptionGroup)
        assert node.task.exception().subgroup(EngineDied) is not None  # type: ignore[union-attr]
    finally:
        if node.serving():
            node.stop()
