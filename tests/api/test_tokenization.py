"""The gateway tokenizes with the checkpoint's own tokenizer.json."""

from pathlib import Path

from tokenizers import Tokenizer

from api.tokenization import ModelFrontend
from models.hf_layout import Qwen2Shape, write_config
from models.tiny_reasoner.data import Problem, reply
from models.tokenizer import TEMPLATE_THINK_IN_PROMPT, save_hf_tokenizer, train_bpe


def test_a_qwen2_checkpoint_keeps_its_own_pre_tokenizer(tmp_path: Path) -> None:
    """Bug: AutoTokenizer picks Qwen2Tokenizer for `model_type: qwen2` and rebuilds the
    pre-tokenizer from Qwen2's defaults, ignoring tokenizer.json's. The bundled reasoner (every
    digit and `_` its own piece, merges across words) was then served prompts it was never
    trained on, and answered 38% of problems right through the gateway against 74% or more
    with its own tokenizer. Fix: `load_hf_tokenizer` loads tokenizer.json as written."""
    tok = train_bpe([reply(Problem(4821, 379, "+")), "What is 12+34?"] * 20, 320, split_digits=True)
    save_hf_tokenizer(tok, tmp_path, TEMPLATE_THINK_IN_PROMPT)
    write_config(tmp_path, Qwen2Shape(hidden_size=64, intermediate_size=128, num_layers=1, num_heads=2,
                                      num_kv_heads=1, vocab_size=tok.get_vocab_size(), max_position_embeddings=512),
                 bos_token_id=0, eos_token_id=2)
    frontend = ModelFrontend(str(tmp_path))
    text = frontend.render_chat([{"role": "user", "content": "What is 4821+379?"}], {})
    own = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert frontend.encode(text) == own.encode(text, add_special_tokens=False).ids
    assert frontend.encode("so far 5200__") == own.encode("so far 5200__", add_special_tokens=False).ids
