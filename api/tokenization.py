"""The model's tokenizer, chat template and reasoning profile, owned by the gateway: prompts are
tokenized once.

Reasoning markers are found by token id: the profile's think markers (`<think>`/`</think>` by
default) must each be one token for the model to count as a reasoning model; otherwise
everything it says is answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
from tokenizers import Tokenizer

from splitmind.errors import InvalidRequestError
from splitmind.reasoning_profile import ReasoningProfile, load_profile


def load_hf_tokenizer(model_dir: str) -> Any:
    """The checkpoint's tokenizer exactly as its tokenizer.json defines it, when it has one.

    transformers' AutoTokenizer picks the tokenizer class from the model type for some families
    (qwen2 among them, `MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS`) and that class rebuilds the
    pre-tokenizer from the family's defaults, ignoring tokenizer.json's. A checkpoint whose
    tokenizer differs from its family's, such as the bundled tiny reasoner (every digit and `_`
    its own piece), is then served token ids it was never trained on.
    """
    if (Path(model_dir) / "tokenizer.json").exists():
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(model_dir)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


# What `apply_chat_template` supplies to a template or takes as its own arguments: never a
# request's to set, whatever a template reads.
RENDERER_NAMES = frozenset({
    "messages", "conversation", "tools", "documents", "add_generation_prompt", "continue_final_message",
    "chat_template", "tokenize", "padding", "truncation", "max_length", "return_tensors", "return_dict",
    "return_assistant_tokens_mask", "tokenizer_kwargs", "raise_exception", "strftime_now", "range", "namespace",
    "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
    "additional_special_tokens",
})


class ModelFrontend:
    def __init__(self, model_dir: str, profile_overrides: dict[str, Any] | None = None) -> None:
        self.hf = load_hf_tokenizer(model_dir)
        self.tokenizer: Tokenizer = self.hf.backend_tokenizer
        self.profile: ReasoningProfile = load_profile(model_dir, profile_overrides)
        self.think_start_id = self._single_token(self.profile.think_start)
        self.think_end_id = self._single_token(self.profile.think_end)
        self.stop_token_ids = self._stop_token_ids(Path(model_dir))
        self._line_end_ids, self._line_start_ids = (self._find_line_break_ids() if self.is_reasoning_model
                                                    else (frozenset(), frozenset()))
        text = self.profile.forced_end
        self._forced = (self.encode(text), self.encode(text.lstrip("\n")))
        self.template_switches = self._template_switches()

    @property
    def vocab_size(self) -> int:
        """Token ids below this are the tokenizer's (added tokens included)."""
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    @property
    def is_reasoning_model(self) -> bool:
        return self.think_start_id is not None and self.think_end_id is not None

    def _single_token(self, text: str) -> int | None:
        token_id = self.tokenizer.token_to_id(text)
        return int(token_id) if token_id is not None else None

    def _stop_token_ids(self, model_dir: Path) -> list[int]:
        ids: set[int] = set()
        if self.hf.eos_token_id is not None:
            ids.add(int(self.hf.eos_token_id))
        gen = model_dir / "generation_config.json"
        if gen.exists():
            eos = json.loads(gen.read_text()).get("eos_token_id")
            ids.update([eos] if isinstance(eos, int) else (eos or []))
        return sorted(ids)

    def _template_switches(self) -> frozenset[str]:
        """The names a request's `chat_template_kwargs` may set: the variables the model's chat
        template reads that the renderer does not supply itself (`enable_thinking` in Qwen3's),
        and `enable_thinking` for any reasoning model (thinking off closes the think block when
        the template does not know it). Nothing else: `apply_chat_template` takes
        `chat_template` among its keyword arguments, and a request's template is a client's
        Jinja run in the gateway (vLLM refuses request templates unless told to trust them)."""
        names: set[str] = {"enable_thinking"} if self.is_reasoning_model else set()
        template = self.hf.chat_template
        if isinstance(template, str):
            used = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(template))
            names |= {n for n in used if n not in RENDERER_NAMES}
        return frozenset(names)

    def check_template_kwargs(self, kwargs: dict[str, Any]) -> None:
        for key in kwargs:
            if key not in self.template_switches:
                accepted = ", ".join(sorted(self.template_switches)) or "none"
                raise InvalidRequestError(
                    f"chat_template_kwargs.{key[:64]} is not a switch of this model's chat template (it accepts: "
                    f"{accepted})", param=f"chat_template_kwargs.{key[:64]}")

    def render_chat(self, messages: list[dict[str, str]], template_kwargs: dict[str, Any]) -> str:
        if self.hf.chat_template is None:
            raise InvalidRequestError("this model has no chat template; use /v1/completions", param="messages")
        self.check_template_kwargs(template_kwargs)
        try:
            text = self.hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                               **template_kwargs)
        except Exception as exc:  # jinja errors are the request's fault (roles, kwargs)
            raise InvalidRequestError(f"chat template failed: {exc}", param="messages") from exc
        return str(text)

    def close_thinking(self, text: str) -> str:
        """A rendered chat prompt whose thinking is already over (thinking off), for templates that
        do not know `enable_thinking`: the open think block closed, or an empty one added."""
        if not self.is_reasoning_model:
            return text
        start, end = self.profile.think_start, self.profile.think_end
        if self.prompt_opens_reasoning(self.encode(text)):
            return f"{text}\n{end}\n\n"
        if text.rstrip().endswith(end):
            return text
        return f"{text}{start}\n\n{end}\n\n"

    def encode(self, text: str) -> list[int]:
        # encode_batch releases the GIL while it works and encode does not: a 1M-character
        # prompt held it for 1.5 s, stalling every other request's stream on the event loop
        # even with tokenization in a worker thread.
        return list(self.tokenizer.encode_batch([text], add_special_tokens=False)[0].ids)

    def _find_line_break_ids(self) -> tuple[frozenset[int], frozenset[int]]:
        """Tokens whose text ends a line, and tokens whose text starts a new one (`\nt`: many
        BPE vocabularies, the bundled model's included, glue a newline to what follows it).
        Decodes the whole vocabulary once, at start (about a second for 150k tokens), so that
        no request waits for it."""
        texts = self.tokenizer.decode_batch([[i] for i in range(self.vocab_size)], skip_special_tokens=False)
        return (frozenset(i for i, t in enumerate(texts) if t.endswith("\n")),
                frozenset(i for i, t in enumerate(texts) if t.startswith("\n") and not t.endswith("\n")))

    def line_end_ids(self) -> frozenset[int]:
        """Tokens whose text ends a line (a budget's grace window ends at one)."""
        return self._line_end_ids

    def line_start_ids(self) -> frozenset[int]:
        """Tokens whose text starts with a line break and goes on (a line ended just before them)."""
        return self._line_start_ids

    def forced_end_ids(self) -> tuple[list[int], list[int]]:
        """The profile's forced ending as token ids: after a cut in the middle of a line, and at
        the start of one (its leading newlines dropped, so no blank line appears)."""
        return self._forced

    def prompt_opens_reasoning(self, prompt_ids: list[int]) -> bool:
        """True when the prompt ends inside a think block (R1/Qwen3 templates add `<think>`)."""
        if not self.is_reasoning_model:
            return False
        for token_id in reversed(prompt_ids):
            if token_id == self.think_end_id:
                return False
            if token_id == self.think_start_id:
                return True
        return False
