"""From a validated OpenAI request to token ids, and from token deltas back to text.

Chat responses split reasoning from answer; completions return the raw text (think markers
included), as vLLM and OpenAI's completions do. Stop strings apply to the *answer* of a chat
response: a reasoning model's thinking routinely contains the blank lines and phrases clients
use as stops, and cutting the thinking would lose the answer. For completions they apply to the
whole text.

Hidden reasoning (a request's `include_reasoning: false`, or the server's `reasoning = "hidden"`)
is dropped here, before any text is made of it: no field of any response can carry it, logprobs
included; only its token count remains. Earlier assistant turns are sent back without their
reasoning (`reasoning_content` is not templated; a think block in `content` is cut off), as
Qwen3's own template does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from api.detokenize import StopMatcher, TextStream
from api.long2short import early_exit_for
from api.sampling import Deployment, build_sampling
from api.schemas import ChatCompletionRequest, ChatMessage, CompletionRequest
from api.thinking import ThinkingChoice, resolve, thinking_limit
from api.tokenization import ModelFrontend
from router.early_exit import EarlyExit
from router.thinking import ThinkingLimit
from splitmind.errors import InvalidRequestError
from splitmind.protocol import FinishReason, Sampling, TokenDelta, TokenLogprob
from splitmind.reasoning import ReasoningSplitter

FINISH_NAMES = {FinishReason.STOP: "stop", FinishReason.LENGTH: "length", FinishReason.ABORT: "abort"}


@dataclass(frozen=True)
class Prepared:
    kind: str  # "chat" | "completion"
    prompt_token_ids: list[int]
    sampling: Sampling
    stops: list[str]
    starts_in_reasoning: bool
    n: int = 1  # choices: samples drawn from one prefill
    thinking: ThinkingLimit | None = None  # where the router ends the thinking
    hidden: bool = False  # the reasoning is counted, never shown
    early_exit: EarlyExit | None = None  # long2short: probe for a settled answer


def prepare_chat(req: ChatCompletionRequest, fe: ModelFrontend, dep: Deployment) -> Prepared:
    choice = resolve(req, fe, server_hidden=dep.hidden_reasoning)
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": _history_text(m, fe)}
                for m in req.messages]
    kwargs = dict(req.chat_template_kwargs or {})
    if choice.off:
        kwargs["enable_thinking"] = False
    text = _unicode(fe.render_chat(messages, kwargs), "messages")
    if choice.off:
        text = fe.close_thinking(text)
    ids = fe.encode(text)
    sampling = build_sampling(req, dep, num_prompt=len(ids), model_stop_ids=fe.stop_token_ids)
    starts = fe.prompt_opens_reasoning(ids)
    limit = thinking_limit(choice, fe, max_tokens=sampling.max_tokens, starts_in_reasoning=starts)
    return Prepared("chat", ids, sampling, req.stop_list(), starts, req.num_choices, limit, choice.hidden,
                    _early_exit(choice, fe, limit))


def _unicode(text: str, param: str) -> str:
    """JSON can carry lone surrogates (`"\\ud800"`), which the tokenizer refuses with a TypeError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(f"text is not valid Unicode: {exc.reason} at {exc.start}", param=param) from None
    return text


def _history_text(m: ChatMessage, fe: ModelFrontend) -> str:
    text = m.text()
    end = fe.profile.think_end
    if m.role == "assistant" and end in text:
        text = text.rsplit(end, 1)[1].lstrip("\n")
    return text


def prepare_completion(req: CompletionRequest, fe: ModelFrontend, dep: Deployment) -> Prepared:
    p = req.prompt
    if isinstance(p, list) and p and isinstance(p[0], int):
        ids = [int(t) for t in p]
        if any(t < 0 or t >= dep.vocab_size for t in ids):
            raise InvalidRequestError(f"prompt token ids must be in [0, {dep.vocab_size})", param="prompt")
    else:
        text = p if isinstance(p, str) else str(p[0])
        ids = fe.encode(_unicode(text, "prompt"))
    if not ids:
        raise InvalidRequestError("prompt must not be empty", param="prompt")
    choice = resolve(req, fe, server_hidden=dep.hidden_reasoning)
    sampling = build_sampling(req, dep, num_prompt=len(ids), model_stop_ids=fe.stop_token_ids)
    starts = fe.prompt_opens_reasoning(ids)
    limit = thinking_limit(choice, fe, max_tokens=sampling.max_tokens, starts_in_reasoning=starts)
    return Prepared("completion", ids, sampling, req.stop_list(), starts, req.num_choices, limit, choice.hidden,
                    _early_exit(choice, fe, limit))


def _early_exit(choice: ThinkingChoice, fe: ModelFrontend, limit: ThinkingLimit | None) -> EarlyExit | None:
    return early_exit_for(fe) if choice.early_exit and limit is not None else None


@dataclass
class TextDelta:
    reasoning: str = ""
    content: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)  # of the ids this text came from


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
        logprobs = delta.logprobs or []
        if self.prepared.kind == "completion" and not self.prepared.hidden:
            # Raw text: markers included, so decode the ids as they came.
            segments.append(TextDelta(content=self.stop.feed(self.content_text.step(delta.token_ids)),
                                      logprobs=logprobs))
        else:
            used = 0
            for piece in pieces:
                lps, used = logprobs[used:used + piece.num_ids], used + piece.num_ids
                if piece.is_reasoning:
                    if not self.prepared.hidden:
                        segments.append(TextDelta(reasoning=self.reasoning_text.step(piece.token_ids), logprobs=lps))
                else:
                    segments.append(TextDelta(content=self.stop.feed(self.content_text.step(piece.token_ids)),
                                              logprobs=lps))
        finish = None
        if self.stop.stopped:
            finish = "stop"
        elif delta.finish_reason is not None:
            segments.append(TextDelta(content=self.stop.flush()))
            finish = FINISH_NAMES[delta.finish_reason]
        return [seg for seg in segments if seg.reasoning or seg.content or seg.logprobs], finish
