"""Prefill role: run the prompt with max_tokens=1 and hand its KV to a decode node.

The reply's last `TokenDelta` carries the first token and `kv_transfer` (where the KV is). On
NIXL, vLLM's NixlConnector holds the blocks under a lease until a decode node pulls them; on
ZMQ, the request names the decode node (`push_to`) and the connector pushes each layer's KV there
as it is computed.
"""

from __future__ import annotations

from typing import Any

from kv_transfer.nixl import PREFILL_REQUEST_PARAMS
from splitmind.node.sampling import to_sampling_params
from splitmind.protocol import GenerateRequest, Role, kv_params_to_vllm


class PrefillHandler:
    role = Role.PREFILL

    def sampling_params(self, req: GenerateRequest) -> Any:
        kv: dict[str, Any] = dict(PREFILL_REQUEST_PARAMS)
        if req.kv_transfer is not None and req.kv_transfer.transport == "zmq":
            kv = kv_params_to_vllm(req.kv_transfer, do_remote_decode=True, do_remote_prefill=False)
        return to_sampling_params(req.sampling, max_tokens=1, kv_transfer_params=kv)
