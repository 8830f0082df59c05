"""Prometheus metrics: the gateway's own, plus node counters re-exported from heartbeats.

Node metrics come from `NodeStats` (cumulative counters and one histogram), so a scrape of the
gateway shows the whole deployment without scraping every node.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from router.registry import WorkerRegistry
from splitmind.protocol import KV_FAILURE_KINDS

PLUGIN_BUCKETS_S = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2)
# Where first tokens and their phases fall (50 ms - 2.5 s), no bound more than 1.5x the one below:
# histogram_quantile interpolates within a bucket, and with 100-250-500 ms buckets a p50 of
# 140 ms read as 180 (bench/load_study.py). 1 and 5 s are the alerts' thresholds (deploy/k8s).
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
                     1.5, 2.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# How long output waits inside the gateway: a few hundred microseconds when its event loop has
# room, milliseconds as it saturates (bench/gateway_throughput.py).
WAIT_BUCKETS_S = (5e-5, 1e-4, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 1.5e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25,
                  1.0)


class GatewayMetrics:
    def __init__(self, registry: WorkerRegistry) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("splitmind_requests", "Requests routed, by route taken.", ["route"], registry=r)
        self.route_decisions = Counter("splitmind_route_decisions", "Routing decisions, with the reason.",
                                       ["route", "reason"], registry=r)
        self.router_decisions = Counter(
            "splitmind_router_decisions", "Routing decisions by pool (decode, prefill, pd: whether to disaggregate) "
            "and reason (router/policies/profile.py, router/policies/pd_decider.py).", ["pool", "reason"], registry=r)
        self.plugin_duration = Histogram("splitmind_router_plugin_duration_seconds",
                                         "Time one routing plugin took for one decision.", ["plugin"],
                                         buckets=PLUGIN_BUCKETS_S, registry=r)
        self.errors = Counter("splitmind_request_errors", "Requests that ended in an error, by HTTP status.",
                              ["status"], registry=r)
        self.fallbacks = Counter("splitmind_router_fallbacks", "Phases redone after a worker failed, by reason "
                                 "(prefill_retry: on another prefill node; prefill_local: on the decode node).",
                                 ["reason"], registry=r)
        self.aborts = Counter("splitmind_request_aborts", "Requests aborted before finishing, by reason.",
                              ["reason"], registry=r)
        self.rejections = Counter("splitmind_edge_rejections", "Requests the edge refused or failed before a route "
                                  "answered, by reason (unauthorized, body_too_large, rate_limited, internal_error).",
                                  ["reason"], registry=r)
        self.prompt_tokens = Counter("splitmind_prompt_tokens", "Prompt tokens received.", registry=r)
        self.generation_tokens = Counter("splitmind_generation_tokens", "Tokens generated.", registry=r)
        self.reasoning_tokens = Counter("splitmind_reasoning_tokens", "Generated tokens inside think blocks.",
                                        registry=r)
        self.forced_endings = Counter(
            "splitmind_reasoning_forced_endings", "Thinking ended by the gateway, by reason (budget, answer_reserve, "
            "early_exit).", ["reason"], registry=r)
        self.probes = Counter("splitmind_long2short_probes", "long2short early-exit probes, by outcome (answer, "
                              "unsure (an answer below probe_min_confidence), no_answer, failed, cancelled).",
                              ["outcome"], registry=r)
        self.probe_tokens = Counter("splitmind_long2short_probe_tokens", "Tokens long2short probes sent (the forced "
                                    "ending and answer prefix) and generated.", registry=r)

        def hist(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, buckets=LATENCY_BUCKETS_S, registry=r)

        self.ttft = hist("splitmind_ttft_seconds", "Request received -> first token sent.")
        self.itl = hist("splitmind_itl_seconds", "Time between streamed token chunks, per token.")
        self.output_wait = Histogram(
            "splitmind_output_wait_seconds", "Output read from a worker -> taken by its stream, per read (deltas "
            "that arrived meanwhile merge into it): the gateway's event loop queueing, which grows as the gateway "
            "saturates, or a reader still sending to a client slower than the tokens.", buckets=WAIT_BUCKETS_S,
            registry=r)
        self.e2e = hist("splitmind_e2e_seconds", "Request received -> last token sent.")
        self.tokenize = hist("splitmind_tokenize_seconds", "Chat template and tokenization.")
        self.prefill = hist("splitmind_prefill_seconds", "Prefill request sent -> first token back (remote prefill).")
        self.decode_first = hist("splitmind_decode_first_token_seconds",
                                 "Decode request sent -> first decode token (includes the KV pull).")
        self.ttft_phase = Histogram(
            "splitmind_ttft_phase_seconds", "Time inside the engines before a request's tokens, by phase (vLLM's "
            "request stats): queue and prefill on the node that computed the first token; kv_transfer (the decode "
            "node's wait for the prompt's KV) and first_decode_step on a disaggregated request's decode node, "
            "which delay its second token.", ["phase"], buckets=LATENCY_BUCKETS_S, registry=r)
        r.register(NodeCollector(registry))

    def probed(self, outcome: str, tokens: int) -> None:
        self.probes.labels(outcome).inc()
        self.probe_tokens.inc(tokens)

    def decided(self, pool: str, reason: str) -> None:
        self.router_decisions.labels(pool, reason).inc()

    def plugin_ran(self, plugin: str, seconds: float) -> None:
        self.plugin_duration.labels(plugin).observe(seconds)


class NodeCollector(Collector):
    def __init__(self, registry: WorkerRegistry) -> None:
        self.workers = registry

    def collect(self) -> Iterator[Metric]:
        labels = ["worker", "role"]
        healthy = GaugeMetricFamily("splitmind_worker_healthy", "1 if the worker is healthy.", labels=labels)
        running = GaugeMetricFamily("splitmind_worker_running_requests", "Requests running.", labels=labels)
        waiting = GaugeMetricFamily("splitmind_worker_waiting_requests", "Requests waiting.", labels=labels)
        kv_usage = GaugeMetricFamily("splitmind_worker_kv_usage_ratio", "KV cache in use (0-1).", labels=labels)
        remote_kv = CounterMetricFamily("splitmind_decode_remote_kv_tokens",
                                        "Prompt tokens whose KV a decode node received instead of computing.",
                                        labels=labels)
        transfers = CounterMetricFamily("splitmind_kv_transfers", "KV transfers completed.", labels=labels)
        transfer_bytes = CounterMetricFamily("splitmind_kv_transfer_bytes", "KV bytes transferred.", labels=labels)
        transfer_failures = CounterMetricFamily(
            "splitmind_kv_transfer_failures", "KV transfer failures a node reported, by kind: transfer (a KV read "
            "failed; on ZMQ, a push that broke off or never completed), "
            "handshake (no metadata from the peer), notification (a 'done' to the prefill side failed), expired "
            "(prefill KV whose lease ran out before anyone pulled it).", labels=[*labels, "kind"])
        drafts = CounterMetricFamily("splitmind_spec_draft_tokens", "Speculative draft tokens proposed.",
                                     labels=labels)
        accepted = CounterMetricFamily("splitmind_spec_accepted_tokens", "Speculative draft tokens accepted.",
                                       labels=labels)
        node_requests = CounterMetricFamily("splitmind_node_requests", "Engine requests a node started.",
                                            labels=labels)
        node_prompt = CounterMetricFamily(
            "splitmind_node_prompt_tokens",
            "Prompt tokens of a node's engine requests, by source: computed there, its prefix cache, or received.",
            labels=[*labels, "source"])
        kv_releases = CounterMetricFamily(
            "splitmind_node_kv_releases", "Prefill KV nobody would pull, released through this decode node at once "
            "(the client left before decode, or the first token was the last).", labels=labels)
        restarts = CounterMetricFamily("splitmind_worker_restarts", "Times `splitmind up` restarted the node.",
                                       labels=labels)
        circuit_open = GaugeMetricFamily("splitmind_worker_circuit_open",
                                         "1 while the worker's circuit breaker keeps requests away (open or probing).",
                                         labels=labels)
        trips = CounterMetricFamily("splitmind_worker_circuit_trips", "Times the worker's circuit breaker opened.",
                                    labels=labels)
        transfer_s = HistogramMetricFamily("splitmind_kv_transfer_seconds",
                                           "A decode request's wait for its prompt's KV (the connector's telemetry).",
                                           labels=labels)
        for w in self.workers.workers.values():
            lv = [w.worker_id, w.role.name.lower()]
            healthy.add_metric(lv, 1.0 if w.is_healthy(self.workers.heartbeat_timeout_s) else 0.0)
            circuit_open.add_metric(lv, 0.0 if w.breaker.state == "closed" else 1.0)
            trips.add_metric(lv, w.breaker.trips)
            s = w.stats
            if s is None:
                continue
            running.add_metric(lv, s.num_running)
            waiting.add_metric(lv, s.num_waiting)
            kv_usage.add_metric(lv, s.kv_usage)
            remote_kv.add_metric(lv, s.remote_kv_tokens_total)
            transfers.add_metric(lv, s.kv_transfers_total)
            transfer_bytes.add_metric(lv, s.kv_transfer_bytes_total)
            for kind in KV_FAILURE_KINDS:  # every kind, zeros included: rate() needs the series
                transfer_failures.add_metric([*lv, kind], s.kv_transfer_failures_total.get(kind, 0))
            drafts.add_metric(lv, s.spec_draft_tokens_total)
            accepted.add_metric(lv, s.spec_accepted_tokens_total)
            node_requests.add_metric(lv, s.requests_total)
            restarts.add_metric(lv, s.restarts)
            kv_releases.add_metric(lv, s.kv_releases_total)
            node_prompt.add_metric([*lv, "computed"], s.prompt_tokens_computed_total)
            node_prompt.add_metric([*lv, "local_cache"], s.prompt_tokens_local_cache_total)
            node_prompt.add_metric([*lv, "remote"], s.remote_kv_tokens_total)
            h = s.kv_transfer_seconds
            if h is not None:
                cumulative, buckets = 0, []
                for bound, count in zip(h.bounds, h.counts, strict=True):
                    cumulative += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                transfer_s.add_metric(lv, buckets, h.total)
        yield from (healthy, running, waiting, kv_usage, remote_kv, transfers, transfer_bytes, transfer_failures,
                    drafts, accepted, node_requests, node_prompt, kv_releases, restarts, circuit_open, trips,
                    transfer_s)
