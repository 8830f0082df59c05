"""A streaming client that stops reading cannot pin the gateway: the real app and a real node
server (sockets and all) around an endless fake engine, driven through ASGI with a client
whose socket is full."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from api.app import create_app
from models.test_checkpoints import CheckpointSpec, build_checkpoint
from splitmind.config import GatewayConfig, GatewayTuning, WorkerAddress
from splitmind.protocol import Role
from tests.splitmind.node_thread import NodeThread

SEND_TIMEOUT_S = 1.0


class EndlessEngine:
    """A token every 5 ms until aborted; records the requests whose generator was closed."""

    vllm_config = SimpleNamespace(model_config=SimpleNamespace(max_model_len=100_000), speculative_config=None)
    errored = False  # AsyncLLM's flag; when it turns true the node exits

    def __init__(self) -> None:
        self.closed: list[str] = []

    async def generate(self, prompt: Any, params: Any, request_id: str) -> AsyncIterator[Any]:
        try:
            for i in range(50_000):
                await asyncio.sleep(0.005)
                yield SimpleNamespace(outputs=[SimpleNamespace(token_ids=[40 + i % 20], finish_reason=None,
                                                               logprobs=None)],
                                      finished=False, kv_transfer_params=None, num_cached_tokens=0)
        except (GeneratorExit, asyncio.CancelledError):  # what AsyncLLM.generate turns into an engine abort
            self.closed.append(request_id)
            raise


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("m") / "model", CheckpointSpec(weights="scripted"))


async def _lifespan(app: Any, events: asyncio.Queue[dict[str, Any]], started: asyncio.Event) -> None:
    async def receive() -> dict[str, Any]:
        return await events.get()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)


def test_a_client_that_stops_reading_is_dropped_and_its_request_aborted(model_dir: Path) -> None:
    """Bug: a streaming client that stopped reading pinned its task, its socket and its request
    on the node for as long as it stayed connected (no send timeout). Fix: the stream's send
    timeout (`send_timeout_s`, api/sse.py); the stream's cleanup aborts the request on the node."""
    engine = EndlessEngine()
    node = NodeThread(engine=engine)
    address = WorkerAddress("decode-0", Role.DECODE, node.spec.rpc_address, node.spec.stats_address)
    app = create_app(GatewayConfig(model=str(model_dir), served_model_name="model", host="127.0.0.1", port=0,
                                   workers=(address,), tuning=GatewayTuning(send_timeout_s=SEND_TIMEOUT_S,
                                                                                 heartbeat_timeout_s=60)))
    body = json.dumps({"model": "model", "prompt": "hello", "max_tokens": 40_000, "stream": True}).encode()

    async def scenario() -> tuple[float, list[dict[str, Any]]]:
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        started = asyncio.Event()
        await events.put({"type": "lifespan.startup"})
        lifespan = asyncio.create_task(_lifespan(app, events, started))
        await asyncio.wait_for(started.wait(), 30)
        gateway = app.state.gateway
        deadline = time.monotonic() + 30
        while not gateway.registry.healthy(Role.DECODE) or gateway.registry.max_model_len() is None:
            assert time.monotonic() < deadline, "the node never became healthy"
            await asyncio.sleep(0.1)

        body_sent = False
        never = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await never.wait()  # connected, silent
            return {"type": "http.disconnect"}

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and len(sent) > 3:
                await never.wait()  # the client's socket is full: this send never completes

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/completions", "raw_path": b"/v1/completions", "query_string": b"",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 80), "root_path": ""}
        t0 = time.monotonic()
        await asyncio.wait_for(app(scope, receive, send), 30)
        elapsed = time.monotonic() - t0
        deadline = time.monotonic() + 10
        while not engine.closed and time.monotonic() < deadline:  # noqa: ASYNC110 - set on the node thread
            await asyncio.sleep(0.05)
        await events.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(lifespan, 30)
        return elapsed, sent

    try:
        elapsed, sent = asyncio.run(scenario())
    finally:
        node.stop()
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert len(sent) == 4, "the stream should have blocked on its fourth message"
    assert elapsed < SEND_TIMEOUT_S + 10, f"the stream stayed open {elapsed:.1f}s for a client that read nothing"
    assert len(engine.closed) == 1, "the request still runs on the node"
