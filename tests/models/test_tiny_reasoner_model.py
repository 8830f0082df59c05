"""The training model means what the exported checkpoint means to Hugging Face and vLLM."""

from pathlib import Path

import torch

from models.tiny_reasoner.export import export, hf_state_dict, load
from models.tiny_reasoner.model import ReasonerConfig, TinyReasoner
from models.tokenizer import train_bpe


def small_model(seed: int = 0) -> TinyReasoner:
    torch.manual_seed(seed)
    model = TinyReasoner(ReasonerConfig(vocab_size=300, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                                        intermediate_size=96, max_position_embeddings=256))
    with torch.no_grad():  # off the init's zeros and ones, so a misplaced bias or norm shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_main_path_matches_transformers_qwen2(tmp_path: Path) -> None:
    from transformers import Qwen2ForCausalLM

    model = small_model()
    tok = train_bpe(["What is 12+34? The answer is 46."] * 3, 300, split_digits=True)
    export(model, tok, tmp_path)
    hf = Qwen2ForCausalLM.from_pretrained(tmp_path, torch_dtype=torch.float32).eval()
    ids = torch.randint(0, 300, (2, 57))
    with torch.no_grad():
        ours, _ = model(ids)
        theirs = hf(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_mtp_layer_sees_the_hidden_state_before_the_final_norm_and_the_next_token() -> None:
    """Position t's draft depends on tokens up to t+1 and never on t+2 (no peeking)."""
    model = small_model(1)
    ids = torch.randint(0, 300, (1, 20))
    changed = ids.clone()
    changed[0, 10] = (ids[0, 10] + 1) % 300
    with torch.no_grad():
        _, a = model(ids)
        _, b = model(changed)
    assert a is not None and b is not None
    assert torch.equal(a[0, :9], b[0, :9])  # drafts at 0..8 see tokens up to 9
    assert not torch.allclose(a[0, 9], b[0, 9])  # the draft at 9 sees token 10


def test_export_names_the_mtp_layer_as_vllm_loads_it(tmp_path: Path) -> None:
    names = set(hf_state_dict(small_model()))
    assert "model.mtp_layers.0.input_proj.weight" in names
    assert "model.mtp_layers.0.self_attn.q_proj.bias" in names
    assert "model.mtp_layers.0.mlp.down_proj.weight" in names
    assert not any(".block." in n for n in names)
    assert "lm_head.weight" in names


def test_export_load_round_trip(tmp_path: Path) -> None:
    model = small_model(2)
    export(model, train_bpe(["1+1=2"] * 3, 300, split_digits=True), tmp_path)
    again = load(tmp_path).eval()
    ids = torch.randint(0, 300, (1, 30))
    with torch.no_grad():
        assert torch.equal(model(ids)[0], again(ids)[0])
        assert torch.equal(model(ids)[1], again(ids)[1])
