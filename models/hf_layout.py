"""The Hugging Face checkpoint files around the weights: config.json and generation_config.json.

One place for the Qwen2 / MiMo config that vLLM reads, shared by the test checkpoints and the
bundled tiny reasoner. With MTP layers the architecture is `MiMoForCausalLM`, and
`num_nextn_predict_layers` tells vLLM (and `splitmind.node.engine`) that they are there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Qwen2Shape:
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    max_position_embeddings: int
    mtp_layers: int = 0
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6


def write_config(out_dir: Path, shape: Qwen2Shape, *, bos_token_id: int, eos_token_id: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "architectures": ["MiMoForCausalLM" if shape.mtp_layers else "Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "num_key_value_heads": shape.num_kv_heads,
        "max_position_embeddings": shape.max_position_embeddings,
        "max_window_layers": shape.num_layers,
        "rms_norm_eps": shape.rms_norm_eps,
        "rope_theta": shape.rope_theta,
        "hidden_act": "silu",
        "vocab_size": shape.vocab_size,
        "tie_word_embeddings": False,  # the MTP draft shares an explicit lm_head with the main model
        "use_sliding_window": False,
        "torch_dtype": "float32",
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
    }
    if shape.mtp_layers:
        config["num_nextn_predict_layers"] = shape.mtp_layers
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {"eos_token_id": [eos_token_id], "bos_token_id": bos_token_id}
    (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    return config
