"""long2short's early exit in the router: probes beside the stream, agreement, the cut, and
nothing left on the node. A fake decode node, the real `Generation`, guard and prober."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from router.early_exit import EarlyExit
from router.pd import ROUTE_COLOCATED, Generation
from router.request_stream import RequestStream
from router.thinking import NO_BUDGET, ThinkingLimit
from splitmind.config import GatewayTuning
from splitmind.protocol import FinishReason, GenerateRequest, Sampling, TokenDelta, TokenLogprob

START, END, NL, WORD = 100, 101, 10, 1
NL_WORD = 11  # a token whose text starts a new line and goes on (`\nt`)
FORCED = (50, 51, END)
SUFFIX = (*FORCED, 60)  # forced ending + answer prefix
PROMPT = [7, START]
LINES = 20  # the sample thinks 20 lines of 3 words before it would end by itself
THOUGHT = [WORD, WORD, WORD, NL] * LINES + [END, 90, 91]  # then answers
ANSWER = [90, 91]


class FakeDecode:
    """Streams THOUGHT a line per chunk for the sample; a probe's answer is `probe_answer(context)`."""

    worker_id = "d0"

    def __init__(self, probe_answer: Callable[[list[int]], list[int]], probe_delay_s: float = 0.0,
                 chunk: int = 4, thought: list[int] = THOUGHT, probe_logprob: float = -0.01) -> None:
        self.thought = thought
        self.probe_logprob = probe_logprob  # of each token a probe generates, when it asks
        self.probe_answer = probe_answer
        self.probe_delay_s = probe_delay_s
        self.chunk = chunk  # tokens per delta: 4 is a line
        self.sent: list[GenerateRequest] = []
        self.aborted: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def open(self, req: GenerateRequest) -> RequestStream:
        self.sent.append(req)
        stream = RequestStream(req.request_id, self.worker_id)
        self.tasks.append(asyncio.create_task(self._answer(req, stream)))
        return stream

    async def _answer(self, req: GenerateRequest, stream: RequestStream) -> None:
        if "-p" in req.request_id:
            await asyncio.sleep(self.probe_delay_s)
            ids = self.probe_answer(req.prompt_token_ids)
            logprobs = (None if req.sampling.logprobs is None
                        else [TokenLogprob(t, self.probe_logprob) for t in ids])
            stream.push(TokenDelta(req.request_id, ids, FinishReason.STOP, logprobs=logprobs))
        elif "-c" in req.request_id:  # the continuation after a forced ending: the answer
            stream.push(TokenDelta(req.request_id, ANSWER, FinishReason.STOP))
        else:
            for i in range(0, len(self.thought), self.chunk):
                await asyncio.sleep(0.005)
                last = i + self.chunk >= len(self.thought)
                stream.push(TokenDelta(req.request_id, self.thought[i:i + self.chunk],
                                       FinishReason.STOP if last else None))

    def release(self, stream: RequestStream) -> None:
        pass

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)


def answer_of(ids: list[int]) -> str | None:
    return str(ids[0]) if ids and ids[0] >= 200 else None


def early_exit(every: int = 8, agree: int = 2, min_confidence: float = 0.0, grace: int = 2) -> EarlyExit:
    return EarlyExit(every=every, agree=agree, max_tokens=4, suffix_ids=SUFFIX, suffix_after_line_ids=SUFFIX[1:],
                     answer_of=answer_of, min_confidence=min_confidence, grace=grace, timeout_s=5)


def generation(node: FakeDecode, ee: EarlyExit | None, probes: list[tuple[str, int]]) -> Generation:
    limit = ThinkingLimit(budget=NO_BUDGET, grace=0, think_start_id=START, think_end_id=END, starts_in_reasoning=True,
                          line_end_ids=frozenset({NL}), forced_ids=FORCED, forced_after_line_ids=FORCED[1:],
                          reason="none", line_start_ids=frozenset({NL_WORD}))
    return Generation("r", PROMPT, Sampling(max_tokens=500), node, None, ROUTE_COLOCATED, "test",  # type: ignore[arg-type]
                      GatewayTuning(), thinking=limit, early_exit=ee, on_probe=lambda o, n: probes.append((o, n)))


def run(g: Generation) -> list[int]:
    async def main() -> list[int]:
        return [t async for d in g.stream() for t in d.token_ids]
    return asyncio.run(main())


def settles_after(words: int) -> Callable[[list[int]], list[int]]:
    """A probe answers 300 once the thinking has `words` reasoning tokens, a drifting guess before."""
    def answer(context: list[int]) -> list[int]:
        thought = sum(1 for t in context if t in (WORD, NL))
        return [300, 91] if thought >= words else [200 + thought, 91]
    return answer


def test_agreeing_probes_end_the_thinking_at_the_next_line_end() -> None:
    probes: list[tuple[str, int]] = []
    node = FakeDecode(settles_after(24))
    g = generation(node, early_exit(), probes)
    out = run(g)
    cut = out.index(FORCED[1])  # the ending, after a line end: its leading newline dropped
    assert out[:cut] == THOUGHT[:cut], "the stream before the exit is the sample's own"
    assert out[cut - 1] == NL and out[cut:] == [*FORCED[1:], *ANSWER]
    assert 24 + 8 <= cut < len(THOUGHT) - 3, "two agreeing probes (at 24 and 32 reasoning tokens or later) first"
    assert g.forced_endings == ["early_exit"]
    sent = [r for r in node.sent if "-p" in r.request_id]
    assert all(r.sampling.temperature == 0.0 and r.sampling.max_tokens == 4 for r in sent)
    assert all(r.prompt_token_ids[:len(PROMPT)] == PROMPT for r in sent)
    assert sent[0].prompt_token_ids[-len(SUFFIX[1:]):] == list(SUFFIX[1:]), "cut at a line end: no blank line"
    assert g.prober is not None and g.prober.agreed
    assert g.prober.probe_tokens == sum(n for _, n in probes) == 5 * len(sent), "3 suffix + 2 answer tokens each"


def test_probes_see_the_thinking_up_to_a_line_end_whatever_the_chunks() -> None:
    """Chunks of 3 tokens against lines of 4 (MTP's deltas do not follow lines either)."""
    node = FakeDecode(settles_after(10_000), chunk=3)
    g = generation(node, early_exit(every=6), [])
    assert run(g) == THOUGHT
    contexts = [r.prompt_token_ids[len(PROMPT):-len(SUFFIX[1:])] for r in node.sent if "-p" in r.request_id]
    assert len(contexts) >= 5
    for ctx in contexts:
        assert ctx == THOUGHT[:len(ctx)] and ctx[-1] == NL, ctx
    assert len({len(c) for c in contexts}) == len(contexts), "each probe sees a new line end"
    assert all(len(c) >= 6 * (i + 1) for i, c in enumerate(contexts)), "one per `every` reasoning tokens at most"


def test_a_newline_glued_to_the_next_word_is_a_line_end_too() -> None:
    """The bundled model's tokenizer writes `so far 0__` then `\nt` `ens`: the line ended before
    that token, and a probe there gets the ending with its leading newline."""
    glued = [WORD, WORD, WORD] + [NL_WORD, WORD, WORD] * 20 + [END, 90, 91]
    node = FakeDecode(settles_after(10_000), chunk=2, thought=glued)
    g = generation(node, early_exit(every=6), [])
    assert run(g) == glued
    probes = [r.prompt_token_ids[len(PROMPT):] for r in node.sent if "-p" in r.request_id]
    assert len(probes) >= 5
    for ids in probes:
        ctx = ids[:-len(SUFFIX)]
        assert ids[-len(SUFFIX):] == list(SUFFIX), "the ending starts the new line itself"
        assert ctx == glued[:len(ctx)] and glued[len(ctx)] == NL_WORD, ctx


def test_probes_that_never_agree_leave_the_stream_as_it_was() -> None:
    probes: list[tuple[str, int]] = []
    node = FakeDecode(settles_after(10_000))
    g = generation(node, early_exit(), probes)
    assert run(g) == THOUGHT
    assert g.forced_endings == [] and len(probes) >= 5 and {o for o, _ in probes} == {"answer"}


def test_a_probe_still_out_when_the_sample_ends_is_in_its_usage() -> None:
    """The API reads `probe_tokens` for the usage as soon as the sample's stream ends; the probe
    out at that moment is cancelled then, and its abort still awaited. Its tokens counted only
    after that abort, so the usage left them out (a CI run saw a sample of 271 reasoning tokens
    report 0 probe tokens)."""
    probes: list[tuple[str, int]] = []
    node = FakeDecode(settles_after(10_000), probe_delay_s=10)  # a probe that would take 10 s

    async def main() -> int:
        g = generation(node, early_exit(), probes)
        assert [t async for d in g.stream() for t in d.token_ids] == THOUGHT
        assert g.prober is not None
        at_the_end = g.prober.probe_tokens
        await asyncio.sleep(0.05)
        for t in node.tasks:
            t.cancel()
        return at_the_end

    at_the_end = asyncio.run(asyncio.wait_for(main(), 5))
    assert [r.request_id for r in node.sent if "-p" in r.request_id] == ["r-p1"], "one probe, out till the end"
    assert at_the_end == len(SUFFIX[1:]), "its suffix was sent: it counts"
    assert probes == [("cancelled", at_the_end)]


def test_a_probe_with_no_answer_breaks_the_agreement() -> None:
    probes: list[tuple[str, int]] = []
    # Every other probe, by the order they are asked in: by the probes' context (the lines it
    # held) two probes in a row could both see an odd count when a loaded loop merged two lines.
    answers = itertools.cycle([[300], [5]])
    node = FakeDecode(lambda ctx: next(answers))
    g = generation(node, early_exit(every=4, agree=2), probes)
    assert run(g) == THOUGHT, "the same answer twice, but never twice in a row"
    assert {o for o, _ in probes} == {"answer", "no_answer"}


def test_the_exit_finishes_a_long_line() -> None:
    """Lines of 20 tokens streamed a token at a time: after agreement the line in progress runs
    to its end (the exit's own grace), not 2 tokens on into the middle of the result. Probes take
    30 ms, a few tokens: with a grace of 2 the cut came 8 tokens into a line."""
    long_lines = [WORD] * 19 + [NL]
    thought = long_lines * 10 + [END, 90, 91]
    node = FakeDecode(settles_after(40), chunk=1, thought=thought, probe_delay_s=0.03)
    g = generation(node, early_exit(every=20, grace=64), [])
    out = run(g)
    cut = out.index(FORCED[1])
    assert g.forced_endings == ["early_exit"] and cut < 200
    assert out[cut - 1] == NL and out[:cut] == thought[:cut], "cut where a line ends"


def test_unsure_answers_do_not_agree() -> None:
    """DEER's gate: the same answer every time, but each at probability 0.37 < 0.9."""
    probes: list[tuple[str, int]] = []
    node = FakeDecode(settles_after(0), probe_logprob=-1.0)
    g = generation(node, early_exit(every=4, min_confidence=0.9), probes)
    assert run(g) == THOUGHT and g.forced_endings == []
    assert len(probes) >= 5 and {o for o, _ in probes} == {"unsure"}
    assert all(r.sampling.logprobs == 0 for r in node.sent if "-p" in r.request_id), "probes ask for logprobs"


def test_sure_answers_agree_through_the_gate() -> None:
    probes: list[tuple[str, int]] = []
    node = FakeDecode(settles_after(24), probe_logprob=-0.01)  # 0.99 a token
    g = generation(node, early_exit(min_confidence=0.9), probes)
    out = run(g)
    assert g.forced_endings == ["early_exit"] and len(out) < len(THOUGHT)
    assert "answer" in {o for o, _ in probes} and "unsure" not in {o for o, _ in probes}


def test_without_the_gate_probes_ask_for_no_logprobs() -> None:
    node = FakeDecode(settles_after(24))
    run(generation(node, early_exit(), []))
    probes = [r for r in node.sent if "-p" in r.request_id]
    assert probes and all(r.sampling.logprobs is None for r in probes)


def test_no_early_exit_no_probes() -> None:
    node = FakeDecode(settles_after(0))
    g = generation(node, None, [])
    assert run(g) == THOUGHT and [r.request_id for r in node.sent] == ["r"]


def test_a_client_that_leaves_cancels_the_probe_out_and_aborts_it_on_the_node() -> None:
    probes: list[tuple[str, int]] = []
    node = FakeDecode(settles_after(10_000), probe_delay_s=10)  # a probe that would take 10 s

    async def main() -> None:
        g = generation(node, early_exit(every=4), probes)
        stream = g.stream()
        async for _ in stream:
            if any("-p" in r.request_id for r in node.sent):
                break
        await stream.aclose()
        for t in node.tasks:
            t.cancel()

    asyncio.run(asyncio.wait_for(main(), 5))
    probe_ids = [r.request_id for r in node.sent if "-p" in r.request_id]
    assert probe_ids and set(probe_ids) <= set(node.aborted), "the probe out is aborted on the node"
    assert "r" in node.aborted and probes[-1][0] == "cancelled"


def test_a_sample_cancelled_twice_while_a_probe_is_out_is_still_aborted() -> None:
    """The server cancels a departed client's task, and may cancel it again while it cleans up:
    the sample's own abort must not wait behind the probe's (it did, and leaked open streams)."""
    node = FakeDecode(settles_after(10_000), probe_delay_s=10)

    async def main() -> None:
        g = generation(node, early_exit(every=4), [])

        async def consume() -> None:
            async for _ in g.stream():
                pass

        task = asyncio.create_task(consume())
        async with asyncio.timeout(2):
            while not any("-p" in r.request_id for r in node.sent):  # noqa: ASYNC110 (the fake has no event)
                await asyncio.sleep(0.001)
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait([task], timeout=2)
        await asyncio.sleep(0.05)
        for t in node.tasks:
            t.cancel()

    asyncio.run(asyncio.wait_for(main(), 5))
    assert "r" in node.aborted and any("-p" in a for a in node.aborted)
