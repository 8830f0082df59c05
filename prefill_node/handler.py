"""Prefill role: run the prompt with max_tokens=1 and keep its KV for a remote decode.

The reply's last `TokenDelta` carries the first token and `kv_transfer` (where the KV lives);
vLLM's NixlConnector holds the blocks under a lease until a decode node pulls them.
"""

from __future__ import annotations

from typing import Any

from kv_transfer.nixl import PREFILL_REQUEST_PARAMS
from splitmind.node.sampling import to_sampling_params
from splitmind.protocol import GenerateRequest, Role


class PrefillHandler:
    role = Role.PREFILL

    def sampling_params(self, req: GenerateRequest) -> Any:
        return to_sampling_params(req.sampling, max_tokens=1, kv_transfer_params=dict(PREFILL_REQUEST_PARAMS))
