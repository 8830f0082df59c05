"""The request plane under load: a node's replies reach a gateway that fell behind, all of them,
and a node stops generating for a gateway that went away or froze.

A fake engine (no vLLM) stands in so that thousands of deltas leave the node faster than the
gateway reads them; the sockets, the node server and the worker client are the real ones, with
small queues and kernel buffers so that they fill within a second.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from splitmind.node import sockets
from splitmind.protocol import GenerateRequest, Sampling
from tests.splitmind.node_thread import FakeEngine as EngineParts
from tests.splitmind.node_thread import NodeThread, engine_output

QUEUE_MESSAGES = 500  # the node's queue per gateway, small here so that it fills in a second
KERNEL_BUFFER_BYTES = 4096
NUM_DELTAS = 10_000  # far more than the queues and buffers between the two sockets hold


class FakeEngine:
    vllm_config = SimpleNamespace(model_config=SimpleNamespace(max_model_len=4096), speculative_config=None)
    errored = False  # AsyncLLM's flag; when it turns true the node exits

    def __init__(self) -> None:
        self.closed: list[str] = []  # requests whose generator was closed before its end

    async def generate(self, prompt: Any, params: Any, request_id: str) -> AsyncIterator[Any]:
        try:
            for i in range(NUM_DELTAS):
                last = i == NUM_DELTAS - 1
                yield SimpleNamespace(
                    outputs=[SimpleNamespace(token_ids=[i % 50], finish_reason="length" if last else None,
                                             logprobs=None)],
                    finished=last, kv_transfer_params=None, num_cached_tokens=0)
        except GeneratorExit:  # what AsyncLLM.generate turns into an engine abort
            self.closed.append(request_id)
            raise


def test_a_gateway_that_falls_behind_loses_no_token() -> None:
    """Bug: the node's ROUTER socket drops messages for a peer whose queue is full (ZMQ's
    default), so a gateway that fell behind for a moment lost deltas: tokens missing from a
    reply, or its last delta, and the request waited out its 120 s timeout (seen in
    bench/thinking_budgets.py, 1 to 10 of 3,300 requests). Fix: mandatory routing, so that the node
    waits until the gateway reads."""
    node = NodeThread(engine=FakeEngine(), kernel_buffer_bytes=KERNEL_BUFFER_BYTES,
                      queue_messages=QUEUE_MESSAGES)

    async def gateway() -> int:
        async with node.gateway() as client:
            stream = await client.open(GenerateRequest("r1", [1, 2, 3], Sampling(max_tokens=NUM_DELTAS)))
            first = await stream.next(30)  # the node is generating (its first request imports vLLM)
            time.sleep(1.5)  # noqa: ASYNC251 - on purpose: a CPU-starved gateway's loop, the node sends on
            tokens = len(first.token_ids)
            while True:
                delta = await stream.next(10)
                tokens += len(delta.token_ids)
                if delta.finish_reason is not None:
                    return tokens

    try:
        assert asyncio.run(gateway()) == NUM_DELTAS
    finally:
        node.stop()


def test_a_node_stops_generating_for_a_gateway_that_went_away() -> None:
    """With mandatory routing a reply to a vanished gateway is an error, not a silent drop: the
    node ends the request and closes the engine's generator (an engine abort), and it goes on
    serving the next gateway."""
    node = NodeThread(engine=FakeEngine(), kernel_buffer_bytes=KERNEL_BUFFER_BYTES,
                      queue_messages=QUEUE_MESSAGES)

    async def leave_mid_request() -> None:
        async with node.gateway() as client:
            stream = await client.open(GenerateRequest("r1", [1, 2, 3], Sampling(max_tokens=NUM_DELTAS)))
            await stream.next(30)
            time.sleep(0.5)  # noqa: ASYNC251 - on purpose: the node fills its queue for this gateway

    async def next_gateway() -> None:
        async with node.gateway():
            pass

    try:
        asyncio.run(leave_mid_request())
        deadline = time.monotonic() + 20
        while node.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert node.running() == 0, "the node still generates for a gateway that left"
        assert node.engine.closed == ["r1"]
        asyncio.run(next_gateway())
    finally:
        node.stop()


class EndlessEngine(EngineParts):
    """A token every 20 ms until its generator is closed (an engine abort)."""

    def __init__(self) -> None:
        self.closed: list[str] = []

    async def generate(self, prompt: Any, params: Any, request_id: str) -> AsyncIterator[Any]:
        try:
            for i in range(4000):
                yield engine_output(i % 50, False)
                await asyncio.sleep(0.02)
        except GeneratorExit:
            self.closed.append(request_id)
            raise


FROZEN_GATEWAY = """
import os, signal, sys
import zmq
from splitmind.protocol import GenerateRequest, Sampling, encoder
sock = zmq.Context().socket(zmq.DEALER)
sock.connect(sys.argv[1])
sock.send(encoder.encode(GenerateRequest("r1", [1, 2, 3], Sampling(max_tokens=4000))))
sock.recv()  # its first token: the request runs
os.kill(os.getpid(), signal.SIGSTOP)  # frozen: its connection stays open, nothing answers
"""


def test_a_node_stops_generating_for_a_gateway_that_froze(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway that stops answering without closing its connection (SIGSTOP here; a host that
    vanished looks the same) is dropped after the heartbeat timeout and its requests end. Before,
    the node generated into the kernel's buffers for minutes."""
    monkeypatch.setattr(sockets, "PEER_HEARTBEAT_S", 0.1)
    monkeypatch.setattr(sockets, "PEER_TIMEOUT_S", 1.0)
    node = NodeThread(engine=EndlessEngine())
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    gateway = subprocess.Popen([sys.executable, "-c", FROZEN_GATEWAY, node.spec.rpc_address], cwd=root,
                               env={**os.environ, "PYTHONPATH": root})
    try:
        deadline = time.monotonic() + 30
        while not node.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert node.running() == 1, "the request never started"
        stopped_at = time.monotonic()
        while node.running() and time.monotonic() < stopped_at + 10:
            time.sleep(0.1)
        assert node.running() == 0, "the node still generates for a frozen gateway"
        assert node.engine.closed == ["r1"]
        assert gateway.poll() is None, "the stand-in gateway exited instead of freezing"
    finally:
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(10)
        node.stop()
