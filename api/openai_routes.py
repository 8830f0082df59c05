"""`/v1/chat/completions`, `/v1/completions`, `/v1/models`.

A streaming request waits for its first token before the SSE response starts, so anything that
fails before then (no worker, prefill error, a worker's 4xx) still gets a proper HTTP status;
the first token is sent the moment it exists, so TTFT is unchanged. A client that goes away
cancels the stream task; `Generation.stream()` then aborts the request on every worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.errors import sse_error_data
from api.response import Response as OpenAIResponse
from api.sampling import Deployment
from api.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from api.service import Prepared, prepare_chat, prepare_completion
from api.state import GatewayState
from router.samples import SampleStreams
from splitmind.errors import InvalidRequestError, ModelNotFoundError, NoWorkerError
from splitmind.protocol import TokenDelta

router = APIRouter()
logger = logging.getLogger(__name__)
PING_INTERVAL_S = 5


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


async def _parse(request: Request, model: type[BaseModel]) -> Any:
    body = await request.body()
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidRequestError("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object")
    return model.model_validate(data)


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    st = _state(request)
    return {"object": "list", "data": [{
        "id": st.served_model_name, "object": "model", "created": st.started_at, "owned_by": "splitmind",
        "max_model_len": st.registry.max_model_len(),
    }]}


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await _handle(request, ChatCompletionRequest, prepare_chat)


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    return await _handle(request, CompletionRequest, prepare_completion)


async def _handle(request: Request, schema: type[SamplingFields], prepare: Callable[..., Prepared]) -> Response:
    st = _state(request)
    req = await _parse(request, schema)
    _check_model(st, req.model)
    t0 = time.perf_counter()
    prepared = prepare(req, st.frontend, _deployment(st))
    return await _serve(request, st, prepared, req, t0)


def _check_model(st: GatewayState, model: str) -> None:
    if model != st.served_model_name:
        raise ModelNotFoundError(model)


def _deployment(st: GatewayState) -> Deployment:
    n = st.registry.max_model_len()
    if n is None:
        raise NoWorkerError("no worker has reported its context length yet")
    return Deployment(vocab_size=st.frontend.vocab_size, max_model_len=n,
                      speculative=st.registry.speculative_decoding(),
                      hidden_reasoning=st.tuning.reasoning == "hidden")


async def _serve(request: Request, st: GatewayState, prepared: Prepared, req: SamplingFields, t0: float) -> Response:
    st.metrics.tokenize.observe(time.perf_counter() - t0)
    # Engines need ids unique per node; a client's x-request-id is echoed, not trusted to be unique.
    rid = new_request_id()
    logger.info("request %s: x-request-id %s, %d prompt tokens, %d choice(s)", rid, request.state.request_id,
                len(prepared.prompt_token_ids), prepared.n)
    override = request.headers.get("x-splitmind-route") if st.tuning.allow_route_override else None
    plan = st.orchestrator.plan(rid, prepared.prompt_token_ids, prepared.sampling, override, n=prepared.n,
                                thinking=prepared.thinking)
    request.state.prefill_worker = plan.prefill_name
    request.state.decode_worker = plan.decode.worker_id
    st.metrics.requests.labels(plan.route).inc()
    st.metrics.route_decisions.labels(plan.route, plan.reason).inc()
    st.metrics.prompt_tokens.inc(len(prepared.prompt_token_ids))
    out = OpenAIResponse(st, plan, prepared, req.model, t0, return_token_ids=req.return_token_ids,
                         include_usage=req.include_usage, continuous_usage=req.continuous_usage)
    streams = SampleStreams([g.stream() for g in plan.samples])
    if not req.stream:
        return await _until_disconnect(request, _collect(out, streams))
    try:
        first = await anext(streams)
    except BaseException:
        await streams.aclose()
        raise
    # Pings every 5 s keep a stream alive while the engine is silent (hidden thinking included).
    return EventSourceResponse(_sse(out, first, streams), ping=PING_INTERVAL_S, sep="\n")


async def _until_disconnect(request: Request, work: Any) -> Response:
    """Run a non-streaming request, cancelling it (and so aborting it on the workers) if the
    client disconnects first."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait([task], timeout=0.5)
            if not task.done() and await request.is_disconnected():
                task.cancel()
                _state(request).metrics.aborts.labels("client_disconnected").inc()
                return Response(status_code=499)
        return task.result()  # type: ignore[no-any-return]
    finally:
        if not task.done():
            task.cancel()


async def _collect(out: OpenAIResponse, streams: SampleStreams) -> JSONResponse:
    try:
        async for index, delta in streams:
            out.feed(index, delta)
            if out.choices[index].finish is not None:
                await streams.close(index)  # a stop string ends it early: abort it on the workers
    finally:
        await streams.aclose()
    out.finish()
    return JSONResponse(out.body())


def _event(data: str | None = None, comment: str | None = None) -> ServerSentEvent:
    """An SSE event framed as OpenAI and vLLM frame them (`data: ...\n\n`). sse-starlette
    encodes a `ServerSentEvent` with its own separator, `\r\n` by default, whatever the
    response's `sep`; clients that split events on `\n\n` then lose events."""
    return ServerSentEvent(data=data, comment=comment, sep="\n")


async def _sse(out: OpenAIResponse, first: tuple[int, TokenDelta], streams: SampleStreams
               ) -> AsyncIterator[ServerSentEvent]:
    try:
        if out.is_chat:
            for c in out.choices:
                yield _event(out.chunk(c.index, None, None, first=True))
        item: tuple[int, TokenDelta] | None = first
        while item is not None:
            index, delta = item
            for seg in out.feed(index, delta):
                yield _event(out.chunk(index, seg, None))
            if out.hidden_progress():
                yield _event(comment=f"thinking: {out.progress_tokens} reasoning tokens")
                if out.include_usage:
                    yield _event(out.usage_chunk())
            finish = out.choices[index].finish
            if finish is not None:
                yield _event(out.chunk(index, None, finish))
                await streams.close(index)
            item = await anext(streams, None)
        out.finish()
        if out.include_usage:
            yield _event(out.usage_chunk())
    except asyncio.CancelledError:
        out.st.metrics.aborts.labels("client_disconnected").inc()
        raise
    except Exception as exc:  # after the stream started, errors travel in-band
        yield _event(sse_error_data(exc))
    finally:
        await streams.aclose()  # aborts on every worker still holding the request
    yield _event("[DONE]")


def new_request_id() -> str:
    return uuid.uuid4().hex
