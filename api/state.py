"""What the gateway's handlers share: built once at startup, torn down at shutdown."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from api.metrics import GatewayMetrics
from api.tokenization import ModelFrontend
from router.breaker import Breaker
from router.orchestrator import Orchestrator
from router.registry import WorkerRegistry
from splitmind.config import GatewayConfig, GatewayTuning
from splitmind.curve import client_keys


@dataclass
class GatewayState:
    config: GatewayConfig
    frontend: ModelFrontend
    registry: WorkerRegistry
    orchestrator: Orchestrator
    metrics: GatewayMetrics
    prepare_pool: ThreadPoolExecutor  # chat templates and tokenization, off the event loop
    started_at: int = field(default_factory=lambda: int(time.time()))

    @property
    def served_model_name(self) -> str:
        return self.config.served_model_name

    @property
    def tuning(self) -> GatewayTuning:
        return self.config.tuning

    @classmethod
    def build(cls, config: GatewayConfig) -> GatewayState:
        t = config.tuning
        registry = WorkerRegistry(config.workers, t.heartbeat_timeout_s, client_keys(config.keys_dir),
                                  config.discover, t.resolve_interval_s,
                                  breaker=lambda: Breaker(t.breaker_failures, t.breaker_cooldown_s))
        metrics = GatewayMetrics(registry)
        registry.on_output_wait = metrics.output_wait.observe  # before start(): the workers join with it
        orchestrator = Orchestrator(registry, config.tuning,
                                    on_fallback=lambda reason: metrics.fallbacks.labels(reason).inc(),
                                    on_decision=metrics.decided, observe=metrics.plugin_ran,
                                    on_probe=metrics.probed)
        return cls(config=config, frontend=ModelFrontend(config.model, config.reasoning_profile), registry=registry,
                   orchestrator=orchestrator, metrics=metrics,
                   prepare_pool=ThreadPoolExecutor(config.tuning.prepare_threads, thread_name_prefix="prepare"))
