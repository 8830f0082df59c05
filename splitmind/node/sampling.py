"""Wire `Sampling` -> vLLM `SamplingParams` (token in, token out), and vLLM's sample logprobs
-> wire `TokenLogprob`s."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from splitmind.protocol import Sampling, TokenLogprob

# What a -inf log-probability becomes on the wire (JSON has no infinities); vLLM's OpenAI server
# uses the same floor.
LOGPROB_FLOOR = -9999.0


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
        logprobs=s.logprobs,
        logit_bias=dict(s.logit_bias) or None,
        detokenize=False,  # the gateway detokenizes
        output_kind=RequestOutputKind.DELTA,
        extra_args=extra,
    )


def token_logprobs(token_ids: Sequence[int], positions: Sequence[Any] | None, num_top: int) -> list[TokenLogprob]:
    """One `TokenLogprob` per generated token. vLLM gives, per position, a dict of token id ->
    `Logprob(logprob, rank)` holding the sampled token and the `num_top` most likely."""
    out = []
    for i, token_id in enumerate(token_ids):
        entries = (positions[i] if positions is not None and i < len(positions) else None) or {}
        sampled = entries.get(token_id)
        top = sorted((lp.rank, tid, lp.logprob) for tid, lp in entries.items()
                     if lp.rank is not None and lp.rank <= num_top)
        out.append(TokenLogprob(token_id, _finite(sampled.logprob if sampled is not None else -math.inf),
                                [tid for _, tid, _ in top], [_finite(lp) for *_, lp in top]))
    return out


def _finite(logprob: float) -> float:
    return max(LOGPROB_FLOOR, logprob) if not math.isnan(logprob) else LOGPROB_FLOOR
