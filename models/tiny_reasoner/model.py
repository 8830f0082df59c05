"""The tiny reasoner in PyTorch, for training: a Qwen2 decoder plus one MiMo MTP layer.

The math matches what vLLM runs for `MiMoForCausalLM` (`vllm/model_executor/models/mimo.py`)
and its draft model (`mimo_mtp.py`), so that the exported weights mean the same thing there:

- Qwen2 decoder layers: RMSNorm, attention with q/k/v biases and rotate-half RoPE, SwiGLU MLP.
- The main model's hidden state handed to the MTP layer is the residual stream *before* the
  final norm.
- The MTP layer at position t sees that hidden state and the embedding of token t+1 (zeroed at
  position 0, as vLLM masks it), as `input_proj(cat[hidden_layernorm(h_t),
  token_layernorm(embed(x_{t+1}))])`, runs one ordinary causal decoder layer at position t with
  its own attention, then `final_layernorm` and the shared `lm_head`: it predicts token t+2.

`tests/models/test_tiny_reasoner_model.py` checks the main path against transformers' Qwen2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ReasonerConfig:
    vocab_size: int
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 768
    mtp_layers: int = 1
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 2048

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if self.mtp_layers not in (0, 1):
            raise ValueError("mtp_layers must be 0 or 1 (vLLM's MiMo MTP predicts one token a step)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class Rope(nn.Module):
    """Rotate-half rotary embedding (Qwen2's, vLLM's `is_neox_style=True`)."""

    def __init__(self, cfg: ReasonerConfig) -> None:
        super().__init__()
        dim = cfg.head_dim
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        freqs = torch.outer(torch.arange(cfg.max_position_embeddings, dtype=torch.float32), inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, heads, seq, head_dim), positions 0..seq-1."""
        seq = x.shape[-2]
        cos, sin = self.cos[:seq], self.sin[:seq]
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: ReasonerConfig, rope: Rope) -> None:
        super().__init__()
        self.cfg = cfg
        kv = cfg.num_kv_heads * cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=True)
        self.k_proj = nn.Linear(cfg.hidden_size, kv, bias=True)
        self.v_proj = nn.Linear(cfg.hidden_size, kv, bias=True)
        self.o_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.rope = rope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        c = self.cfg
        q = self.q_proj(x).view(b, s, c.num_heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, c.num_kv_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, c.num_kv_heads, c.head_dim).transpose(1, 2)
        q, k = self.rope(q), self.rope(k)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, c.hidden_size))


class MLP(nn.Module):
    def __init__(self, cfg: ReasonerConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ReasonerConfig, rope: Rope) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, rope)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class MTPLayer(nn.Module):
    def __init__(self, cfg: ReasonerConfig, rope: Rope) -> None:
        super().__init__()
        self.token_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.hidden_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.input_proj = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size, bias=False)
        self.block = DecoderLayer(cfg, rope)
        self.final_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, hidden: torch.Tensor, next_embeds: torch.Tensor) -> torch.Tensor:
        """hidden: main model states at positions 0..s-1; next_embeds: embeddings of tokens 1..s."""
        next_embeds = next_embeds.clone()
        next_embeds[:, 0] = 0.0  # vLLM zeroes the input embedding at position 0
        x = self.input_proj(torch.cat([self.hidden_layernorm(hidden), self.token_layernorm(next_embeds)], dim=-1))
        return self.final_layernorm(self.block(x))


class Model(nn.Module):
    """Named like the Hugging Face checkpoint (`model.layers.N...`), apart from the MTP layer."""

    def __init__(self, cfg: ReasonerConfig) -> None:
        super().__init__()
        rope = Rope(cfg)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, rope) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mtp_layers = nn.ModuleList(MTPLayer(cfg, rope) for _ in range(cfg.mtp_layers))


class TinyReasoner(nn.Module):
    def __init__(self, cfg: ReasonerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = Model(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """The residual stream after the last layer, before the final norm."""
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x)
        return x

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for token t+1 at every position, and the MTP layer's logits for token t+2 at
        positions 0..s-2 (None without an MTP layer)."""
        h = self.hidden(ids)
        logits = self.lm_head(self.model.norm(h))
        if not self.model.mtp_layers:
            return logits, None
        mtp = self.model.mtp_layers[0](h[:, :-1], self.model.embed_tokens(ids[:, 1:]))
        return logits, self.lm_head(mtp)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
