"""An OpenAI request's sampling fields -> the wire `Sampling`, checked against the deployment.

Every parameter is honoured or refused with a 400 that names it; none is dropped. The schema
(`api/schemas.py`) checks what holds everywhere; this module checks what depends on the served
model and the engines: the vocabulary, the context length, and speculative decoding. vLLM's
sampler leaves out the `min_p` and `logit_bias` processors when speculative decoding is on
(`vllm/v1/sample/logits_processor/__init__.py`), so on an MTP deployment they would be silently
ignored; they are refused instead, before any state is created.
"""

from __future__ import annotations

from dataclasses import dataclass

from api.schemas import ChatCompletionRequest, CompletionRequest
from splitmind.errors import ContextLengthError, InvalidRequestError
from splitmind.protocol import Sampling

Request = ChatCompletionRequest | CompletionRequest


@dataclass(frozen=True)
class Deployment:
    """What the serving configuration can honour, as the gateway sees it now."""

    vocab_size: int  # the tokenizer's: valid token ids are below it
    max_model_len: int
    speculative: bool  # some worker runs speculative decoding (MTP)
    hidden_reasoning: bool = False  # the server never shows reasoning (`[gateway] reasoning = "hidden"`)


def build_sampling(req: Request, dep: Deployment, *, num_prompt: int, model_stop_ids: list[int]) -> Sampling:
    max_tokens = _max_tokens(req, dep, num_prompt)
    _check_vocab(req, dep)
    if dep.speculative:
        if req.min_p:
            raise InvalidRequestError(
                "min_p is not applied with speculative decoding (MTP), which this deployment runs; "
                "leave it out or use top_p / top_k", param="min_p")
        if req.logit_bias:
            raise InvalidRequestError(
                "logit_bias is not applied with speculative decoding (MTP), which this deployment runs",
                param="logit_bias")
    stop_ids = sorted(set(model_stop_ids) | set(req.stop_token_ids or []))
    return Sampling(
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=0 if req.top_k in (None, -1) else int(req.top_k),
        min_p=req.min_p or 0.0,
        seed=req.seed,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
        stop_token_ids=[] if req.ignore_eos else stop_ids,
        ignore_eos=req.ignore_eos,
        logprobs=req.num_logprobs(),
        logit_bias={int(k): float(v) for k, v in (req.logit_bias or {}).items()},
    )


def _max_tokens(req: Request, dep: Deployment, num_prompt: int) -> int:
    param = "messages" if isinstance(req, ChatCompletionRequest) else "prompt"
    if num_prompt >= dep.max_model_len:
        raise ContextLengthError(
            f"This model's maximum context length is {dep.max_model_len} tokens; the prompt has {num_prompt}.",
            param=param)
    room = dep.max_model_len - num_prompt
    asked = req.requested_max_tokens()
    if asked is None:
        return room
    if asked > room:
        raise ContextLengthError(
            f"This model's maximum context length is {dep.max_model_len} tokens; the prompt has {num_prompt} and "
            f"max_tokens asks for {asked} more.", param="max_tokens")
    return asked


def _check_vocab(req: Request, dep: Deployment) -> None:
    if req.top_k is not None and req.top_k > dep.vocab_size:
        raise InvalidRequestError(f"top_k must be at most the vocabulary size ({dep.vocab_size})", param="top_k")
    for name, ids in (("stop_token_ids", req.stop_token_ids or []), ("logit_bias", map(int, req.logit_bias or {}))):
        if any(not 0 <= t < dep.vocab_size for t in ids):
            raise InvalidRequestError(f"{name}: token ids must be in [0, {dep.vocab_size})", param=name)
