"""`ZmqPushConnector`: KV over plain TCP (pyzmq), for clusters without RDMA or where UCX misbehaves.

Prefill pushes each layer's blocks as soon as the layer is computed (`save_kv_layer`), to the
decode node the gateway named in the prefill request (`push_to`, `transfer_id`); the decode
engine holds what arrives (`kv_transfer.zmq.staging`) until its request comes and vLLM gives it
blocks, then copies it in. Against NIXL's pull after prefill, the transfer overlaps the
prefill's compute and needs no handshake, no UCX and no registered memory; the price is a copy
on the decode side (into the blocks) and KV held on the decode node before it is asked for.

Leases and aborts: frames go out of the KV cache itself (zero-copy), so a prefill request's
blocks are freed once ZMQ has sent them (or at the lease's end, if the decode node never takes
them). The decode node drops a transfer when its request ends without it (released by the
gateway, aborted), when the prefill was aborted (`Drop`), or at its lease's end; a decode
request whose KV does not all come within `receive_timeout_s` recomputes it (vLLM's
`kv_load_failure_policy = "recompute"`), so a lost push costs time, never a request.

Half of the class runs in the scheduler (`kv_transfer.zmq.plan`), half in the worker
(`kv_transfer.zmq.worker`); vLLM builds one instance per role.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)
from vllm.distributed.kv_transfer.kv_connector.v1.metrics import KVConnectorStats
from vllm.v1.metrics.cache_hit_source import CacheHitSource

from kv_transfer.zmq.plan import Planner, ZmqMetadata
from kv_transfer.zmq.stats import ZmqKVConnectorStats
from kv_transfer.zmq.worker import ZmqWorker

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.outputs import KVConnectorOutput
    from vllm.v1.request import Request


DEFAULT_MAX_STAGING_BYTES = 1 << 30
DEFAULT_RECEIVE_TIMEOUT_S = 10.0


class ZmqPushConnector(KVConnectorBase_V1):
    _cache_hit_source = CacheHitSource.P2P

    def __init__(self, vllm_config: VllmConfig, role: KVConnectorRole, kv_cache_config: KVCacheConfig) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        extra = self._kv_transfer_config.kv_connector_extra_config
        if vllm_config.parallel_config.tensor_parallel_size != 1:
            raise ValueError("the ZMQ KV transport supports tensor_parallel_size 1 only; use NIXL")
        self.planner: Planner | None = None
        self.worker: ZmqWorker | None = None
        if role == KVConnectorRole.SCHEDULER:
            self.planner = Planner(vllm_config.cache_config.block_size, str(self._kv_transfer_config.engine_id))
        else:
            self.worker = ZmqWorker(
                kv_cache_config.num_blocks, bind=extra.get("bind") or None,
                lease_s=float(extra.get("kv_lease_duration", 30)),
                receive_timeout_s=float(extra.get("receive_timeout_s", DEFAULT_RECEIVE_TIMEOUT_S)),
                max_staging_bytes=int(extra.get("max_staging_bytes", DEFAULT_MAX_STAGING_BYTES)),
                keys_dir=str(extra.get("keys_dir") or ""))

    def _meta(self) -> ZmqMetadata:
        meta = self._get_connector_metadata()
        assert isinstance(meta, ZmqMetadata)
        return meta

    # -- worker -------------------------------------------------------------------------------
    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        assert self.worker is not None
        self.worker.register(kv_caches)

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        assert self.worker is not None
        self.worker.start_load(self._meta())

    def wait_for_layer_load(self, layer_name: str) -> None:
        return  # loads complete between steps (asynchronous loads), never inside a forward

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any, **kwargs: Any) -> None:
        assert self.worker is not None
        self.worker.save_layer(self._meta(), layer_name, kv_layer)

    def wait_for_save(self) -> None:
        assert self.worker is not None
        self.worker.wait_for_save(self._meta())

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        assert self.worker is not None
        return self.worker.take_sent() or None, self.worker.take_finished() or None

    def get_block_ids_with_load_errors(self) -> set[int]:
        assert self.worker is not None
        return self.worker.take_load_errors()

    def get_kv_connector_stats(self) -> KVConnectorStats | None:
        if self.worker is None or self.worker.stats.is_empty():
            return None
        return self.worker.stats.clone_and_reset()

    @classmethod
    def build_kv_connector_stats(cls, data: dict[str, Any] | None = None) -> KVConnectorStats | None:
        return ZmqKVConnectorStats(data=data) if data is not None else ZmqKVConnectorStats()

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.close()

    # -- scheduler ----------------------------------------------------------------------------
    def on_new_request(self, request: Request) -> None:
        assert self.planner is not None
        self.planner.on_new_request(request)

    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int) -> tuple[int | None, bool]:
        assert self.planner is not None
        return self.planner.claim(request, num_computed_tokens)

    def update_state_after_alloc(self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int) -> None:
        assert self.planner is not None
        self.planner.allocated(request, blocks, num_external_tokens)

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        assert self.planner is not None
        return self.planner.build(scheduler_output)

    def update_connector_output(self, connector_output: KVConnectorOutput) -> None:
        assert self.planner is not None
        self.planner.loaded(connector_output.finished_recving)

    def request_finished(self, request: Request, block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        assert self.planner is not None
        return self.planner.finished(request)
