"""Prefill/decode orchestration for one request.

`Orchestrator.plan()` picks the workers (so the API can name them in response headers before
any token exists); `Generation.stream()` runs the phases:

1. prefill (if planned): the prompt with max_tokens=1; yields the first token at once (TTFT)
   and the KV transfer params;
2. decode: the prompt plus that token, with the params, so decode pulls the prompt's KV and
   never recomputes the first token; or, colocated, the prompt alone.

Leaving `stream()` early (client gone, timeout, error) aborts the request on every worker that
still holds it, in `finally`, and re-raises: cancellation is never swallowed.

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
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import msgspec

from router.client import RequestStream, WorkerClient
from router.policy import LeastLoadedScorer, PDDecider, Profile, PromptLengthDecider, RouteRequest, WeightedScorer
from router.registry import WorkerRegistry
from router.thinking import ThinkingGuard, ThinkingLimit
from splitmind.config import GatewayTuning
from splitmind.errors import NoWorkerError
from splitmind.protocol import (
    FinishReason,
    GenerateRequest,
    KVTransferParams,
    Role,
    Sampling,
    TokenDelta,
    TokenLogprob,
    merge_deltas,
)

logger = logging.getLogger(__name__)

ROUTE_DISAGGREGATED = "disaggregated"
ROUTE_COLOCATED = "colocated"


@dataclass
class PhaseTimings:
    """Seconds spent in each phase, filled in as the request runs (for metrics and benchmarks)."""

    prefill_s: float | None = None  # prefill request sent -> first token back
    decode_first_s: float | None = None  # decode request sent -> its first token (KV pull included)
    decode_sent_at: float = 0.0  # perf_counter when the decode request went out


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
    forced_endings: int = 0  # thinking endings forced so far

    @property
    def prefill_name(self) -> str:
        return self.prefill.worker_id if self.prefill is not None else "none"

    async def stream(self) -> AsyncGenerator[TokenDelta, None]:
        """Token deltas for the client; the last has `finish_reason` set."""
        open_streams: list[tuple[WorkerClient, RequestStream]] = []
        guard = ThinkingGuard(self.thinking) if self.thinking is not None else None
        generated: list[int] = []  # every token the client was sent: a continuation resumes after them
        forced: list[int] | None = None  # a thinking ending the guard asked for, not yet sent
        try:
            if self.start_after is not None:
                async with asyncio.timeout(self.tuning.prefill_timeout_s + self.tuning.first_token_timeout_s):
                    await self.start_after.wait()
            kv = None
            if self.prefill is not None:
                first = await self._prefill(open_streams)
                kv = first.kv_transfer
                first, forced = _guarded(guard, first)
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
                dstream = await self._open_decode(segment, generated, kv, open_streams)
                kv = None
                async for delta in self._decode_deltas(dstream, first_segment=segment == 0):
                    delta, forced = _guarded(guard, delta)
                    generated += delta.token_ids
                    if delta.token_ids or delta.finish_reason is not None:
                        yield delta
                    if forced is not None:
                        self.forced_endings += 1
                        await self._abort(self.decode, dstream, open_streams)
                        break
                    if delta.finish_reason is not None:
                        return
        finally:
            if self.kv_on_decode is not None:
                self.kv_on_decode.set()  # never leave the other samples waiting
            await self._release(open_streams)

    async def _open_decode(self, segment: int, generated: list[int], kv: KVTransferParams | None,
                           open_streams: list[tuple[WorkerClient, RequestStream]]) -> RequestStream:
        """Decode the prompt plus what was generated so far. With `kv` (the first segment after a
        remote prefill) the prompt's KV is pulled and only the generated tokens are computed."""
        rid = self.request_id if segment == 0 else f"{self.request_id}-c{segment}"
        sampling = msgspec.structs.replace(self.sampling, max_tokens=self.sampling.max_tokens - len(generated))
        self.timings.decode_sent_at = time.perf_counter()
        dstream = await self.decode.open(GenerateRequest(rid, self.prompt_token_ids + generated, sampling, kv))
        open_streams.append((self.decode, dstream))
        return dstream

    async def _decode_deltas(self, dstream: RequestStream, *, first_segment: bool) -> AsyncGenerator[TokenDelta, None]:
        timeout = self.tuning.first_token_timeout_s
        while True:
            delta = await dstream.next(timeout)
            if first_segment and self.timings.decode_first_s is None:
                self.timings.decode_first_s = time.perf_counter() - self.timings.decode_sent_at
            timeout = self.tuning.stream_idle_timeout_s
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
        pstream = await self.prefill.open(GenerateRequest(self.request_id, self.prompt_token_ids, self.sampling))
        open_streams.append((self.prefill, pstream))
        deadline = sent + self.tuning.prefill_timeout_s
        merged: TokenDelta | None = None
        while True:
            delta = await pstream.next(max(0.001, deadline - time.perf_counter()))
            merged = delta if merged is None else merge_deltas(merged, delta)
            if delta.finish_reason is not None:
                break
        self.timings.prefill_s = time.perf_counter() - sent
        return merged

    async def _release(self, open_streams: list[tuple[WorkerClient, RequestStream]]) -> None:
        for worker, stream in open_streams:
            if stream.finished:
                worker.release(stream)
                continue
            logger.info("request %s: aborting on %s", stream.request_id, worker.worker_id)
            # Shielded: this runs while the caller is being cancelled, and the abort must go out.
            with contextlib.suppress(Exception):
                await asyncio.shield(worker.abort(stream.request_id))


@dataclass
class Plan:
    """The workers chosen for one request, and its samples (one per choice)."""

    request_id: str
    samples: list[Generation]
    route: str
    reason: str

    @property
    def prefill_name(self) -> str:
        return self.samples[0].prefill_name

    @property
    def decode(self) -> WorkerClient:
        return self.samples[0].decode

    @property
    def timings(self) -> PhaseTimings:
        return self.samples[0].timings


def _guarded(guard: ThinkingGuard | None, delta: TokenDelta) -> tuple[TokenDelta, list[int] | None]:
    """`delta` cut where the thinking must end, and the ending to force there (None: no cut)."""
    keep = guard.feed(delta.token_ids) if guard is not None else None
    if keep is None:
        return delta, None
    assert guard is not None
    logprobs = delta.logprobs[:keep] if delta.logprobs is not None else None
    cut = msgspec.structs.replace(delta, token_ids=delta.token_ids[:keep], logprobs=logprobs, finish_reason=None)
    return cut, guard.forced_ids()


def sample_sampling(sampling: Sampling, index: int) -> Sampling:
    if index == 0 or sampling.seed is None:
        return sampling
    return msgspec.structs.replace(sampling, seed=sampling.seed + index)


class Orchestrator:
    def __init__(self, registry: WorkerRegistry, tuning: GatewayTuning,
                 decider: PDDecider | None = None, profile: Profile | None = None) -> None:
        self.registry = registry
        self.tuning = tuning
        self.decider = decider or PromptLengthDecider(tuning.min_disagg_prompt_tokens)
        self.profile = profile or Profile([WeightedScorer(LeastLoadedScorer())])

    def plan(self, request_id: str, prompt_token_ids: list[int], sampling: Sampling,
             route_override: str | None = None, n: int = 1, thinking: ThinkingLimit | None = None) -> Plan:
        req = RouteRequest(request_id, len(prompt_token_ids))
        decode = self.profile.pick(req, self.registry.healthy(Role.DECODE))
        if decode is None:
            raise NoWorkerError("no healthy decode worker")
        prefill = None
        prefills = self.registry.healthy(Role.PREFILL)
        if route_override == ROUTE_COLOCATED:
            want, reason = False, "override"
        elif route_override == ROUTE_DISAGGREGATED:
            want, reason = True, "override"
        elif not prefills:
            want, reason = False, "no_prefill_worker"
        else:
            want, reason = self.decider.should_disaggregate(req)
        if want:
            prefill = self.profile.pick(req, prefills)
            if prefill is None:
                if route_override == ROUTE_DISAGGREGATED:
                    raise NoWorkerError("no healthy prefill worker")
                reason = "no_prefill_worker"
        route = ROUTE_DISAGGREGATED if prefill is not None else ROUTE_COLOCATED
        first = Generation(request_id if n == 1 else f"{request_id}-0", prompt_token_ids, sampling, decode, prefill,
                           route, reason, self.tuning, kv_on_decode=asyncio.Event() if n > 1 else None,
                           thinking=thinking)
        others = [Generation(f"{request_id}-{i}", prompt_token_ids, sample_sampling(sampling, i), decode, None,
                             ROUTE_COLOCATED, "sample_after_first", self.tuning, start_after=first.kv_on_decode,
                             thinking=thinking)
                  for i in range(1, n)]
        return Plan(request_id, [first, *others], route, reason)
