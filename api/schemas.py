"""OpenAI request schemas (pydantic, the HTTP edge only).

Unknown fields are rejected (400 naming the field), and known OpenAI fields that splitmind does
not implement are rejected too: a client should learn at once that `best_of` or `tools` did not
happen, not find out from the output. `user` and `metadata` are accepted and ignored (they
label a request; nothing is stored to label), and `store` only as false.
Checks that depend on the deployment (vocabulary, speculative decoding) are in `api/sampling.py`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from splitmind.errors import InvalidRequestError, UnsupportedParameterError
from splitmind.protocol import MAX_LOGPROBS

MAX_N = 64  # choices per request: GRPO groups and best-of-n use 4-64
MAX_LOGIT_BIAS_ENTRIES = 1024
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
    content: str | list[TextPart] | None = None

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


class SamplingFields(BaseModel):
    """Fields shared by chat and completions."""

    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=2.0)
    ignore_eos: bool = False
    return_token_ids: bool = False  # vLLM extension: prompt and output token ids in the response
    n: int | None = Field(default=None, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    logit_bias: dict[str, float] | None = Field(default=None, max_length=MAX_LOGIT_BIAS_ENTRIES)
    # Reasoning controls, in each common dialect (`api/thinking.py` reconciles them).
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None  # OpenAI
    thinking_budget: int | None = Field(default=None, ge=0, le=MAX_THINKING_BUDGET)  # Qwen
    thinking_token_budget: int | None = Field(default=None, ge=0, le=MAX_THINKING_BUDGET)  # vLLM
    thinking: AnthropicThinking | None = None  # Anthropic, DeepSeek
    reasoning: OpenRouterReasoning | None = None  # OpenRouter
    include_reasoning: bool | None = None  # vLLM, OpenRouter: false hides the reasoning
    # Known OpenAI/vLLM fields splitmind does not implement: rejected with a 400.
    best_of: Any = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 16:
            raise ValueError("at most 16 stop sequences")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (v or {}).items():
            if not key.isdigit():
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
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    chat_template_kwargs: dict[str, Any] | None = None
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
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequestError("top_logprobs needs logprobs=true", param="top_logprobs")
        return self

    def num_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(SamplingFields):
    prompt: str | list[int] | list[str]
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

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens
