"""The shapes every routing plugin shares.

A `WorkerView` is a snapshot taken for one decision: load as this gateway knows it (its own open
streams, fresher than any heartbeat) merged with what the node last reported (every gateway's
requests, half a second old) by taking the larger of the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import msgspec

from splitmind.protocol import Role

PREFIX_BLOCK_TOKENS = 16  # vLLM's default KV block: prefix caching matches whole blocks


class WorkerView(msgspec.Struct, frozen=True):
    worker_id: str
    role: Role
    requests: int = 0  # running + waiting
    waiting: int = 0  # queued on the node, not yet running
    tokens_in_flight: int = 0  # prompt + generated tokens of the requests open there
    kv_usage: float = 0.0  # 0-1
    prefix_caching: bool = False  # the node's engine keeps prompts' KV for later requests


class RouteRequest:
    """What a routing decision may look at. Block hashes are computed once, on first use."""

    def __init__(self, request_id: str, prompt_token_ids: Sequence[int], n: int = 1) -> None:
        self.request_id = request_id
        self.prompt_token_ids = prompt_token_ids
        self.num_prompt_tokens = len(prompt_token_ids)
        self.n = n

    @cached_property
    def block_hashes(self) -> list[int]:
        """Chained hashes of the prompt's full blocks: block i's hash covers blocks 0..i, as
        vLLM's prefix cache keys them, so equal hashes mean an equal prefix."""
        out: list[int] = []
        h = 0
        # zip over one iterator, PREFIX_BLOCK_TOKENS times: the prompt's full blocks as tuples (a
        # partial last block is left out, as vLLM leaves it out of its prefix cache)
        for block in zip(*[iter(self.prompt_token_ids)] * PREFIX_BLOCK_TOKENS, strict=False):
            h = hash((h, block))
            out.append(h)
        return out


class Filter(Protocol):
    name: str

    def filter(self, req: RouteRequest, workers: Sequence[WorkerView]) -> list[WorkerView]: ...


class Scorer(Protocol):
    name: str

    def score(self, req: RouteRequest, workers: Sequence[WorkerView]) -> dict[str, float]:
        """A score in [0, 1] per worker id; higher is better."""
        ...


class Picker(Protocol):
    name: str
    uses_scores: bool  # False: the scorers' output is ignored, `totals` is empty, the reason is the picker

    def pick(self, req: RouteRequest, workers: Sequence[WorkerView], totals: dict[str, float]) -> WorkerView: ...


class Recorder(Protocol):
    """A plugin that learns from the decisions made (the prefix index)."""

    def record(self, req: RouteRequest, worker_id: str) -> None: ...


@dataclass(frozen=True)
class WeightedScorer:
    scorer: Scorer
    weight: float = 1.0


@dataclass(frozen=True)
class Decision:
    """The worker picked (None: every worker was filtered out) and why, for the decision counter."""

    worker: WorkerView | None
    reason: str
