"""Decode role: with `kv_transfer` set, take the prompt's KV from prefill (pulled over NIXL, or
pushed over ZMQ ahead of the request) and continue from the
token prefill produced (it is the last prompt token here, so it is not computed twice by the
gateway's reckoning: decode computes its KV once and samples the next token); without it,
prefill locally (colocated).
"""

from __future__ import annotations

from typing import Any

from splitmind.node.sampling import to_sampling_params
from splitmind.protocol import GenerateRequest, Role, kv_params_to_vllm


class DecodeHandler:
    role = Role.DECODE

    def sampling_params(self, req: GenerateRequest) -> Any:
        kv = None
        if req.kv_transfer is not None:
            kv = kv_params_to_vllm(req.kv_transfer, do_remote_prefill=True, do_remote_decode=False)
        return to_sampling_params(req.sampling, max_tokens=req.sampling.max_tokens, kv_transfer_params=kv)
