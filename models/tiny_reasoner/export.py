"""Write the trained model as a Hugging Face `MiMoForCausalLM` checkpoint that vLLM loads.

Weight names: the main model's are Qwen2's (`model.layers.N.self_attn.q_proj.weight`, ...);
the MTP layer's are `model.mtp_layers.0.{token_layernorm,hidden_layernorm,input_proj,
final_layernorm}` plus its decoder layer's own names directly under the same prefix (vLLM's
`mimo_mtp.py` adds the `mtp_block` wrapper when it loads them).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

from models.hf_layout import Qwen2Shape, write_config
from models.tiny_reasoner.data import reasoning_profile
from models.tiny_reasoner.model import ReasonerConfig, TinyReasoner
from models.tokenizer import END_OF_TEXT, IM_END, TEMPLATE_THINK_IN_PROMPT, save_hf_tokenizer, token_id
from splitmind.reasoning_profile import PROFILE_FILE


def hf_state_dict(model: TinyReasoner) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("model.mtp_layers."):
            name = name.replace(".block.", ".")
        out[name] = tensor.detach().to(torch.float32).contiguous()
    return out


def shape_of(cfg: ReasonerConfig) -> Qwen2Shape:
    return Qwen2Shape(
        hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size, num_layers=cfg.num_layers,
        num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads, vocab_size=cfg.vocab_size,
        max_position_embeddings=cfg.max_position_embeddings, mtp_layers=cfg.mtp_layers,
        rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_norm_eps)


def write_reasoning_profile(out_dir: Path) -> None:
    (out_dir / PROFILE_FILE).write_text(json.dumps(reasoning_profile(), indent=2) + "\n")


def export(model: TinyReasoner, tokenizer: Tokenizer, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_reasoning_profile(out_dir)
    save_hf_tokenizer(tokenizer, out_dir, TEMPLATE_THINK_IN_PROMPT)
    save_file(hf_state_dict(model), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    write_config(out_dir, shape_of(model.cfg), bos_token_id=token_id(tokenizer, END_OF_TEXT),
                 eos_token_id=token_id(tokenizer, IM_END))
    return out_dir


def load(model_dir: Path) -> TinyReasoner:
    """The exported checkpoint back as a trainable model (tests, further training)."""
    from safetensors.torch import load_file

    c = json.loads((model_dir / "config.json").read_text())
    cfg = ReasonerConfig(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_layers=c["num_hidden_layers"],
        num_heads=c["num_attention_heads"], num_kv_heads=c["num_key_value_heads"],
        intermediate_size=c["intermediate_size"], mtp_layers=c.get("num_nextn_predict_layers", 0),
        rope_theta=c["rope_theta"], rms_norm_eps=c["rms_norm_eps"],
        max_position_embeddings=c["max_position_embeddings"])
    model = TinyReasoner(cfg)
    by_hf_name = {hf: own for own, hf in zip(model.state_dict(), hf_state_dict(model), strict=True)}
    tensors = load_file(str(model_dir / "model.safetensors"))
    model.load_state_dict({by_hf_name[name]: t for name, t in tensors.items()})
    return model
