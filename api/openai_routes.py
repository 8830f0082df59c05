"""`/v1/chat/completions`, `/v1/completions`, `/v1/models`.

A streaming request waits for its first token before the SSE response starts, so anything that
fails before then (no worker, prefill error, a worker's 4xx) still gets a proper HTTP status;
the first token is sent the moment it exists, so TTFT is unchanged. A client that goes away
cancels the stream task; `Generation.stream()` then aborts the request on every worker. That
holds from the moment the request arrives: while its body is read, while it is templated and
tokenized (in a worker thread, within `prepare_timeout_s`), and while its first token is
awaited. Validation (schema, model, deployment limits) ends before the router plans anything,
so a refused request leaves no state behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from api.errors import sse_error_data, status_and_body
from api.openapi import request_body
from api.response import Response as OpenAIResponse
from api.sampling import Deployment
from api.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from api.service import Prepared, prepare_chat, prepare_completion
from api.sse import SSEStream, comment, data
from api.state import GatewayState
from router.samples import SampleStreams
from splitmind.errors import InvalidRequestError, ModelNotFoundError, NoWorkerError, PrepareTimeoutError
from splitmind.protocol import TokenDelta

router = APIRouter()
logger = logging.getLogger(__name__)
PING_INTERVAL_S = 5
DISCONNECT_POLL_S = 0.5
CANCEL_WAIT_S = 10.0  # a cancelled step of a request gets this long to unwind (its aborts go out)
T = TypeVar("T")


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


class ClientGone(Exception):
    """The client disconnected before its response started."""


def _parse(body: bytes, model: type[SamplingFields], st: GatewayState) -> Any:
    """Parse and validate a request body, everything that does not depend on the workers (in a
    worker thread: a large body costs milliseconds)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # bad JSON or UTF-8, a 5,000-digit number, deep nesting
        raise InvalidRequestError("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object")
    req = model.model_validate(data)
    if req.model != st.served_model_name:
        raise ModelNotFoundError(req.model)
    if isinstance(req, ChatCompletionRequest):
        st.frontend.check_template_kwargs(req.chat_template_kwargs or {})
    num_chars, limit = req.num_prompt_chars(), st.tuning.max_prompt_chars
    if num_chars > limit:
        raise InvalidRequestError(f"the prompt has {num_chars} characters; this server takes at most {limit}",
                                  param="messages" if isinstance(req, ChatCompletionRequest) else "prompt",
                                  code="prompt_too_long")
    return req


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    st = _state(request)
    # `root` and `parent` as vLLM's server sends them: `vllm bench serve` reads `root` and fails
    # without it. The served name, not the model's directory: no server path leaves the gateway.
    return {"object": "list", "data": [{
        "id": st.served_model_name, "object": "model", "created": st.started_at, "owned_by": "splitmind",
        "root": st.served_model_name, "parent": None,
        "max_model_len": st.registry.max_model_len(), "reasoning": _reasoning_card(st),
    }]}


def _reasoning_card(st: GatewayState) -> dict[str, Any]:
    """What the reasoning controls accept for this model (the chat page enables its controls by
    it; other clients ignore the field): whether it thinks, the visibility the server enforces,
    and the budget each effort maps to (None: unlimited)."""
    fe = st.frontend
    return {"thinks": fe.is_reasoning_model, "visibility": st.tuning.reasoning,
            "effort_budgets": dict(fe.profile.effort_budgets) if fe.is_reasoning_model else {}}


@router.post("/v1/chat/completions", openapi_extra=request_body(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    return await _handle(request, ChatCompletionRequest, prepare_chat)


@router.post("/v1/completions", openapi_extra=request_body(CompletionRequest))
async def completions(request: Request) -> Response:
    return await _handle(request, CompletionRequest, prepare_completion)


async def _handle(request: Request, schema: type[SamplingFields], prepare: Callable[..., Prepared]) -> Response:
    st = _state(request)
    try:
        try:
            body = await request.body()
        except ClientDisconnect:
            raise ClientGone() from None
        req = await _off_loop(request, st, _parse, body, schema, st)
        t0 = time.perf_counter()
        prepared = await _off_loop(request, st, prepare, req, st.frontend, _deployment(st))
        return await _serve(request, st, prepared, req, t0)
    except ClientGone:
        st.metrics.aborts.labels("client_disconnected").inc()
        return Response(status_code=499)


async def _off_loop(request: Request, st: GatewayState, fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn` in a prepare thread, within `prepare_timeout_s`: a chat template and a tokenizer
    on the event loop held every other stream still while they ran. A thread cannot be stopped,
    so its work is bounded by the request limits (`max_prompt_chars`); past the timeout the
    request is refused and the thread finishes on its own."""
    loop = asyncio.get_running_loop()
    work = loop.run_in_executor(st.prepare_pool, fn, *args)
    try:
        async with asyncio.timeout(st.tuning.prepare_timeout_s):
            return await _watch(request, work)
    except TimeoutError:
        raise PrepareTimeoutError(f"preparing the prompt took longer than {st.tuning.prepare_timeout_s:g}s") from None


async def _watch(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, or cancel it and raise ClientGone as soon as the client disconnects: from
    the moment a request arrives until its response starts, nothing waits for a client that
    left (a stream's first token included)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait([task], timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientGone()
    finally:
        if not task.done():
            task.cancel()
            # Until it has unwound: the caller closes the generator `work` was running next, and
            # closing one still running raised RuntimeError, a 500 logged as an unhandled error
            # (test_fuzz's clients that left before the first token).
            await asyncio.wait([task], timeout=CANCEL_WAIT_S)


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
                                thinking=prepared.thinking, early_exit=prepared.early_exit)
    request.state.prefill_worker = plan.prefill_name
    request.state.decode_worker = plan.decode.worker_id
    st.metrics.requests.labels(plan.route).inc()
    st.metrics.route_decisions.labels(plan.route, plan.reason).inc()
    st.metrics.prompt_tokens.inc(len(prepared.prompt_token_ids))
    out = OpenAIResponse(st, plan, prepared, req.model, t0, return_token_ids=req.return_token_ids,
                         include_usage=req.include_usage, continuous_usage=req.continuous_usage)
    request.state.response = out  # for the access log (api/access_log.py)
    streams = SampleStreams([g.stream() for g in plan.samples])
    if not req.stream:
        response = await _watch(request, _collect(out, streams))  # cancelled: aborted on the workers
        # Headers go out after the work here, so they name the workers that served it.
        served = plan.served_by()
        request.state.prefill_worker = ",".join(served["prefill"]) or "none"
        request.state.decode_worker = ",".join(served["decode"]) or plan.decode.worker_id
        return response
    try:
        first = await _watch(request, anext(streams))
    except BaseException:
        await streams.aclose()
        raise
    # Pings every 5 s keep a stream alive while the engine is silent (hidden thinking included).
    # A client that takes none of it for `send_timeout_s` is dropped (its requests aborted);
    # on SIGTERM open streams get `drain_s` to finish before they are cut (api/sse.py).
    return SSEStream(_sse(out, first, streams), ping_s=PING_INTERVAL_S, send_timeout_s=st.tuning.send_timeout_s,
                     drain_s=st.tuning.drain_s, shutting_down=getattr(request.app.state, "shutting_down", _never),
                     request_id=rid)


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


def _never() -> bool:
    return False


async def _sse(out: OpenAIResponse, first: tuple[int, TokenDelta], streams: SampleStreams
               ) -> AsyncGenerator[bytes, None]:
    try:
        if out.is_chat:
            for c in out.choices:
                yield data(out.chunk(c.index, None, None, first=True))
        item: tuple[int, TokenDelta] | None = first
        while item is not None:
            index, delta = item
            for seg in out.feed(index, delta):
                yield data(out.chunk(index, seg, None))
            if out.hidden_progress():
                yield comment(f"thinking: {out.progress_tokens} reasoning tokens")
                if out.include_usage:
                    yield data(out.usage_chunk())
            finish = out.choices[index].finish
            if finish is not None:
                yield data(out.chunk(index, None, finish))
                await streams.close(index)
            item = await anext(streams, None)
        out.finish()
        if out.include_usage:
            yield data(out.usage_chunk(final=True))
        yield comment(out.served_comment())
    except asyncio.CancelledError:
        out.st.metrics.aborts.labels("client_disconnected").inc()
        raise
    except Exception as exc:  # after the stream started, errors travel in-band
        out.st.metrics.errors.labels(str(status_and_body(exc)[0])).inc()
        yield data(sse_error_data(exc))
    finally:
        await streams.aclose()  # aborts on every worker still holding the request
    yield data("[DONE]")


def new_request_id() -> str:
    return uuid.uuid4().hex
