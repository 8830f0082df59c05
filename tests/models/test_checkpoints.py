from pathlib import Path

import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from models.test_checkpoints import CheckpointSpec, build_checkpoint, scripted_chain


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("ck") / "scripted", CheckpointSpec(weights="scripted"))


def test_markers_are_single_tokens(scripted: Path) -> None:
    tok = AutoTokenizer.from_pretrained(scripted)
    for marker in ("<think>", "</think>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert len(tok.encode(marker, add_special_tokens=False)) == 1, marker
    # think markers are not special: decoding keeps them
    ids = tok.encode("a<think>b</think>c", add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == "a<think>b</think>c"


def test_template_opens_think_and_can_close_it(scripted: Path) -> None:
    tok = AutoTokenizer.from_pretrained(scripted)
    msgs = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False).endswith(
        "<|im_start|>assistant\n<think>\n")
    off = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    assert off.endswith("<think>\n\n</think>\n\n")


def test_scripted_chain_is_unambiguous(scripted: Path) -> None:
    tok = Tokenizer.from_file(str(scripted / "tokenizer.json"))
    chain = scripted_chain(tok, "think_in_prompt", True)
    assert len(set(chain)) == len(chain)
    assert tok.decode(chain, skip_special_tokens=False).endswith("</think> The answer is 42<|im_end|>")


def test_no_think_checkpoint(tmp_path: Path) -> None:
    d = build_checkpoint(tmp_path / "n", CheckpointSpec(weights="scripted", template="plain", think_tokens=False))
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    assert tok.token_to_id("<think>") is None
