"""The committed checkpoint: the layout vLLM's MTP loads, small, its tokenizer and template."""

import json

from api.tokenization import load_hf_tokenizer
from models import BUNDLED_MODEL
from models.tiny_reasoner.data import FORCED_END


def test_checkpoint_is_a_small_mimo_with_one_mtp_layer() -> None:
    config = json.loads((BUNDLED_MODEL / "config.json").read_text())
    assert config["architectures"] == ["MiMoForCausalLM"]
    assert config["num_nextn_predict_layers"] == 1
    assert config["tie_word_embeddings"] is False
    assert (BUNDLED_MODEL / "model.safetensors").stat().st_size < 30e6
    assert (BUNDLED_MODEL / "README.md").exists() and (BUNDLED_MODEL / "accuracy_vs_reasoning.png").exists()


def test_tokenizer_and_template_round_trip() -> None:
    tok = load_hf_tokenizer(str(BUNDLED_MODEL))
    for marker in ("<think>", "</think>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert len(tok.encode(marker, add_special_tokens=False)) == 1, marker
    text = "<think>\nunits: 1+9=10, +0=10, carry 1, so far 0_____\n</think>\n\nThe answer is 5200."
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text  # think markers are not special: text output keeps them
    assert sum(1 for i in ids if tok.convert_ids_to_tokens(i).isdigit()) == 13  # one token per digit
    msgs = [{"role": "user", "content": "What is 1+2?"}]
    assert tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False).endswith(
        "<|im_start|>assistant\n<think>\n")
    off = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    assert off.endswith("<think>\n\n</think>\n\n")
    assert tok.encode(FORCED_END, add_special_tokens=False)[-1] == tok.convert_tokens_to_ids("</think>")


def test_reasoning_profile_is_what_the_build_writes_and_loads() -> None:
    """The server reads the forced ending and effort budgets from the checkpoint, not from training code."""
    from models.tiny_reasoner.data import reasoning_profile
    from splitmind.reasoning_profile import PROFILE_FILE, load_profile

    assert json.loads((BUNDLED_MODEL / PROFILE_FILE).read_text()) == reasoning_profile()
    profile = load_profile(BUNDLED_MODEL)
    assert profile.forced_end == FORCED_END and profile.effort_budgets["high"] is None
