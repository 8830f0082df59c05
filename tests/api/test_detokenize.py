from pathlib import Path

import pytest
from tokenizers import Tokenizer

from api.detokenize import StopMatcher, TextStream
from models.tokenizer import train_bpe


def feed_all(m: StopMatcher, chunks: list[str]) -> str:
    out = "".join(m.feed(c) for c in chunks)
    return out + m.flush()


def test_stop_string_split_across_chunks_is_not_emitted() -> None:
    m = StopMatcher(["STOP"])
    assert feed_all(m, ["abc S", "TO", "P def"]) == "abc "
    assert m.stopped


def test_partial_stop_prefix_is_released_at_the_end() -> None:
    m = StopMatcher(["STOP"])
    assert feed_all(m, ["abc ST"]) == "abc ST"
    assert not m.stopped


def test_earliest_of_several_stops_wins() -> None:
    m = StopMatcher(["xyz", "b"])
    assert feed_all(m, ["a", "bcxyz"]) == "a"


def test_no_stops_passes_text_through_unbuffered() -> None:
    m = StopMatcher([])
    assert m.feed("hello") == "hello"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    tok = train_bpe(["héllo wörld 日本語 " * 20, "plain ascii text"], 300)
    path = Path(tmp_path_factory.mktemp("tok")) / "tokenizer.json"
    tok.save(str(path))
    return Tokenizer.from_file(str(path))


def test_incremental_text_equals_batch_decode(tokenizer: Tokenizer) -> None:
    """Multi-byte characters split across byte-level tokens come out whole, once."""
    text = "héllo wörld 日本語 <think> ok </think>"
    ids = tokenizer.encode(text).ids
    stream = TextStream(tokenizer)
    pieces = [stream.step([i]) for i in ids]
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)
    assert all("\ufffd" not in p for p in pieces)
