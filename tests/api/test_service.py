"""Token deltas -> text segments, on a real tokenizer and chat template."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from api.sampling import Deployment
from api.schemas import ChatCompletionRequest
from api.service import Assembler, prepare_chat
from api.tokenization import ModelFrontend
from models.test_checkpoints import CheckpointSpec, build_checkpoint, scripted_chain
from splitmind.errors import ContextLengthError
from splitmind.protocol import FinishReason, TokenDelta


@pytest.fixture(scope="module")
def frontend(tmp_path_factory: pytest.TempPathFactory) -> ModelFrontend:
    d = build_checkpoint(tmp_path_factory.mktemp("m") / "scripted", CheckpointSpec(weights="scripted"))
    return ModelFrontend(str(d))


def dep(fe: ModelFrontend, max_model_len: int, *, speculative: bool = False) -> Deployment:
    return Deployment(vocab_size=fe.vocab_size, max_model_len=max_model_len, speculative=speculative)


def chat(**kw: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw})


def reply_ids(fe: ModelFrontend) -> list[int]:
    return scripted_chain(fe.tokenizer, "think_in_prompt", True)


def test_one_delta_across_the_boundary_gives_two_segments(frontend: ModelFrontend) -> None:
    """Bug: a delta holding the end of the reasoning, `</think>` and the answer (merged while the
    reader lagged) became one SSE chunk with both `reasoning_content` and `content`.
    Fix: the assembler returns ordered segments, each all reasoning or all answer."""
    asm = Assembler(frontend, prepare_chat(chat(), frontend, dep(frontend, 2048)))
    segments, finish = asm.feed(TokenDelta("r", reply_ids(frontend), FinishReason.STOP))
    assert [(s.reasoning, s.content) for s in segments] == [
        (" Let me think carefully.", ""), ("", " The answer is 42")]
    assert finish == "stop"
    assert asm.num_reasoning_tokens == len(Tokenizer.encode(frontend.tokenizer, " Let me think carefully.").ids) + 1


def test_token_by_token_gives_the_same_text(frontend: ModelFrontend) -> None:
    asm = Assembler(frontend, prepare_chat(chat(), frontend, dep(frontend, 2048)))
    ids = reply_ids(frontend)
    reasoning = content = ""
    for i, tid in enumerate(ids):
        segments, _ = asm.feed(TokenDelta("r", [tid], FinishReason.STOP if i == len(ids) - 1 else None))
        for s in segments:
            assert not (s.reasoning and s.content)
            reasoning += s.reasoning
            content += s.content
    assert (reasoning, content) == (" Let me think carefully.", " The answer is 42")


def test_thinking_off_starts_in_the_answer(frontend: ModelFrontend) -> None:
    prepared = prepare_chat(chat(chat_template_kwargs={"enable_thinking": False}), frontend, dep(frontend, 2048))
    assert not prepared.starts_in_reasoning
    assert prepare_chat(chat(), frontend, dep(frontend, 2048)).starts_in_reasoning


def test_max_tokens_defaults_to_the_room_left(frontend: ModelFrontend) -> None:
    prepared = prepare_chat(chat(), frontend, dep(frontend, 100))
    assert prepared.sampling.max_tokens == 100 - len(prepared.prompt_token_ids)
    with pytest.raises(ContextLengthError):
        prepare_chat(chat(max_tokens=100), frontend, dep(frontend, 100))


def test_stop_ids_include_the_models_eos(frontend: ModelFrontend) -> None:
    prepared = prepare_chat(chat(), frontend, dep(frontend, 2048))
    assert frontend.tokenizer.token_to_id("<|im_end|>") in prepared.sampling.stop_token_ids
    assert prepare_chat(chat(ignore_eos=True), frontend, dep(frontend, 2048)).sampling.stop_token_ids == []




def test_a_client_gone_before_the_first_token_leaves_a_generator_that_can_be_closed() -> None:
    """Bug: `_watch` cancelled the step that was waiting for a stream's first token and returned
    at once; the route then closed the stream's generator while it was still unwinding:
    "aclose(): asynchronous generator is already running", a 500 logged as an unhandled error.
    Fix: `_watch` waits for the cancelled step to unwind."""
    import asyncio

    from api.openai_routes import ClientGone, _watch

    class Gone:
        async def is_disconnected(self) -> bool:
            return True

    closed: list[str] = []

    async def tokens():  # type: ignore[no-untyped-def]
        try:
            await asyncio.sleep(60)  # the first token, far away
            yield 1
        finally:
            await asyncio.sleep(0.05)  # aborting on the workers takes a moment
            closed.append("aborted")

    async def run() -> None:
        gen = tokens()
        try:
            await _watch(Gone(), anext(gen))  # type: ignore[arg-type]
        except ClientGone:
            await gen.aclose()  # raised RuntimeError before the fix

    asyncio.run(run())
    assert closed == ["aborted"]
