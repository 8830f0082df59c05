"""Where one request's time went before its first tokens, filled in as it runs (metrics, benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass, field

from splitmind.protocol import EngineTimings


@dataclass
class PhaseTimings:
    """Seconds spent in each phase, filled in as the request runs (for metrics and benchmarks)."""

    prefill_s: float | None = None  # prefill request sent -> first token back
    decode_first_s: float | None = None  # decode request sent -> its first token (KV pull included)
    decode_sent_at: float = 0.0  # perf_counter when the decode request went out
    decode_pulls_kv: bool = False  # the first decode request receives the prompt's KV
    # Inside the engines (EngineTimings, measured by vLLM): the queue and the prefill of the node
    # that computed the first token, the decode node's wait for the KV and its first step.
    phases: dict[str, float] = field(default_factory=dict)

    def record_engine(self, timings: EngineTimings | None, *, received_kv: bool) -> None:
        if timings is None:
            return
        first, second = ("kv_transfer", "first_decode_step") if received_kv else ("queue", "prefill")
        if first not in self.phases:
            self.phases[first], self.phases[second] = timings.wait_s, timings.first_step_s
