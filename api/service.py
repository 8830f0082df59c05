"""From a validated OpenAI request to token ids, and from token deltas back to text.

Chat responses split reasoning from answer; completions return the raw text (think markers
included), as vLLM and OpenAI's completions do. Stop strings apply to the *answer* of a chat
response: a reasoning model's thinking routinely contains the blank lines and phrases clients
use as stops, and cutting the thinking would lose the answer. For completions they apply to the
whole text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from api.detokenize import StopMatcher, TextStream
from api.reasoning import ReasoningSplitter
from api.schemas import ChatCompletionRequest, CompletionRequest
from api.tokenization import ModelFrontend
from splitmind.errors import ContextLengthError, InvalidRequestError
from splitmind.protocol import FinishReason, Sampling, TokenDelta

FINISH_NAMES = {FinishReason.STOP: "stop", FinishReason.LENGTH: "length", FinishReason.ABORT: "abort"}


@dataclass(frozen=True)
class Prepared:
    kind: str  # "chat" | "completion"
    prompt_token_ids: list[int]
    sampling: Sampling
    stops: list[str]
    starts_in_reasoning: bool


def prepare_chat(req: ChatCompletionRequest, fe: ModelFrontend, max_model_len: int) -> Prepared:
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
    text = fe.render_chat(messages, req.chat_template_kwargs or {})
    ids = fe.encode(text)
    sampling = _sampling(req, fe, len(ids), req.requested_max_tokens(), max_model_len)
    return Prepared("chat", ids, sampling, req.stop_list(), fe.prompt_opens_reasoning(ids))


def prepare_completion(req: CompletionRequest, fe: ModelFrontend, max_model_len: int) -> Prepared:
    p = req.prompt
    if isinstance(p, list) and p and isinstance(p[0], int):
        ids = [int(t) for t in p]
        vocab = fe.tokenizer.get_vocab_size()
        if any(t < 0 or t >= vocab for t in ids):
            raise InvalidRequestError(f"prompt token ids must be in [0, {vocab})", param="prompt")
    else:
        text = p if isinstance(p, str) else str(p[0])
        ids = fe.encode(text)
    if not ids:
        raise InvalidRequestError("prompt must not be empty", param="prompt")
    sampling = _sampling(req, fe, len(ids), req.requested_max_tokens(), max_model_len)
    return Prepared("completion", ids, sampling, req.stop_list(), fe.prompt_opens_reasoning(ids))


def _sampling(req: ChatCompletionRequest | CompletionRequest, fe: ModelFrontend, num_prompt: int,
              max_tokens: int | None, max_model_len: int) -> Sampling:
    if num_prompt >= max_model_len:
        raise ContextLengthError(
            f"This model's maximum context length is {max_model_len} tokens; the prompt has {num_prompt}.",
            param="messages" if isinstance(req, ChatCompletionRequest) else "prompt")
    room = max_model_len - num_prompt
    if max_tokens is None:
        max_tokens = room
    elif max_tokens > room:
        raise ContextLengthError(
            f"This model's maximum context length is {max_model_len} tokens; the prompt has {num_prompt} and "
            f"max_tokens asks for {max_tokens} more.", param="max_tokens")
    stop_ids = sorted(set(fe.stop_token_ids) | set(req.stop_token_ids or []))
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
    )


@dataclass
class TextDelta:
    reasoning: str = ""
    content: str = ""


@dataclass
class Assembler:
    """Token deltas in, text deltas out; counts tokens for `usage`."""

    fe: ModelFrontend
    prepared: Prepared
    splitter: ReasoningSplitter = field(init=False)
    reasoning_text: TextStream = field(init=False)
    content_text: TextStream = field(init=False)
    stop: StopMatcher = field(init=False)
    num_completion_tokens: int = 0

    def __post_init__(self) -> None:
        self.splitter = ReasoningSplitter(self.fe.think_start_id, self.fe.think_end_id,
                                          self.prepared.starts_in_reasoning)
        self.reasoning_text = TextStream(self.fe.tokenizer)
        self.content_text = TextStream(self.fe.tokenizer)
        self.stop = StopMatcher(self.prepared.stops)

    @property
    def num_reasoning_tokens(self) -> int:
        return self.splitter.num_reasoning_tokens

    def feed(self, delta: TokenDelta) -> tuple[list[TextDelta], str | None]:
        """Text segments in generation order, each all reasoning or all answer, and the finish
        reason once the request is done. A delta that crosses `</think>` yields two segments, so
        a streamed chunk never mixes reasoning with answer."""
        segments: list[TextDelta] = []
        self.num_completion_tokens += len(delta.token_ids)
        pieces = self.splitter.feed(delta.token_ids)
        if self.prepared.kind == "completion":
            # Raw text: markers included, so decode the ids as they came.
            segments.append(TextDelta(content=self.stop.feed(self.content_text.step(delta.token_ids))))
        else:
            for piece in pieces:
                if piece.is_reasoning:
                    segments.append(TextDelta(reasoning=self.reasoning_text.step(piece.token_ids)))
                else:
                    segments.append(TextDelta(content=self.stop.feed(self.content_text.step(piece.token_ids))))
        finish = None
        if self.stop.stopped:
            finish = "stop"
        elif delta.finish_reason is not None:
            segments.append(TextDelta(content=self.stop.flush()))
            finish = FINISH_NAMES[delta.finish_reason]
        return [seg for seg in segments if seg.reasoning or seg.content], finish
