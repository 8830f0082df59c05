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
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.errors import sse_error_data
from api.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from api.service import Assembler, Prepared, TextDelta, prepare_chat, prepare_completion
from api.state import GatewayState
from router.pd import Generation
from splitmind.errors import InvalidRequestError, ModelNotFoundError, NoWorkerError
from splitmind.protocol import TokenDelta

router = APIRouter()
logger = logging.getLogger(__name__)


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
    prepared = prepare(req, st.frontend, _max_model_len(st))
    return await _serve(request, st, prepared, stream=req.stream, include_usage=req.include_usage,
                        model=req.model, t0=t0, return_token_ids=req.return_token_ids)


def _check_model(st: GatewayState, model: str) -> None:
    if model != st.served_model_name:
        raise ModelNotFoundError(model)


def _max_model_len(st: GatewayState) -> int:
    n = st.registry.max_model_len()
    if n is None:
        raise NoWorkerError("no worker has reported its context length yet")
    return n


async def _serve(request: Request, st: GatewayState, prepared: Prepared, *, stream: bool, include_usage: bool,
                 model: str, t0: float, return_token_ids: bool = False) -> Response:
    st.metrics.tokenize.observe(time.perf_counter() - t0)
    # Engines need ids unique per node; a client's x-request-id is echoed, not trusted to be unique.
    rid = new_request_id()
    logger.info("request %s: x-request-id %s, %d prompt tokens", rid, request.state.request_id,
                len(prepared.prompt_token_ids))
    override = request.headers.get("x-splitmind-route") if st.tuning.allow_route_override else None
    gen = st.orchestrator.plan(rid, prepared.prompt_token_ids, prepared.sampling, override)
    request.state.prefill_worker = gen.prefill_name
    request.state.decode_worker = gen.decode.worker_id
    st.metrics.requests.labels(gen.route).inc()
    st.metrics.route_decisions.labels(gen.route, gen.reason).inc()
    st.metrics.prompt_tokens.inc(len(prepared.prompt_token_ids))
    run = _Run(st, gen, prepared, model, t0, return_token_ids)
    if not stream:
        return await _until_disconnect(request, run.collect())
    events = gen.stream()
    try:
        first = await anext(events)
    except BaseException:
        await events.aclose()
        raise
    return EventSourceResponse(run.sse(first, events, include_usage), ping=15, sep="\n")


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


class _Run:
    """One request's output: text assembly, OpenAI chunk shapes, metrics."""

    def __init__(self, st: GatewayState, gen: Generation, prepared: Prepared, model: str, t0: float,
                 return_token_ids: bool = False) -> None:
        self.return_token_ids = return_token_ids
        self.token_ids: list[int] = []
        self.st = st
        self.gen = gen
        self.prepared = prepared
        self.model = model
        self.t0 = t0
        self.created = int(time.time())
        self.asm = Assembler(st.frontend, prepared)
        self.last_token_at: float | None = None
        self.decode_first_observed = False
        self.id = ("chatcmpl-" if prepared.kind == "chat" else "cmpl-") + gen.request_id

    def _observe(self, delta: TokenDelta) -> None:
        now = time.perf_counter()
        n = len(delta.token_ids)
        if n == 0:
            return
        m = self.st.metrics
        if self.last_token_at is None:
            m.ttft.observe(now - self.t0)
            if self.gen.timings.prefill_s is not None:
                m.prefill.observe(self.gen.timings.prefill_s)
        else:
            gap = (now - self.last_token_at) / n
            for _ in range(n):
                m.itl.observe(gap)
        if self.gen.timings.decode_first_s is not None and not self.decode_first_observed:
            m.decode_first.observe(self.gen.timings.decode_first_s)
            self.decode_first_observed = True
        self.last_token_at = now
        m.generation_tokens.inc(n)

    def _finish(self) -> None:
        self.st.metrics.e2e.observe(time.perf_counter() - self.t0)
        self.st.metrics.reasoning_tokens.inc(self.asm.num_reasoning_tokens)

    def usage(self) -> dict[str, Any]:
        n_prompt = len(self.prepared.prompt_token_ids)
        n_out = self.asm.num_completion_tokens
        return {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out,
                "completion_tokens_details": {"reasoning_tokens": self.asm.num_reasoning_tokens}}

    async def collect(self) -> JSONResponse:
        reasoning, content = [], []
        finish: str | None = None
        async for delta in self.gen.stream():
            self._observe(delta)
            self.token_ids += delta.token_ids
            segments, finish = self.asm.feed(delta)
            reasoning += [seg.reasoning for seg in segments]
            content += [seg.content for seg in segments]
            if finish is not None:
                break  # a stop string ends the request early; leaving the loop aborts it on the workers
        self._finish()
        if self.prepared.kind == "completion":
            choice: dict[str, Any] = {"index": 0, "text": "".join(content), "logprobs": None, "finish_reason": finish}
            obj = "text_completion"
        else:
            r = "".join(reasoning) if self.st.frontend.is_reasoning_model else None
            message = {"role": "assistant", "content": "".join(content), "reasoning_content": r or None,
                       "reasoning": r or None}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            obj = "chat.completion"
        if self.return_token_ids:
            choice["token_ids"] = self.token_ids
            choice["prompt_token_ids"] = self.prepared.prompt_token_ids
        body = {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "choices": [choice], "usage": self.usage()}
        return JSONResponse(body)

    def _chunk(self, text: TextDelta | None, finish: str | None, *, first: bool = False,
               include_usage: bool = False) -> str:
        if self.prepared.kind == "completion":
            choice: dict[str, Any] = {"index": 0, "text": text.content if text else "", "logprobs": None,
                                      "finish_reason": finish}
            obj = "text_completion"
        else:
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
                delta["content"] = ""
            if text is not None and text.reasoning:
                delta["reasoning_content"] = text.reasoning
                delta["reasoning"] = text.reasoning
            if text is not None and text.content:
                delta["content"] = text.content
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            obj = "chat.completion.chunk"
        body: dict[str, Any] = {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                                "choices": [choice]}
        if include_usage:
            body["usage"] = None
        return json.dumps(body)

    async def sse(self, first: TokenDelta, events: AsyncGenerator[TokenDelta, None],
                  include_usage: bool) -> AsyncIterator[ServerSentEvent]:
        try:
            if self.prepared.kind == "chat":
                yield ServerSentEvent(data=self._chunk(None, None, first=True, include_usage=include_usage))
            delta: TokenDelta | None = first
            while delta is not None:
                self._observe(delta)
                segments, finish = self.asm.feed(delta)
                for seg in segments:
                    yield ServerSentEvent(data=self._chunk(seg, None, include_usage=include_usage))
                if finish is not None:
                    yield ServerSentEvent(data=self._chunk(None, finish, include_usage=include_usage))
                    break
                delta = await anext(events, None)
            self._finish()
            if include_usage:
                obj = "chat.completion.chunk" if self.prepared.kind == "chat" else "text_completion"
                usage: dict[str, Any] = {"id": self.id, "object": obj, "created": self.created,
                                         "model": self.model, "choices": [], "usage": self.usage()}
                yield ServerSentEvent(data=json.dumps(usage))
        except asyncio.CancelledError:
            self.st.metrics.aborts.labels("client_disconnected").inc()
            raise
        except Exception as exc:  # after the stream started, errors travel in-band
            yield ServerSentEvent(data=sse_error_data(exc))
        finally:
            await events.aclose()  # aborts on every worker still holding the request
        yield ServerSentEvent(data="[DONE]")


def new_request_id() -> str:
    return uuid.uuid4().hex
