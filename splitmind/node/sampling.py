"""Wire `Sampling` -> vLLM `SamplingParams` (token in, token out)."""

from __future__ import annotations

from typing import Any

from splitmind.protocol import Sampling


def to_sampling_params(s: Sampling, *, max_tokens: int, kv_transfer_params: dict[str, Any] | None) -> Any:
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    extra = {"kv_transfer_params": kv_transfer_params} if kv_transfer_params is not None else None
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        min_p=s.min_p,
        seed=s.seed,
        presence_penalty=s.presence_penalty,
        frequency_penalty=s.frequency_penalty,
        repetition_penalty=s.repetition_penalty,
        stop_token_ids=list(s.stop_token_ids),
        ignore_eos=s.ignore_eos,
        detokenize=False,  # the gateway detokenizes
        output_kind=RequestOutputKind.DELTA,
        extra_args=extra,
    )
