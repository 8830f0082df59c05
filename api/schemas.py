"""OpenAI request schemas (pydantic, the HTTP edge only).

Unknown fields are rejected (400 naming the field), and known OpenAI fields that splitmind does
not implement are rejected too: a client should learn at once that `n=2` or `logprobs` did not
happen, not find out from the output. `user`, `metadata` and `store` are accepted and ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from splitmind.errors import UnsupportedParameterError


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


class SamplingFields(BaseModel):
    """Fields shared by chat and completions."""

    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=2.0)
    ignore_eos: bool = False
    return_token_ids: bool = False  # vLLM extension: prompt and output token ids in the response
    n: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    # Known OpenAI/vLLM fields splitmind does not implement (yet): rejected with a 400.
    logprobs: Any = None
    top_logprobs: Any = None
    logit_bias: Any = None
    best_of: Any = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 16:
            raise ValueError("at most 16 stop sequences")
        return v

    @model_validator(mode="after")
    def _unsupported(self) -> SamplingFields:
        if self.n not in (None, 1):
            raise UnsupportedParameterError("only n=1 is supported", param="n")
        if self.logprobs not in (None, False, 0):
            raise UnsupportedParameterError("logprobs are not supported", param="logprobs")
        if self.top_logprobs not in (None, 0):
            raise UnsupportedParameterError("top_logprobs is not supported", param="top_logprobs")
        if self.logit_bias:
            raise UnsupportedParameterError("logit_bias is not supported", param="logit_bias")
        if self.best_of not in (None, 1):
            raise UnsupportedParameterError("best_of is not supported", param="best_of")
        if self.stream_options is not None and not self.stream:
            raise UnsupportedParameterError("stream_options needs stream=true", param="stream_options")
        return self

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
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
        return self

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(SamplingFields):
    prompt: str | list[int] | list[str]
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

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens
