"""Tiny checkpoints built on the spot for tests and demos (no model hub here).

Two kinds of weights:
- ``random``: a Qwen2 with ordinary random weights. Its greedy output depends on every past
  token through attention, so a KV cache that arrived wrong changes the tokens: the kind to test
  KV transfer with.
- ``scripted``: a Qwen2 whose greedy output follows a chain chosen in advance. The residual
  stream is dominated by the current token's embedding (layer outputs are scaled down) and
  ``lm_head`` row ``next(t)`` equals ``embed(t)``, so the argmax after token ``t`` is ``next(t)``.
  That makes reasoning/answer splitting testable with exact expected text.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

from models.hf_layout import Qwen2Shape, write_config
from models.tokenizer import (
    DEFAULT_CORPUS,
    END_OF_TEXT,
    IM_END,
    TEMPLATE_PLAIN,
    TEMPLATE_THINK_IN_PROMPT,
    THINK_END,
    THINK_START,
    save_hf_tokenizer,
    token_id,
    train_bpe,
)

# The scripted model's chain: after the prompt's last token it thinks these words, closes the
# think block, answers, and ends the turn.
SCRIPT_REASONING = " Let me think carefully."
SCRIPT_ANSWER = " The answer is 42"


@dataclass(frozen=True)
class CheckpointSpec:
    weights: str = "random"  # "random" | "scripted"
    template: str = "think_in_prompt"  # "think_in_prompt" | "plain"
    think_tokens: bool = True
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    vocab_size: int = 320
    max_position_embeddings: int = 4096
    mtp_layers: int = 0  # > 0: MiMo layout, with multi-token-prediction layers vLLM's MTP loads
    seed: int = 0

    def __post_init__(self) -> None:
        if self.weights not in ("random", "scripted"):
            raise ValueError(f"weights must be 'random' or 'scripted', not {self.weights!r}")
        if self.template not in ("think_in_prompt", "plain"):
            raise ValueError(f"template must be 'think_in_prompt' or 'plain', not {self.template!r}")
        if self.weights == "scripted" and not self.think_tokens and self.template != "plain":
            raise ValueError("a model without think tokens needs the plain template")


def build_checkpoint(out_dir: Path, spec: CheckpointSpec = CheckpointSpec()) -> Path:
    """Write a Hugging Face Qwen2 checkpoint (config, safetensors, tokenizer) to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_bpe(
        [DEFAULT_CORPUS, SCRIPT_REASONING, SCRIPT_ANSWER],
        spec.vocab_size,
        with_think_tokens=spec.think_tokens,
    )
    template = TEMPLATE_THINK_IN_PROMPT if spec.template == "think_in_prompt" else TEMPLATE_PLAIN
    save_hf_tokenizer(tokenizer, out_dir, template)
    vocab_size = tokenizer.get_vocab_size()
    eos_id = token_id(tokenizer, IM_END)

    gen = torch.Generator().manual_seed(spec.seed)
    tensors = _random_weights(spec, vocab_size, gen)
    if spec.weights == "scripted":
        _script(tensors, tokenizer, spec, gen)
    for i in range(spec.mtp_layers):
        tensors.update(_mtp_layer_weights(spec, i, gen))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / "model.safetensors"))

    shape = Qwen2Shape(
        hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size, num_layers=spec.num_layers,
        num_heads=spec.num_heads, num_kv_heads=spec.num_kv_heads, vocab_size=vocab_size,
        max_position_embeddings=spec.max_position_embeddings, mtp_layers=spec.mtp_layers)
    write_config(out_dir, shape, bos_token_id=token_id(tokenizer, END_OF_TEXT), eos_token_id=eos_id)
    return out_dir


def _random_weights(spec: CheckpointSpec, vocab: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    h, inter = spec.hidden_size, spec.intermediate_size
    head_dim = h // spec.num_heads
    kv = spec.num_kv_heads * head_dim

    def rnd(*shape: int, std: float = 0.08) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    t: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": rnd(vocab, h, std=1.0),
        "model.norm.weight": torch.ones(h),
        "lm_head.weight": rnd(vocab, h, std=0.3),
    }
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = torch.ones(h)
        t[p + "post_attention_layernorm.weight"] = torch.ones(h)
        t[p + "self_attn.q_proj.weight"] = rnd(h, h, std=0.3)
        t[p + "self_attn.q_proj.bias"] = rnd(h)
        t[p + "self_attn.k_proj.weight"] = rnd(kv, h, std=0.3)
        t[p + "self_attn.k_proj.bias"] = rnd(kv)
        t[p + "self_attn.v_proj.weight"] = rnd(kv, h, std=0.3)
        t[p + "self_attn.v_proj.bias"] = rnd(kv)
        t[p + "self_attn.o_proj.weight"] = rnd(h, h, std=0.3)
        t[p + "mlp.gate_proj.weight"] = rnd(inter, h, std=0.2)
        t[p + "mlp.up_proj.weight"] = rnd(inter, h, std=0.2)
        t[p + "mlp.down_proj.weight"] = rnd(h, inter, std=0.2)
    return t


def _mtp_layer_weights(spec: CheckpointSpec, index: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """One MiMo MTP layer: norms, `input_proj` (2h -> h) and an ordinary Qwen2 decoder layer,
    named as vLLM's `mimo_mtp.py` loads them (0-indexed, no `mtp_block` wrapper)."""
    layer = _random_weights(CheckpointSpec(**{**spec.__dict__, "num_layers": 1, "mtp_layers": 0}), 1, gen)
    h = spec.hidden_size
    p = f"model.mtp_layers.{index}."
    body = "model.layers.0."
    out = {p + name.removeprefix(body): t for name, t in layer.items() if name.startswith(body)}
    for norm in ("token_layernorm", "hidden_layernorm", "final_layernorm"):
        out[p + norm + ".weight"] = torch.ones(h)
    out[p + "input_proj.weight"] = torch.randn(h, 2 * h, generator=gen) * 0.05
    return out


def scripted_chain(tok: Tokenizer, template: str, think_tokens: bool) -> list[int]:
    """The token ids the scripted model emits after the generation prompt, ending with eos."""
    ids: list[int] = []
    if think_tokens:
        if template == "plain":
            ids.append(token_id(tok, THINK_START))
        ids += tok.encode(SCRIPT_REASONING).ids
        ids.append(token_id(tok, THINK_END))
    ids += tok.encode(SCRIPT_ANSWER).ids
    ids.append(token_id(tok, IM_END))
    return ids


def _script(
    tensors: dict[str, torch.Tensor], tokenizer: Tokenizer, spec: CheckpointSpec, gen: torch.Generator
) -> None:
    vocab = tokenizer.get_vocab_size()
    # Every generation prompt ends with "\n" (after "assistant" or after "<think>").
    newline = tokenizer.encode("\n").ids
    if len(newline) != 1:
        raise ValueError("the scripted model needs '\\n' to be one token")
    chain = [newline[0], *scripted_chain(tokenizer, spec.template, spec.think_tokens)]
    successor: dict[int, int] = {}
    for cur, nxt in itertools.pairwise(chain):
        if cur in successor and successor[cur] != nxt:
            raise ValueError(f"scripted chain repeats token {cur} with two successors")
        successor[cur] = nxt
    # Complete `successor` to a permutation so every token has a distinct predictor row.
    free_targets = [t for t in torch.randperm(vocab, generator=gen).tolist() if t not in successor.values()]
    for tok_id in range(vocab):
        if tok_id not in successor:
            successor[tok_id] = free_targets.pop()
    embed = tensors["model.embed_tokens.weight"]
    lm_head = torch.empty_like(embed)
    for cur, nxt in successor.items():
        lm_head[nxt] = embed[cur]
    tensors["lm_head.weight"] = lm_head
    # Keep attention and MLP alive but small, so the current token decides the next.
    for name in list(tensors):
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            tensors[name] = tensors[name] * 0.02
