"""OpenAI request schemas (pydantic, the HTTP edge only).

Unknown fields are rejected (400 naming the field), and known OpenAI fields that splitmind does
not implement are rejected too: a client should learn at once that `best_of` or `tools` did not
happen, not find out from the output. `user` and `metadata` are accepted and ignored (they
label a request; nothing is stored to label), and `store` only as false.
Checks that depend on the deployment (vocabulary, speculative decoding) are in `api/sampling.py`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from splitmind.errors import InvalidRequestError, UnsupportedParameterError
from splitmind.protocol import MAX_LOGPROBS

MAX_N = 64  # choices per request: GRPO groups and best-of-n use 4-64
MAX_LOGIT_BIAS_ENTRIES = 1024
# Documented maxima (README, "Limits"): every list and string a request carries is bounded, so
# that no field can make the gateway do unbounded work before the request is refused. The body
# itself is capped by `[gateway] max_body_bytes` and the prompt's text by `max_prompt_chars`.
MAX_MESSAGES = 4096
MAX_CONTENT_PARTS = 1024  # text parts of one message
MAX_STOP = 16  # stop strings
MAX_STOP_CHARS = 1024  # each
MAX_STOP_TOKEN_IDS = 1024
MAX_PROMPT_TOKEN_IDS = 1_048_576  # a token-id prompt; the context length refuses far fewer
MAX_NAME_CHARS = 256  # model, user
MAX_METADATA_ENTRIES, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS = 16, 64, 512  # as OpenAI's
MAX_TEMPLATE_KWARGS, MAX_TEMPLATE_VALUE_CHARS = 16, 256
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1  # int64, as vLLM and OpenAI clients send seeds
MAX_THINKING_BUDGET = 2**31 - 1


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    continuous_usage_stats: bool = False


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, reasoning_content of earlier turns, ...
    role: Literal["system", "developer", "user", "assistant"]
    content: str | Annotated[list[TextPart], Field(max_length=MAX_CONTENT_PARTS)] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class AnthropicThinking(BaseModel):
    """Anthropic's (and DeepSeek's) `thinking` object."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["enabled", "disabled"]
    budget_tokens: int | None = Field(default=None, ge=0, le=MAX_THINKING_BUDGET)


class OpenRouterReasoning(BaseModel):
    """OpenRouter's `reasoning` object (`effort` and `max_tokens` are exclusive, as there)."""

    model_config = ConfigDict(extra="forbid")
    effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    max_tokens: int | None = Field(default=None, ge=0, le=MAX_THINKING_BUDGET)
    exclude: bool | None = None
    enabled: bool | None = None
    long2short: Literal["off", "early_exit", "no_think"] | None = None  # splitmind's extension


class SamplingFields(BaseModel):
    """Fields shared by chat and completions."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=MAX_NAME_CHARS)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = Field(default=None, max_length=MAX_STOP_TOKEN_IDS)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=2.0)
    ignore_eos: bool = False
    return_token_ids: bool = False  # vLLM extension: prompt and output token ids in the response
    n: int | None = Field(default=None, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    metadata: dict[str, str] | None = Field(default=None, max_length=MAX_METADATA_ENTRIES)
    store: bool | None = None
    logit_bias: dict[str, float] | None = Field(default=None, max_length=MAX_LOGIT_BIAS_ENTRIES)
    # Reasoning controls, in each common dialect (`api/thinking.py` reconciles them).
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None  # OpenAI
    thinking_budget: int | None = Field(default=None, ge=0, le=MAX_THINKING_BUDGET)  # Qwen
    thinking_token_budget: int | None = Field(default=None, ge=0, le=MAX_THINKING_BUDGET)  # vLLM
    thinking: AnthropicThinking | None = None  # Anthropic, DeepSeek
    reasoning: OpenRouterReasoning | None = None  # OpenRouter
    include_reasoning: bool | None = None  # vLLM, OpenRouter: false hides the reasoning
    long2short: Literal["off", "early_exit", "no_think"] | None = None  # splitmind: api/long2short.py
    # Known OpenAI/vLLM fields splitmind does not implement: rejected with a 400.
    best_of: Any = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if any(len(s) > MAX_STOP_CHARS for s in ([v] if isinstance(v, str) else v or [])):
            raise ValueError(f"stop sequences must be at most {MAX_STOP_CHARS} characters")
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for key, value in (v or {}).items():
            if len(key) > MAX_METADATA_KEY_CHARS or len(value) > MAX_METADATA_VALUE_CHARS:
                raise ValueError(f"keys must be at most {MAX_METADATA_KEY_CHARS} characters and values at most "
                                 f"{MAX_METADATA_VALUE_CHARS}")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (v or {}).items():
            if not (key.isascii() and key.isdigit() and len(key) <= 9):
                raise ValueError(f"keys must be token ids, not {key[:32]!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError("biases must be between -100 and 100")
        return v

    @model_validator(mode="after")
    def _unsupported(self) -> SamplingFields:
        if self.store:
            raise UnsupportedParameterError("splitmind does not store completions", param="store")
        if self.best_of not in (None, 1):
            raise UnsupportedParameterError("best_of is not supported", param="best_of")
        if self.stream_options is not None and not self.stream:
            raise UnsupportedParameterError("stream_options needs stream=true", param="stream_options")
        return self

    @property
    def num_choices(self) -> int:
        return self.n or 1

    def num_logprobs(self) -> int | None:
        """Alternatives per token to return; None: no logprobs."""
        raise NotImplementedError

    def num_prompt_chars(self) -> int:
        """Characters of text the gateway would template and tokenize (`max_prompt_chars`)."""
        raise NotImplementedError

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        """A final chunk with usage; asking for continuous usage implies it."""
        so = self.stream_options
        return bool(so and (so.include_usage or so.continuous_usage_stats))

    @property
    def continuous_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.continuous_usage_stats)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    # Switches of the model's own template only (`enable_thinking`), checked against it in
    # `api/tokenization.py`: a `chat_template` here would be a client's code run on the gateway.
    chat_template_kwargs: dict[str, Any] | None = Field(default=None, max_length=MAX_TEMPLATE_KWARGS)
    tools: Any = None
    tool_choice: Any = None
    response_format: Any = None
    parallel_tool_calls: Any = None

    @model_validator(mode="after")
    def _chat_unsupported(self) -> ChatCompletionRequest:
        if self.tools:
            raise UnsupportedParameterError("tools are not supported", param="tools")
        if self.tool_choice not in (None, "none"):
            raise UnsupportedParameterError("tool_choice is not supported", param="tool_choice")
        fmt = self.response_format
        if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
            raise UnsupportedParameterError("only response_format {'type': 'text'} is supported",
                                            param="response_format")
        for key, value in (self.chat_template_kwargs or {}).items():
            scalar = value is None or isinstance(value, bool | int | float) or (
                isinstance(value, str) and len(value) <= MAX_TEMPLATE_VALUE_CHARS)
            if not scalar or len(key) > MAX_NAME_CHARS:
                raise InvalidRequestError(
                    "chat_template_kwargs holds the template's switches: each value a boolean, a number or a string "
                    f"of at most {MAX_TEMPLATE_VALUE_CHARS} characters", param=f"chat_template_kwargs.{key[:64]}")
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequestError("top_logprobs needs logprobs=true", param="top_logprobs")
        return self

    def num_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def num_prompt_chars(self) -> int:
        return sum(len(m.text()) for m in self.messages)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(SamplingFields):
    # A list of strings is a batch of prompts: one is served (`_completion_unsupported` says so).
    prompt: (Annotated[str, Field(min_length=1)] | Annotated[list[int], Field(max_length=MAX_PROMPT_TOKEN_IDS)]
             | Annotated[list[str], Field(max_length=MAX_N)])
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    suffix: str | None = None

    @model_validator(mode="after")
    def _completion_unsupported(self) -> CompletionRequest:
        if self.echo:
            raise UnsupportedParameterError("echo is not supported", param="echo")
        if self.suffix:
            raise UnsupportedParameterError("suffix is not supported", param="suffix")
        p = self.prompt
        if isinstance(p, list) and p and isinstance(p[0], str) and len(p) != 1:
            raise UnsupportedParameterError("only one prompt per request is supported", param="prompt")
        if isinstance(p, list) and not p:
            raise ValueError("prompt must not be empty")
        return self

    def num_logprobs(self) -> int | None:
        return self.logprobs

    def num_prompt_chars(self) -> int:
        p = self.prompt
        return len(p) if isinstance(p, str) else sum(len(x) for x in p if isinstance(x, str))

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens
