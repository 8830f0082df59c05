"""Engine counters fed by a vLLM stat logger, read by the node's stats publisher.

vLLM calls `record()` on the engine's output-handler task after every engine step that has
stats; this object only accumulates, so reading it from the publisher task needs no lock (one
event loop).
"""

from __future__ import annotations

from typing import Any

from kv_transfer.stats import read_connector_stats
from splitmind.protocol import EngineTimings, HistogramState

KV_TRANSFER_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]


class EngineCounters:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Back to zero: after the warm-up request, which no client sent."""
        self.kv_usage = 0.0
        self.remote_kv_tokens_total = 0
        self.kv_transfers_total = 0
        self.kv_transfer_bytes_total = 0
        self.kv_transfer_failures_total: dict[str, int] = {}
        self.kv_transfer_seconds = HistogramState(
            bounds=[*KV_TRANSFER_BUCKETS_S, float("inf")], counts=[0] * (len(KV_TRANSFER_BUCKETS_S) + 1)
        )
        self.spec_draft_tokens_total = 0
        self.spec_accepted_tokens_total = 0
        self.prompt_tokens_total = 0
        self.prompt_tokens_computed_total = 0  # prefilled here: neither cached nor received
        self.prompt_tokens_local_cache_total = 0  # served by this engine's prefix cache
        self.generation_tokens_total = 0
        self.requests_total = 0  # engine requests started (counted by the node runtime)
        self.refreshes_pending = 0  # kv_refresh.py requests whose one token is not traffic

    def record(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        if scheduler_stats is not None:
            self.kv_usage = float(scheduler_stats.kv_cache_usage)
            connector_cache = scheduler_stats.connector_prefix_cache_stats
            if connector_cache is not None:
                # Tokens the connector supplied instead of the engine computing them.
                self.remote_kv_tokens_total += int(connector_cache.hits)
            spec = scheduler_stats.spec_decoding_stats
            if spec is not None:
                self.spec_draft_tokens_total += int(spec.num_draft_tokens)
                self.spec_accepted_tokens_total += int(spec.num_accepted_tokens)
            transfers = read_connector_stats(scheduler_stats.kv_connector_stats)
            for seconds in transfers.durations_s:
                self.kv_transfer_seconds.observe(seconds)
            self.kv_transfers_total += len(transfers.durations_s)
            self.kv_transfer_bytes_total += transfers.num_bytes
            for kind, n in transfers.failures.items():
                self.kv_transfer_failures_total[kind] = self.kv_transfer_failures_total.get(kind, 0) + n
        if iteration_stats is not None:
            prompt_tokens = int(getattr(iteration_stats, "num_prompt_tokens", 0))
            generated = int(getattr(iteration_stats, "num_generation_tokens", 0))
            # A KV refresh (kv_refresh.py) is one prompt token and one generated token, computed:
            # the engine's step, not a client's traffic.
            refresh = 1 if self.refreshes_pending and prompt_tokens >= 1 and generated >= 1 else 0
            self.refreshes_pending -= refresh
            self.prompt_tokens_total += prompt_tokens - refresh
            self.generation_tokens_total += generated - refresh
            prompt = getattr(iteration_stats, "prompt_token_stats", None)
            if prompt is not None:
                self.prompt_tokens_computed_total += int(prompt.computed) - refresh
                self.prompt_tokens_local_cache_total += int(prompt.local_cache_hit)


def stat_logger_factory(counters: EngineCounters) -> Any:
    """A vLLM `StatLoggerFactory` whose loggers write into `counters`."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _CountersLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.counters = counters

        def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                   engine_idx: int = 0) -> None:
            self.counters.record(scheduler_stats, iteration_stats)

        def log_engine_initialized(self) -> None:
            pass

    return _CountersLogger


def engine_timings(output: Any) -> EngineTimings | None:
    """A request's engine timings from its first `RequestOutput` (vLLM's `RequestStateStats`
    in `metrics`, kept when the engine logs stats; engine-core timestamps). None when a
    timestamp is missing, as for an output that did not come from a scheduled step."""
    stats = getattr(output, "metrics", None)
    queued = getattr(stats, "queued_ts", 0.0)
    scheduled = getattr(stats, "scheduled_ts", 0.0)
    first = getattr(stats, "first_token_ts", 0.0)
    if not (0.0 < queued <= scheduled <= first):
        return None
    return EngineTimings(wait_s=scheduled - queued, first_step_s=first - scheduled)
