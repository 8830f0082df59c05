"""Prefill/decode orchestration for one request.

`Orchestrator.plan()` picks the workers (a `router/plan.py` `Plan`, so the API can name them in
response headers before any token exists); `Generation.stream()` runs the phases:

1. prefill (if planned): the prompt with max_tokens=1; yields the first token at once (TTFT)
   and the KV transfer params;
2. decode: the prompt plus that token, with the params, so decode pulls the prompt's KV and
   never recomputes the first token; or, colocated, the prompt alone.

Leaving `stream()` early (client gone, timeout, error) aborts the request on every worker that
still holds it, in `finally`, and re-raises: cancellation is never swallowed. A prefill's KV that
no decode request claimed (the client left between the phases, or the first token was the last)
is released at once through the decode node (`protocol.ReleaseKV`), not at the lease's end.

A prefill that fails (the node died, went silent, or answered a 5xx) has sent the client nothing,
so it is safe to redo: on the next healthy prefill node, or, with none left, on the decode node
itself (colocated). The client sees a normal response; the fallback is counted with its reason.
A prefill node's 4xx (the request is invalid) is never retried.

A request for n choices is a `Plan` of n `Generation`s on one decode node. Only the first is
prefilled remotely: the prompt is prefilled once and its KV shipped once. The others start on
the decode node once the first's KV has landed there (its first decode token), so the decode
node's prefix cache serves them every full KV block of the prompt; each computes only the
partial last block and samples its own first token. Sample i > 0 gets seed + i when a seed is
set (vLLM's own rule for n > 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

import msgspec

from router.client import WorkerClient
from router.early_exit import EarlyExit, ProbeOutcome, Prober
from router.kv_push import kv_address_of, push_kv_to
from router.request_stream import RequestStream
from router.thinking import ThinkingGuard, ThinkingLimit, guarded
from router.timings import PhaseTimings
from splitmind.config import GatewayTuning
from splitmind.errors import WorkerError, WorkerRejectedError
from splitmind.protocol import (
    FinishReason,
    GenerateRequest,
    KVTransferParams,
    Sampling,
    TokenDelta,
    TokenLogprob,
    merge_deltas,
)

logger = logging.getLogger(__name__)

ROUTE_DISAGGREGATED = "disaggregated"
ROUTE_COLOCATED = "colocated"


@dataclass
class Generation:
    """One sample of a request."""

    request_id: str
    prompt_token_ids: list[int]
    sampling: Sampling
    decode: WorkerClient
    prefill: WorkerClient | None
    route: str
    reason: str
    tuning: GatewayTuning
    timings: PhaseTimings = field(default_factory=PhaseTimings)
    kv_on_decode: asyncio.Event | None = None  # set by this sample once the prompt's KV is on the decode node
    start_after: asyncio.Event | None = None  # this sample waits for another's `kv_on_decode`
    thinking: ThinkingLimit | None = None  # where the thinking must end (`router/thinking.py`)
    forced_endings: list[str] = field(default_factory=list)  # thinking endings forced so far, by reason
    early_exit: EarlyExit | None = None  # probe for a settled answer (`router/early_exit.py`)
    on_probe: ProbeOutcome | None = None
    prober: Prober | None = None  # this sample's probes, once it streams
    # Another healthy prefill node, none of the ones named (None: prefill on the decode node).
    next_prefill: Callable[[frozenset[str]], WorkerClient | None] | None = None
    next_decode: Callable[[frozenset[str]], WorkerClient | None] | None = None  # the same, for decode
    decode_tried: set[str] = field(default_factory=set)
    on_fallback: Callable[[str], None] | None = None  # counts each fallback, by reason
    fallbacks: list[str] = field(default_factory=list)  # prefill_retry, prefill_local, decode_retry, decode_migrate
    served: list[tuple[str, str]] = field(default_factory=list)  # (phase, worker) that did work, in order
    unclaimed_kv: KVTransferParams | None = None  # a prefill's KV no decode request has asked for yet

    @property
    def prefill_name(self) -> str:
        return self.prefill.worker_id if self.prefill is not None else "none"

    async def stream(self) -> AsyncGenerator[TokenDelta, None]:
        """Token deltas for the client; the last has `finish_reason` set."""
        open_streams: list[tuple[WorkerClient, RequestStream]] = []
        guard = ThinkingGuard(self.thinking) if self.thinking is not None else None
        if guard is not None and self.early_exit is not None:
            self.prober = Prober(self.early_exit, self.request_id, self.on_probe)
        generated: list[int] = []  # every token the client was sent: a continuation resumes after them
        forced: list[int] | None = None  # a thinking ending the guard asked for, not yet sent
        try:
            if self.start_after is not None:
                async with asyncio.timeout(self.tuning.prefill_timeout_s + self.tuning.first_token_timeout_s):
                    await self.start_after.wait()
            first = await self._prefill_or_fall_back(open_streams) if self.prefill is not None else None
            if first is not None:
                self.unclaimed_kv = first.kv_transfer
                first, forced = guarded(guard, first)
                generated += first.token_ids
                done = forced is None and (first.finish_reason == FinishReason.STOP
                                           or len(generated) >= self.sampling.max_tokens)
                if first.token_ids or done:
                    yield msgspec.structs.replace(first, kv_transfer=None, finish_reason=first.finish_reason if done
                                                  else None)
                if done:
                    return
            for segment in itertools.count():  # decode: once, and again after each forced ending
                if forced is not None:
                    generated += forced
                    ending = self._forced_delta(forced, len(generated) >= self.sampling.max_tokens)
                    yield ending
                    if ending.finish_reason is not None:
                        return
                    forced = None
                dstream = await self._open_decode(segment, generated, self.unclaimed_kv, open_streams)
                self.unclaimed_kv = None  # the decode node has it: its abort frees the prefill's KV
                try:
                    async for delta in self._decode_deltas(dstream, first_segment=segment == 0):
                        delta, forced = guarded(guard, delta)
                        generated += delta.token_ids
                        if self.prober is not None and guard is not None:
                            if guard.ended:  # by a cut or by the model: no probe is of use now
                                self.prober.cancel()
                            else:
                                self.prober.after(guard, self.prompt_token_ids + generated, self.decode)
                        if delta.token_ids or delta.finish_reason is not None:
                            yield delta
                        if forced is not None:
                            assert guard is not None
                            self.forced_endings.append(guard.reason)
                            await self._abort(self.decode, dstream, open_streams)
                            break
                        if delta.finish_reason is not None:
                            return
                except WorkerRejectedError:
                    raise
                except WorkerError as exc:  # the decode node died, went silent or failed: go on elsewhere
                    if not await self._move_decode(exc, dstream, open_streams, bool(generated)):
                        raise
        finally:
            if self.kv_on_decode is not None:
                self.kv_on_decode.set()  # never leave the other samples waiting
            if self.prober is not None:
                self.prober.cancel()
            await self._release(open_streams)
            if self.unclaimed_kv is not None:  # client gone before decode, or the first token was the last
                await self._release_kv(self.unclaimed_kv)

    async def _prefill_or_fall_back(self, open_streams: list[tuple[WorkerClient, RequestStream]]
                                    ) -> TokenDelta | None:
        """The first token and the KV's transfer params from a prefill node. After a failed
        prefill, the next healthy prefill node tries; None when none is left: the decode node
        then prefills for itself."""
        tried: set[str] = set()
        while self.prefill is not None:
            try:
                return await self._prefill(open_streams)
            except WorkerRejectedError:
                raise  # the request is at fault, not the node
            except WorkerError as exc:
                tried.add(self.prefill.worker_id)
                await self._release(open_streams)  # abort it there, in case the node lives
                open_streams.clear()
                self.prefill = self.next_prefill(frozenset(tried)) if self.next_prefill is not None else None
                reason = "prefill_retry" if self.prefill is not None else "prefill_local"
                logger.warning("request %s: prefill on %s failed (%s); %s", self.request_id, exc.worker_id, exc,
                               f"retrying on {self.prefill.worker_id}" if self.prefill is not None
                               else f"prefilling on the decode node {self.decode.worker_id}")
                self.fallbacks.append(reason)
                if self.on_fallback is not None:
                    self.on_fallback(reason)
        self.route, self.reason = ROUTE_COLOCATED, "prefill_failed"
        self.timings.prefill_s = None
        return None

    async def _move_decode(self, exc: WorkerError, dstream: RequestStream,
                           open_streams: list[tuple[WorkerClient, RequestStream]], started: bool) -> bool:
        """After a decode node failed: the next healthy decode node takes over, and the caller's
        next segment re-prefills the prompt plus every token the client already has (one
        uninterrupted stream; the thinking guard and its budget carry over). False: none left."""
        self.decode_tried.add(self.decode.worker_id)
        with contextlib.suppress(ValueError):
            open_streams.remove((self.decode, dstream))
        await self._release([(self.decode, dstream)])
        nxt = self.next_decode(frozenset(self.decode_tried)) if self.next_decode is not None else None
        logger.warning("request %s: decode on %s failed (%s); %s", self.request_id, exc.worker_id, exc,
                       f"continuing on {nxt.worker_id}" if nxt is not None else "no other decode node")
        if nxt is None:
            return False
        reason = "decode_migrate" if started else "decode_retry"
        self.decode = nxt
        self.fallbacks.append(reason)
        if self.on_fallback is not None:
            self.on_fallback(reason)
        return True

    async def _open_decode(self, segment: int, generated: list[int], kv: KVTransferParams | None,
                           open_streams: list[tuple[WorkerClient, RequestStream]]) -> RequestStream:
        """Decode the prompt plus what was generated so far. With `kv` (the first segment after a
        remote prefill) the prompt's KV is pulled and only the generated tokens are computed."""
        rid = self.request_id if segment == 0 else f"{self.request_id}-c{segment}"
        sampling = msgspec.structs.replace(self.sampling, max_tokens=self.sampling.max_tokens - len(generated))
        self.timings.decode_sent_at = time.perf_counter()
        if kv is not None and kv.transport == "zmq" and kv.push_to != kv_address_of(self.decode):
            kv = None  # pushed to a decode node that is not this one (it failed since): computed here
        if segment == 0:
            self.timings.decode_pulls_kv = kv is not None
        dstream = await self.decode.open(GenerateRequest(rid, self.prompt_token_ids + generated, sampling, kv))
        open_streams.append((self.decode, dstream))
        if ("decode", self.decode.worker_id) not in self.served:
            self.served.append(("decode", self.decode.worker_id))
        return dstream

    async def _decode_deltas(self, dstream: RequestStream, *, first_segment: bool) -> AsyncGenerator[TokenDelta, None]:
        timeout = self.tuning.first_token_timeout_s
        phase = "first decode token (KV transfer and first decode step; gateway.first_token_timeout_s)"
        while True:
            delta = await dstream.next(timeout, phase)
            if first_segment and self.timings.decode_first_s is None:
                self.timings.decode_first_s = time.perf_counter() - self.timings.decode_sent_at
                self.timings.record_engine(delta.engine_timings, received_kv=self.timings.decode_pulls_kv)
            timeout = self.tuning.stream_idle_timeout_s
            phase = "next token (gateway.stream_idle_timeout_s)"
            if self.kv_on_decode is not None:
                self.kv_on_decode.set()
            yield delta
            if delta.finish_reason is not None:
                return

    def _forced_delta(self, forced: list[int], last: bool) -> TokenDelta:
        """The forced ending as the client sees it. It was not sampled: logprob 0 (probability 1)."""
        logprobs = [TokenLogprob(t, 0.0) for t in forced] if self.sampling.logprobs is not None else None
        return TokenDelta(self.request_id, forced, FinishReason.LENGTH if last else None, logprobs=logprobs)

    async def _abort(self, worker: WorkerClient, stream: RequestStream,
                     open_streams: list[tuple[WorkerClient, RequestStream]]) -> None:
        open_streams.remove((worker, stream))
        await self._release([(worker, stream)])

    async def _prefill(self, open_streams: list[tuple[WorkerClient, RequestStream]]) -> TokenDelta:
        assert self.prefill is not None
        sent = time.perf_counter()
        push = push_kv_to(self.prefill, self.decode, f"{self.request_id}@{self.prefill.worker_id}")
        pstream = await self.prefill.open(GenerateRequest(self.request_id, self.prompt_token_ids, self.sampling, push))
        open_streams.append((self.prefill, pstream))
        deadline = sent + self.tuning.prefill_timeout_s
        merged: TokenDelta | None = None
        while True:
            delta = await pstream.next(max(0.001, deadline - time.perf_counter()),
                                       "prefill (first token and KV; gateway.prefill_timeout_s)")
            merged = delta if merged is None else merge_deltas(merged, delta)
            if delta.finish_reason is not None:
                break
        self.timings.prefill_s = time.perf_counter() - sent
        self.timings.record_engine(merged.engine_timings, received_kv=False)
        self.served.append(("prefill", self.prefill.worker_id))
        return merged

    async def _release_kv(self, kv: KVTransferParams) -> None:
        self.unclaimed_kv = None
        logger.info("request %s: prefill KV never pulled; releasing it through %s", self.request_id,
                    self.decode.worker_id)
        with contextlib.suppress(Exception):  # shielded, as aborts are; the lease frees it in the end
            await asyncio.shield(self.decode.release_kv(self.request_id, kv))

    async def _release(self, open_streams: list[tuple[WorkerClient, RequestStream]]) -> None:
        for worker, stream in open_streams:
            if stream.finished:
                worker.release(stream)
                continue
            logger.info("request %s: aborting on %s", stream.request_id, worker.worker_id)
            # Shielded: this runs while the caller is being cancelled, and the abort must go out.
            with contextlib.suppress(Exception):
                await asyncio.shield(worker.abort(stream.request_id))
