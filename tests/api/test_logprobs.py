"""Logprobs follow the text they came from, and come out in OpenAI's shapes."""

from __future__ import annotations

import pytest

from api.logprobs import TokenText, chat_logprobs, completion_logprobs
from api.sampling import Deployment
from api.schemas import ChatCompletionRequest
from api.service import Assembler, prepare_chat
from api.tokenization import ModelFrontend
from models.test_checkpoints import CheckpointSpec, build_checkpoint, scripted_chain
from splitmind.protocol import FinishReason, TokenDelta, TokenLogprob
from splitmind.reasoning import ReasoningSplitter

START, END = 100, 101


@pytest.fixture(scope="module")
def frontend(tmp_path_factory: pytest.TempPathFactory) -> ModelFrontend:
    d = build_checkpoint(tmp_path_factory.mktemp("m") / "scripted", CheckpointSpec(weights="scripted"))
    return ModelFrontend(str(d))


def test_pieces_account_for_every_id_markers_included() -> None:
    s = ReasoningSplitter(START, END, False)
    pieces = s.feed([START, 1, 2, END, 3]) + s.feed([4])
    assert [(p.is_reasoning, p.token_ids, p.num_ids) for p in pieces] == [
        (True, [1, 2], 4), (False, [3], 1), (False, [4], 1)]


def test_a_lone_marker_is_a_piece_without_text() -> None:
    s = ReasoningSplitter(START, END, True)
    assert [(p.is_reasoning, p.token_ids, p.num_ids) for p in s.feed([END])] == [(True, [], 1)]


def test_chat_segments_carry_the_logprobs_of_their_ids(frontend: ModelFrontend) -> None:
    req = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                                "logprobs": True})
    dep = Deployment(vocab_size=frontend.vocab_size, max_model_len=2048, speculative=False)
    asm = Assembler(frontend, prepare_chat(req, frontend, dep))
    ids = scripted_chain(frontend.tokenizer, "think_in_prompt", True)
    lps = [TokenLogprob(t, -0.1 * i) for i, t in enumerate(ids)]
    segments, finish = asm.feed(TokenDelta("r", ids, FinishReason.STOP, logprobs=lps))
    assert finish == "stop"
    assert [e for seg in segments for e in seg.logprobs] == lps, "every token once, in order"
    reasoning, answer = segments[0], segments[1]
    assert reasoning.reasoning and reasoning.logprobs[-1].token_id == frontend.think_end_id
    assert answer.content and answer.logprobs[0].token_id == ids[len(reasoning.logprobs)]


def test_token_text_gives_exact_bytes_even_for_part_of_a_character(frontend: ModelFrontend) -> None:
    text = TokenText(frontend.tokenizer)
    ids = frontend.encode("é")  # two bytes; a byte-level vocabulary may split them
    pieces = [text(i) for i in ids]
    assert b"".join(bytes(b) for _, b in pieces) == "é".encode()
    assert text(frontend.think_end_id) == ("</think>", list(b"</think>"))


def test_openai_shapes(frontend: ModelFrontend) -> None:
    text = TokenText(frontend.tokenizer)
    a, b = frontend.encode("hello")[0], frontend.encode(" there")[0]
    entries = [TokenLogprob(a, -0.5, [b, a], [-0.2, -0.5]), TokenLogprob(b, -1.0, [b], [-1.0])]
    chat = chat_logprobs(entries, text)
    assert chat["refusal"] is None
    assert [e["token"] for e in chat["content"]] == [text(a)[0], text(b)[0]]
    assert [t["logprob"] for t in chat["content"][0]["top_logprobs"]] == [-0.2, -0.5]
    body, end = completion_logprobs(entries, text, 10)
    assert body["token_logprobs"] == [-0.5, -1.0]
    assert body["text_offset"] == [10, 10 + len(text(a)[0])] and end == body["text_offset"][1] + len(text(b)[0])
    assert body["top_logprobs"][0] == {text(b)[0]: -0.2, text(a)[0]: -0.5}
