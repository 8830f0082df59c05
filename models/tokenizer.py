"""Build a byte-level BPE tokenizer and Qwen-style chat templates.

Used by the test checkpoints now and by the bundled tiny reasoner later. The chat markers
(`<|im_start|>`, `<|im_end|>`, `<|endoftext|>`) are special tokens; the think markers are added
tokens that are *not* special, as in Qwen3, so that text output keeps them and the gateway can
split reasoning from answer by token id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
THINK_START = "<think>"
THINK_END = "</think>"
SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END)
THINK_TOKENS = (THINK_START, THINK_END)

# Qwen3's template, reduced to what a text-only model needs. The assistant turn opens with
# `<think>\n` (think-in-prompt, as in R1 and Qwen3); `enable_thinking=false` emits an empty
# think block so the model answers directly.
TEMPLATE_THINK_IN_PROMPT = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- else %}"
    "{{- '<think>\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

# A template that leaves `<think>` to the model (older R1 distills, QwQ).
TEMPLATE_PLAIN = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

DEFAULT_CORPUS = (
    "What is 4821+379? Let me add digit by digit, carrying where needed. "
    "The answer is 5200. Check: 5200-379=4821. Hello there, how are you today? "
    "I am thinking about the question step by step before I answer it. "
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 + - * = ? ."
)


def train_bpe(
    corpus: Iterable[str],
    vocab_size: int,
    *,
    with_think_tokens: bool = True,
    split_digits: bool = False,
) -> Tokenizer:
    """Train a byte-level BPE whose chat and think markers are single tokens.

    `split_digits` makes every digit and every `_` (the padding of fixed-width fields) its own
    token, always the same one (arithmetic models learn per-digit steps, and a fixed-width field
    stays a fixed number of tokens), and lets merges span the text between them, so that fixed
    phrases of a trace such as ", carry " become one token each: fewer tokens to train on and
    to serve.
    """
    tokenizer = Tokenizer(models.BPE())
    if split_digits:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"[0-9_]|-(?=[0-9])"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    if with_think_tokens:
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tokenizer


def token_id(tokenizer: Tokenizer, text: str) -> int:
    """The id of a text that must be exactly one token (chat and think markers)."""
    found = tokenizer.token_to_id(text)
    if found is None:
        raise ValueError(f"{text!r} is not a single token")
    return int(found)


def save_hf_tokenizer(tokenizer: Tokenizer, out_dir: Path, chat_template: str) -> None:
    """Write tokenizer.json and the transformers config around it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": END_OF_TEXT,
        "unk_token": None,
        "model_max_length": 32768,
        "clean_up_tokenization_spaces": False,
        "chat_template": chat_template,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {"eos_token": IM_END, "pad_token": END_OF_TEXT}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
