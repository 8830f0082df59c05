"""`SampleStreams`: n samples read as one stream, merged while the reader lags, each closable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from router.samples import SampleStreams
from splitmind.protocol import FinishReason, TokenDelta


class Sample:
    """A fake `Generation.stream()`: yields its ids one by one; records how it ended."""

    def __init__(self, ids: list[int], gap_s: float = 0.0, fail_at: int | None = None) -> None:
        self.ids, self.gap_s, self.fail_at = ids, gap_s, fail_at
        self.closed = False

    async def stream(self) -> AsyncGenerator[TokenDelta, None]:
        try:
            for i, tid in enumerate(self.ids):
                await asyncio.sleep(self.gap_s)
                if i == self.fail_at:
                    raise RuntimeError("worker died")
                last = i == len(self.ids) - 1
                yield TokenDelta("r", [tid], FinishReason.STOP if last else None)
        finally:
            self.closed = True  # where Generation.stream() aborts on its workers


async def read_all(streams: SampleStreams) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    async for index, delta in streams:
        out.setdefault(index, []).extend(delta.token_ids)
    return out


def test_every_samples_tokens_arrive_under_its_index() -> None:
    async def main() -> dict[int, list[int]]:
        samples = [Sample([1, 2, 3], 0.001), Sample([4, 5], 0.002), Sample([6], 0.0)]
        return await read_all(SampleStreams([s.stream() for s in samples]))

    assert asyncio.run(main()) == {0: [1, 2, 3], 1: [4, 5], 2: [6]}


def test_a_lagging_reader_gets_merged_deltas_not_a_queue() -> None:
    async def main() -> list[tuple[int, list[int], FinishReason | None]]:
        streams = SampleStreams([Sample(list(range(50))).stream(), Sample([7]).stream()])
        await asyncio.sleep(0.05)  # the pumps run ahead
        return [(i, d.token_ids, d.finish_reason) async for i, d in streams]

    got = asyncio.run(main())
    assert sorted(i for i, *_ in got) == [0, 1], "one merged delta per sample"
    assert dict((i, ids) for i, ids, _ in got) == {0: list(range(50)), 1: [7]}
    assert all(finish == FinishReason.STOP for *_, finish in got)


def test_closing_one_sample_aborts_it_and_the_others_go_on() -> None:
    async def main() -> tuple[dict[int, list[int]], list[bool]]:
        samples = [Sample(list(range(100)), 0.001), Sample([1, 2, 3], 0.002)]
        streams = SampleStreams([s.stream() for s in samples])
        out: dict[int, list[int]] = {}
        async for index, delta in streams:
            out.setdefault(index, []).extend(delta.token_ids)
            if index == 0 and len(out[0]) >= 3:
                await streams.close(0)
        return out, [s.closed for s in samples]

    out, closed = asyncio.run(main())
    assert 3 <= len(out[0]) < 100 and out[1] == [1, 2, 3]
    assert closed == [True, True]


def test_a_failing_sample_fails_the_read_and_aclose_stops_the_rest() -> None:
    async def main() -> list[bool]:
        samples = [Sample(list(range(1000)), 0.001), Sample([1, 2, 3], 0.001, fail_at=1)]
        streams = SampleStreams([s.stream() for s in samples])
        with pytest.raises(RuntimeError, match="worker died"):
            await read_all(streams)
        await streams.aclose()
        return [s.closed for s in samples]

    assert asyncio.run(main()) == [True, True]


def test_a_dropped_reader_stops_its_pumps() -> None:
    """A response that never started iterating must not leave samples generating."""
    async def main() -> list[bool]:
        samples = [Sample(list(range(1000)), 0.001), Sample(list(range(1000)), 0.001)]
        streams = SampleStreams([s.stream() for s in samples])
        await asyncio.sleep(0.01)
        del streams
        await asyncio.sleep(0.05)
        return [s.closed for s in samples]

    assert asyncio.run(main()) == [True, True]


def test_one_sample_is_read_directly() -> None:
    async def main() -> tuple[dict[int, list[int]], bool]:
        sample = Sample([1, 2])
        streams = SampleStreams([sample.stream()])
        out = await read_all(streams)
        await streams.aclose()
        return out, sample.closed

    assert asyncio.run(main()) == ({0: [1, 2]}, True)
