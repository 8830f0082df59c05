"""The ZMQ connector's two halves without an engine: the real planner, workers and sockets, vLLM's
scheduler objects replaced by the few attributes the planner reads."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from kv_transfer.zmq.plan import Planner, ZmqMetadata
from kv_transfer.zmq.worker import ZmqWorker

BLOCK = 4  # tokens per block
NUM_BLOCKS = 16
LAYERS = ("model.layers.0.self_attn.attn", "model.layers.1.self_attn.attn", "model.layers.2.mtp.attn")


def caches(seed: int | None) -> dict[str, torch.Tensor]:
    """CPU-backend layout: [blocks, kv heads, block size, 2 * head dim]; random on a prefill
    engine, zeros on a decode engine."""
    gen = torch.Generator().manual_seed(seed or 0)
    return {name: (torch.rand(NUM_BLOCKS, 2, BLOCK, 8, generator=gen) if seed is not None
                   else torch.zeros(NUM_BLOCKS, 2, BLOCK, 8)) for name in LAYERS}


def worker(kv: dict[str, torch.Tensor], bind: str | None = None, *, timeout_s: float = 5.0,
           max_bytes: int = 1 << 30, lease_s: float = 30.0, keys_dir: str = "") -> ZmqWorker:
    w = ZmqWorker(NUM_BLOCKS, bind=bind, lease_s=lease_s, receive_timeout_s=timeout_s, max_staging_bytes=max_bytes,
                  keys_dir=keys_dir)
    w.register(kv)
    return w


def address(tmp: Path) -> str:
    return f"ipc://{tmp}/kv.sock"


def request(req_id: str, prompt: int, params: dict[str, Any]) -> Any:
    return SimpleNamespace(request_id=req_id, num_prompt_tokens=prompt, kv_transfer_params=params)


def new_step(req_id: str, block_ids: list[int], computed: int, scheduled: int) -> Any:
    """A scheduler output where `req_id` is scheduled for the first time."""
    return SimpleNamespace(
        scheduled_new_reqs=[SimpleNamespace(req_id=req_id, block_ids=(block_ids,), num_computed_tokens=computed)],
        scheduled_cached_reqs=SimpleNamespace(req_ids=[], new_block_ids=[], num_computed_tokens=[],
                                              resumed_req_ids=set()),
        num_scheduled_tokens={req_id: scheduled})


def next_step(req_id: str, new_blocks: list[int], computed: int, scheduled: int) -> Any:
    """A scheduler output where `req_id` goes on with its chunked prefill."""
    return SimpleNamespace(
        scheduled_new_reqs=[],
        scheduled_cached_reqs=SimpleNamespace(req_ids=[req_id], new_block_ids=[(new_blocks,)],
                                              num_computed_tokens=[computed], resumed_req_ids=set()),
        num_scheduled_tokens={req_id: scheduled})


def run_step(w: ZmqWorker, meta: ZmqMetadata, kv: dict[str, torch.Tensor]) -> None:
    """What a model runner does with the connector in one step: load, each layer's save, the
    step's end."""
    w.start_load(meta)
    for name in LAYERS:
        w.save_layer(meta, name, kv[name])
    w.wait_for_save(meta)


def finished_within(w: ZmqWorker, req_id: str, timeout_s: float = 5.0) -> float:
    """Step an idle decode worker (as vLLM steps an engine whose request waits for KV) until the
    load of `req_id` is reported; returns the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        w.start_load(ZmqMetadata())
        if req_id in w.take_finished():
            return time.monotonic() - t0
        time.sleep(0.005)
    raise AssertionError(f"load of {req_id} not reported within {timeout_s} s")


def blocks(block_ids: list[int]) -> Any:
    return SimpleNamespace(get_block_ids=lambda: (block_ids,))


def planner() -> Planner:
    return Planner(BLOCK, "engine-p")
