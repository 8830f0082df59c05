"""One request's output in OpenAI's shapes: its choices, chunks, usage and metrics.

Each choice (one per sample, `n`) has its own assembler: reasoning split, detokenization, stop
strings, logprobs. Usage counts the prompt once and every choice's completion tokens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from api.logprobs import TokenText, chat_logprobs, completion_logprobs
from api.service import Assembler, Prepared, TextDelta
from api.state import GatewayState
from router.plan import Plan
from splitmind.protocol import TokenDelta, TokenLogprob

_json = msgspec.json.Encoder()  # a stream's chunks, straight to bytes (api/sse.py frames them)


@dataclass
class Choice:
    index: int
    asm: Assembler
    token_ids: list[int] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    text_offset: int = 0  # completions: where the next token's text starts (logprobs' text_offset)
    finish: str | None = None
    last_token_at: float | None = None


class Response:
    def __init__(self, st: GatewayState, plan: Plan, prepared: Prepared, model: str, t0: float, *,
                 return_token_ids: bool = False, include_usage: bool = False, continuous_usage: bool = False) -> None:
        self.st = st
        self.include_usage = include_usage  # streams: a last chunk with usage, `usage: null` before it
        self.continuous_usage = continuous_usage  # streams: usage so far in every chunk (vLLM's extension)
        self.plan = plan
        self.prepared = prepared
        self.model = model
        self.t0 = t0
        self.return_token_ids = return_token_ids
        self.created = int(time.time())
        self.choices = [Choice(i, Assembler(st.frontend, prepared)) for i in range(prepared.n)]
        self.token_text = TokenText(st.frontend.tokenizer)
        self.first_token_seen = False
        self.ttft_s: float | None = None
        self.hidden = prepared.hidden
        self.progress_at = time.monotonic()  # when the client last heard of hidden thinking
        self.progress_tokens = 0
        self.decode_first_observed = False
        self.phases_observed: set[str] = set()
        self.is_chat = prepared.kind == "chat"
        self.id = ("chatcmpl-" if self.is_chat else "cmpl-") + plan.request_id
        self.object = "chat.completion.chunk" if self.is_chat else "text_completion"

    @property
    def wants_logprobs(self) -> bool:
        return self.prepared.sampling.logprobs is not None

    def feed(self, index: int, delta: TokenDelta) -> list[TextDelta]:
        """Text segments of choice `index` from its next delta; sets its `finish` when it ends."""
        choice = self.choices[index]
        self._observe(choice, delta)
        choice.token_ids += delta.token_ids
        segments, choice.finish = choice.asm.feed(delta)
        for seg in segments:
            choice.reasoning.append(seg.reasoning)
            choice.content.append(seg.content)
            choice.logprobs += seg.logprobs
        return segments

    def _observe(self, choice: Choice, delta: TokenDelta) -> None:
        now = time.perf_counter()
        n = len(delta.token_ids)
        if n == 0:
            return
        m = self.st.metrics
        if not self.first_token_seen:
            self.first_token_seen = True
            self.ttft_s = now - self.t0
            m.ttft.observe(self.ttft_s)
            if self.plan.timings.prefill_s is not None:
                m.prefill.observe(self.plan.timings.prefill_s)
        if choice.last_token_at is not None:
            gap = (now - choice.last_token_at) / n
            for _ in range(n):
                m.itl.observe(gap)
        if self.plan.timings.decode_first_s is not None and not self.decode_first_observed:
            m.decode_first.observe(self.plan.timings.decode_first_s)
            self.decode_first_observed = True
        if len(self.phases_observed) < len(self.plan.timings.phases):
            for phase, seconds in self.plan.timings.phases.items():
                if phase not in self.phases_observed:
                    m.ttft_phase.labels(phase).observe(seconds)
                    self.phases_observed.add(phase)
        choice.last_token_at = now
        m.generation_tokens.inc(n)

    def hidden_progress(self, interval_s: float = 1.0) -> bool:
        """Whether to tell a streaming client that hidden thinking goes on: its reasoning grew
        and the last word was `interval_s` ago, or this is its first reasoning (a client shows
        "thinking" at once, not a second in, when a short thought may be over). Keeps proxies
        and clients from timing out while nothing visible is produced (vLLM issue 47647 asks
        for this)."""
        if not self.hidden:
            return False
        tokens = sum(c.asm.num_reasoning_tokens for c in self.choices)
        now = time.monotonic()
        if tokens == self.progress_tokens or (self.progress_tokens and now - self.progress_at < interval_s):
            return False
        self.progress_tokens, self.progress_at = tokens, now
        return True

    def finish(self) -> None:
        self.st.metrics.e2e.observe(time.perf_counter() - self.t0)
        for sample in self.plan.samples:
            for reason in sample.forced_endings:
                self.st.metrics.forced_endings.labels(reason).inc()
        self.st.metrics.reasoning_tokens.inc(sum(c.asm.num_reasoning_tokens for c in self.choices))

    def usage(self) -> dict[str, Any]:
        n_prompt = len(self.prepared.prompt_token_ids)
        n_out = sum(c.asm.num_completion_tokens for c in self.choices)
        reasoning = sum(c.asm.num_reasoning_tokens for c in self.choices)
        details: dict[str, int] = {"reasoning_tokens": reasoning}
        if self.prepared.early_exit is not None:  # extension: what long2short's probes cost, apart
            details["probe_tokens"] = sum(s.prober.probe_tokens for s in self.plan.samples if s.prober is not None)
        return {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out,
                "completion_tokens_details": details}

    def _logprobs(self, choice: Choice, entries: list[TokenLogprob]) -> dict[str, Any] | None:
        if not self.wants_logprobs:
            return None
        if self.is_chat:
            return chat_logprobs(entries, self.token_text)
        out, choice.text_offset = completion_logprobs(entries, self.token_text, choice.text_offset)
        return out

    def body(self) -> dict[str, Any]:
        """The whole response, once every choice has finished."""
        choices = []
        for c in self.choices:
            content = "".join(c.content)
            if self.is_chat:
                r = "".join(c.reasoning) if self.st.frontend.is_reasoning_model else None
                message = {"role": "assistant", "content": content, "reasoning_content": r or None,
                           "reasoning": r or None}
                choice: dict[str, Any] = {"index": c.index, "message": message,
                                          "logprobs": self._logprobs(c, c.logprobs), "finish_reason": c.finish}
            else:
                choice = {"index": c.index, "text": content, "logprobs": self._logprobs(c, c.logprobs),
                          "finish_reason": c.finish}
            if self.return_token_ids:
                choice["token_ids"] = c.token_ids
                choice["prompt_token_ids"] = self.prepared.prompt_token_ids
            choices.append(choice)
        return {"id": self.id, "object": "chat.completion" if self.is_chat else "text_completion",
                "created": self.created, "model": self.model, "choices": choices, "usage": self.usage(),
                "splitmind": self.report()}

    def report(self) -> dict[str, Any]:
        """splitmind's extension field: the workers that served, after any retry or migration
        (the `x-splitmind-*` headers of a stream can only name the ones chosen at the start), and
        the fallbacks taken."""
        return {"served_by": self.plan.served_by(), "fallbacks": self.plan.fallbacks()}

    def chunk(self, index: int, text: TextDelta | None, finish: str | None, *, first: bool = False) -> bytes:
        choice_state = self.choices[index]
        if self.is_chat:
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
                delta["content"] = ""
            if text is not None and text.reasoning:
                delta["reasoning_content"] = text.reasoning
                delta["reasoning"] = text.reasoning
            if text is not None and text.content:
                delta["content"] = text.content
            choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text.content if text else "", "finish_reason": finish}
        choice["logprobs"] = self._logprobs(choice_state, text.logprobs) if text is not None and text.logprobs else None
        body: dict[str, Any] = {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                                "choices": [choice]}
        if self.continuous_usage:
            body["usage"] = self.usage()
        elif self.include_usage:
            body["usage"] = None
        return _json.encode(body)

    def usage_chunk(self, final: bool = False) -> bytes:
        body: dict[str, Any] = {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                                "choices": [], "usage": self.usage()}
        if final:
            body["splitmind"] = self.report()
        return _json.encode(body)

    def served_comment(self) -> str:
        """The same report as an SSE comment, which every client skips: sent at the end of every
        stream, usage asked for or not."""
        served = self.plan.served_by()
        return (f"served-by prefill={','.join(served['prefill']) or 'none'} decode={','.join(served['decode'])}"
                + (f" fallbacks={','.join(self.plan.fallbacks())}" if self.plan.fallbacks() else ""))
