"""A real NodeServer, sockets and all, on its own thread and event loop, around a fake engine
that answers every request with three tokens: for tests of what reaches a node and what it does
with it, without vLLM's engine."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import zmq.asyncio

from router.client import WorkerClient
from splitmind.config import EngineConfig, NodeSpec, WorkerAddress
from splitmind.curve import CurveClientKeys
from splitmind.launcher import free_port
from splitmind.node.counters import EngineCounters
from splitmind.node.runtime import NodeServer
from splitmind.protocol import GenerateRequest, Role, Sampling

NUM_TOKENS = 3


def engine_output(token: int, last: bool) -> SimpleNamespace:
    """What AsyncLLM.generate yields for one new token (output_kind DELTA), as the node reads it."""
    return SimpleNamespace(
        outputs=[SimpleNamespace(token_ids=[token], finish_reason="length" if last else None, logprobs=None)],
        finished=last, kv_transfer_params=None, num_cached_tokens=0)


class FakeEngine:
    """The parts of AsyncLLM a node reads besides `generate`."""

    vllm_config = SimpleNamespace(model_config=SimpleNamespace(max_model_len=4096), speculative_config=None)
    errored = False  # AsyncLLM's flag; when it turns true the node exits


class ThreeTokenEngine(FakeEngine):
    async def generate(self, prompt: Any, params: Any, request_id: str) -> AsyncIterator[Any]:
        for i in range(NUM_TOKENS):
            yield engine_output(i, i == NUM_TOKENS - 1)


class Handler:
    role = Role.DECODE

    def sampling_params(self, req: GenerateRequest) -> Any:
        return None


class NodeThread:
    def __init__(self, keys_dir: str = "", engine: Any = None, kernel_buffer_bytes: int = 0,
                 queue_messages: int = 0, host: str = "127.0.0.1", ports: tuple[int, int] | None = None) -> None:
        """`kernel_buffer_bytes` and `queue_messages` (0: the defaults) shrink the node's send
        side and the gateway's receive side, so that a test can fill them within a second.
        `host` and `ports` (request, stats): where it listens (free ports by default)."""
        self.engine = engine or ThreeTokenEngine()
        self.kernel_buffer_bytes = kernel_buffer_bytes
        self.queue_messages = queue_messages
        rpc, stats = ports or (free_port(host), free_port(host))
        self.spec = NodeSpec("decode-0", Role.DECODE, "/m", EngineConfig(), f"tcp://{host}:{rpc}",
                             f"tcp://{host}:{stats}", host, free_port(host), keys_dir=keys_dir)
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = NodeServer(self.spec, self.engine, Handler(), EngineCounters())
        if self.kernel_buffer_bytes:
            self.server.rpc.setsockopt(zmq.SNDBUF, self.kernel_buffer_bytes)
        if self.queue_messages:
            self.server.rpc.setsockopt(zmq.SNDHWM, self.queue_messages)
        self.task = self.loop.create_task(self.server.serve())
        # Ready once the task's first step ran: `serve()` binds its sockets there. Set before it,
        # a test's socket could connect to a port not yet bound, wait for ZMQ's reconnect, and
        # lose what it queued when it closed first (a loaded CI run: test_node_hardening).
        self.loop.call_soon(self.ready.set)
        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(self.task)

    def running(self) -> int:
        return len(self.server.tasks)

    def serving(self) -> bool:
        return self.thread.is_alive() and not self.task.done()

    @contextlib.asynccontextmanager
    async def gateway(self, keys: CurveClientKeys | None = None, health_timeout_s: float = 10.0
                      ) -> AsyncIterator[WorkerClient]:
        """A gateway's connection to this node, after a health check; closed on the way out."""
        ctx = zmq.asyncio.Context()
        client = WorkerClient(WorkerAddress("decode-0", Role.DECODE, self.spec.rpc_address, self.spec.stats_address),
                              ctx, keys)
        if self.kernel_buffer_bytes:
            client.dealer.setsockopt(zmq.RCVBUF, self.kernel_buffer_bytes)
        client.start()
        try:
            await client.health(health_timeout_s)
            yield client
        finally:
            await client.close()
            ctx.term()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(10)
        assert not self.thread.is_alive(), "the node did not stop"


async def generate_once(client: WorkerClient, request_id: str = "r1") -> list[int]:
    """A request through the real client, to the end; the token ids the node sent."""
    stream = await client.open(GenerateRequest(request_id, [1, 2, 3], Sampling(max_tokens=NUM_TOKENS)))
    tokens: list[int] = []
    try:
        while True:
            delta = await stream.next(30)  # the node's first request imports vLLM's TokensPrompt
            tokens += delta.token_ids
            if delta.finish_reason is not None:
                return tokens
    finally:
        client.release(stream)
