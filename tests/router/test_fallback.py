"""A failed prefill is redone: on the next healthy prefill node, or on the decode node itself;
a prefill node's 4xx is not retried. Fake workers, the real `Generation`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from router.pd import ROUTE_DISAGGREGATED, Generation
from router.request_stream import RequestStream
from splitmind.config import GatewayTuning
from splitmind.errors import WorkerError, WorkerRejectedError
from splitmind.protocol import (
    ErrorCode,
    ErrorReply,
    FinishReason,
    GenerateRequest,
    KVTransferParams,
    Sampling,
    TokenDelta,
)

KV = KVTransferParams(remote_engine_id="e", remote_block_ids=[1], remote_host="h", remote_port=1,
                      remote_request_id="r")


class FakeWorker:
    """Answers each request with `answer(req, stream)`; records what it was sent and aborted."""

    info = None  # no HealthReply: the NIXL path (nothing named for a push)

    def __init__(self, worker_id: str, answer: Callable[[GenerateRequest, RequestStream], None]) -> None:
        self.worker_id = worker_id
        self.answer = answer
        self.sent: list[GenerateRequest] = []
        self.aborted: list[str] = []

    async def open(self, req: GenerateRequest) -> RequestStream:
        self.sent.append(req)
        stream = RequestStream(req.request_id, self.worker_id)
        self.answer(req, stream)
        return stream

    def release(self, stream: RequestStream) -> None:
        pass

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)


def dies(req: GenerateRequest, stream: RequestStream) -> None:
    stream.fail("worker stopped responding")  # what the registry does when heartbeats stop


def rejects(req: GenerateRequest, stream: RequestStream) -> None:
    stream.push(ErrorReply(req.request_id, ErrorCode.BAD_REQUEST, "bad"))


def prefills(req: GenerateRequest, stream: RequestStream) -> None:
    stream.push(TokenDelta(req.request_id, [7], FinishReason.LENGTH, kv_transfer=KV))


def decodes(req: GenerateRequest, stream: RequestStream) -> None:
    stream.push(TokenDelta(req.request_id, [8, 9], FinishReason.STOP))


def run(generation: Generation) -> list[int]:
    async def main() -> list[int]:
        return [t async for d in generation.stream() for t in d.token_ids]
    return asyncio.run(main())


def generation(prefill: FakeWorker, decode: FakeWorker, others: list[FakeWorker]) -> tuple[Generation, list[str]]:
    counted: list[str] = []

    def next_prefill(tried: frozenset[str]) -> FakeWorker | None:
        return next((w for w in others if w.worker_id not in tried), None)

    g = Generation("r", [1, 2, 3], Sampling(max_tokens=10), decode, prefill, ROUTE_DISAGGREGATED, "test",  # type: ignore[arg-type]
                   GatewayTuning(), next_prefill=next_prefill, on_fallback=counted.append)  # type: ignore[arg-type]
    return g, counted


def test_a_dead_prefill_node_is_replaced_by_the_next_one() -> None:
    dead, alive, decode = FakeWorker("p0", dies), FakeWorker("p1", prefills), FakeWorker("d0", decodes)
    g, counted = generation(dead, decode, [dead, alive])
    assert run(g) == [7, 8, 9]
    assert counted == ["prefill_retry"] and dead.aborted == ["r"]
    assert decode.sent[0].kv_transfer == KV and decode.sent[0].prompt_token_ids == [1, 2, 3, 7]


def test_with_no_prefill_node_left_the_decode_node_prefills() -> None:
    p0, p1 = FakeWorker("p0", dies), FakeWorker("p1", dies)
    decode = FakeWorker("d0", decodes)
    g, counted = generation(p0, decode, [p0, p1])
    assert run(g) == [8, 9]
    assert counted == ["prefill_retry", "prefill_local"]
    assert decode.sent[0].kv_transfer is None and decode.sent[0].prompt_token_ids == [1, 2, 3]  # colocated
    assert g.route == "colocated" and g.reason == "prefill_failed"
    assert g.served == [("decode", "d0")]


def test_a_prefill_nodes_4xx_is_not_retried() -> None:
    bad, spare, decode = FakeWorker("p0", rejects), FakeWorker("p1", prefills), FakeWorker("d0", decodes)
    g, counted = generation(bad, decode, [bad, spare])
    with pytest.raises(WorkerRejectedError):
        run(g)
    assert counted == [] and spare.sent == [] and decode.sent == []


def streams_then_dies(req: GenerateRequest, stream: RequestStream) -> None:
    stream.push(TokenDelta(req.request_id, [8]))
    asyncio.get_running_loop().call_later(0.01, stream.fail, "worker stopped responding")


def test_a_decode_node_dying_mid_stream_hands_over_to_another() -> None:
    """One uninterrupted stream: the next decode node re-prefills the prompt plus every token the
    client already has, and goes on from there."""
    prefill, dying, spare = FakeWorker("p0", prefills), FakeWorker("d0", streams_then_dies), FakeWorker("d1", decodes)
    g, counted = generation(prefill, dying, [prefill])
    g.next_decode = lambda tried: next((w for w in (dying, spare) if w.worker_id not in tried), None)  # type: ignore[assignment,return-value]
    assert run(g) == [7, 8, 8, 9]
    assert counted == ["decode_migrate"] and dying.aborted == ["r"]
    (moved,) = spare.sent
    assert moved.prompt_token_ids == [1, 2, 3, 7, 8] and moved.kv_transfer is None
    assert moved.sampling.max_tokens == 10 - 2  # what the client has counts against max_tokens
    assert g.served == [("prefill", "p0"), ("decode", "d0"), ("decode", "d1")]  # reported at the end


def test_with_no_decode_node_left_the_error_reaches_the_client() -> None:
    prefill, dying = FakeWorker("p0", prefills), FakeWorker("d0", streams_then_dies)
    g, counted = generation(prefill, dying, [prefill])
    g.next_decode = lambda tried: None
    with pytest.raises(WorkerError):
        run(g)
    assert counted == [] and dying.aborted == ["r"]
