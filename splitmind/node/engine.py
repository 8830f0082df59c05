"""Build a node's vLLM `AsyncLLM` from its `NodeSpec`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kv_transfer.nixl import nixl_kv_transfer_config
from kv_transfer.zmq.config import kv_address, zmq_kv_transfer_config
from splitmind.config import NodeSpec
from splitmind.node.counters import EngineCounters, stat_logger_factory
from splitmind.protocol import MAX_LOGPROBS, Role


def on_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def num_mtp_layers(model_dir: str) -> int:
    """MTP layers the checkpoint carries (MiMo, DeepSeek-V3 and Qwen3-Next name them so)."""
    path = Path(model_dir) / "config.json"
    if not path.exists():
        return 0
    return int(json.loads(path.read_text()).get("num_nextn_predict_layers") or 0)


def speculative_config(spec: NodeSpec) -> dict[str, Any] | None:
    """MTP speculative decoding, on both roles.

    Decode is where it pays. Prefill engines get the same method because the NIXL handshake
    refuses peers whose speculative configuration differs (its compatibility hash includes it).
    """
    layers = num_mtp_layers(spec.model)
    tokens = spec.engine.mtp_tokens
    if tokens is None:
        tokens = 1 if layers else 0
    if tokens == 0:
        return None
    if not layers:
        raise ValueError(f"engine.mtp_tokens={tokens} but {spec.model} has no MTP layers")
    return {"method": "mtp", "num_speculative_tokens": tokens}


def engine_kwargs(spec: NodeSpec, *, kv_transfer: bool = True) -> dict[str, Any]:
    """vLLM engine arguments for a node; without `kv_transfer`, the same engine with no KV
    connector (node-level tests drive it in-process)."""
    cfg = spec.engine
    gpu = on_gpu()
    dtype = cfg.dtype if cfg.dtype != "auto" else ("auto" if gpu else "float32")
    kv_device = cfg.kv_buffer_device if cfg.kv_buffer_device != "auto" else ("cuda" if gpu else "cpu")
    kwargs: dict[str, Any] = dict(
        model=spec.model,
        dtype=dtype,
        max_model_len=cfg.max_model_len,
        max_num_seqs=cfg.max_num_seqs,
        max_logprobs=MAX_LOGPROBS,
        enforce_eager=cfg.enforce_eager,
        enable_prefix_caching=cfg.enable_prefix_caching,
        disable_log_stats=False,  # our stat logger needs the stats
        speculative_config=speculative_config(spec),
    )
    if kv_transfer and cfg.kv_transport == "zmq":
        kwargs["kv_transfer_config"] = zmq_kv_transfer_config(kv_lease_s=cfg.kv_lease_s, bind=node_kv_address(spec),
                                                             keys_dir=spec.keys_dir)
    elif kv_transfer:
        kwargs["kv_transfer_config"] = nixl_kv_transfer_config(kv_buffer_device=kv_device, kv_lease_s=cfg.kv_lease_s)
    return kwargs


def node_kv_address(spec: NodeSpec) -> str | None:
    """Where a decode node on the ZMQ transport receives pushed KV (its KV port, `nixl_port`);
    the gateway names it in prefill requests. None for prefill nodes and on NIXL."""
    if spec.engine.kv_transport != "zmq" or spec.role != Role.DECODE:
        return None
    return kv_address(spec.nixl_host, spec.nixl_port)


def engine_args(spec: NodeSpec) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs(**engine_kwargs(spec))


def require_sampling_fix(spec: NodeSpec) -> None:
    """Refuse to serve MTP where sampling would be wrong: on vLLM's CPU build the rejection
    sampler needs splitmind's plugin (vLLM issue 55005), which vLLM loads in every engine process
    unless `VLLM_PLUGINS` leaves it out. This process loaded plugins as the engine's will."""
    from vllm.plugins import load_general_plugins

    from splitmind.node import cpu_expand_fix
    from splitmind.node.vllm_plugin import PLUGIN_NAME

    load_general_plugins()  # type: ignore[no-untyped-call]
    if speculative_config(spec) is None or cpu_expand_fix.status != "not_loaded":
        return
    if cpu_expand_fix.needed() is None:
        raise RuntimeError(
            f"MTP speculative decoding on this vLLM samples wrong tokens without splitmind's vLLM plugin "
            f"(vLLM issue 55005), and VLLM_PLUGINS={os.environ.get('VLLM_PLUGINS')!r} leaves it out: "
            f"add {PLUGIN_NAME}, or run with engine.mtp_tokens = 0")


def build_engine(spec: NodeSpec, counters: EngineCounters) -> Any:
    from vllm.v1.engine.async_llm import AsyncLLM

    args = engine_args(spec)
    require_sampling_fix(spec)
    return AsyncLLM.from_engine_args(args, stat_loggers=[stat_logger_factory(counters)])
