"""A plan's samples as one stream: `(choice index, TokenDelta)` in arrival order.

One pump task per sample reads its `Generation.stream()` into a one-slot mailbox per sample,
merging deltas while the reader lags (the `RequestStream` idea one level up): a slow client
costs longer token lists, never a queue, and a pump never waits for the reader, so no sample's
timeouts depend on how fast the client reads. `close(i)` ends one sample early (its stop string
matched) and `aclose()` all of them; either way the generator's `finally` aborts the request on
every worker that still holds it. If the reader is dropped without `aclose()` (a response that
never started), garbage collection cancels the pumps. A single sample is read directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator

from splitmind.protocol import TokenDelta, merge_deltas


class _Mailboxes:
    """What the pumps hand over: pending deltas per sample, and how each sample ended."""

    def __init__(self) -> None:
        self.pending: dict[int, TokenDelta] = {}
        self.ended: dict[int, BaseException | None] = {}  # None: finished normally
        self.order: deque[int] = deque()  # samples with something to read, oldest first
        self.ready = asyncio.Event()

    def put(self, index: int, delta: TokenDelta) -> None:
        prev = self.pending.get(index)
        self.pending[index] = delta if prev is None else merge_deltas(prev, delta)
        if prev is None:
            self._notify(index)

    def end(self, index: int, error: BaseException | None) -> None:
        self.ended[index] = error
        if index not in self.pending:
            self._notify(index)

    def _notify(self, index: int) -> None:
        self.order.append(index)
        self.ready.set()


async def _pump(index: int, stream: AsyncGenerator[TokenDelta, None], box: _Mailboxes) -> None:
    try:
        async for delta in stream:
            box.put(index, delta)
        box.end(index, None)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # handed to the reader, who decides what the request becomes
        box.end(index, exc)
    finally:
        await stream.aclose()


class SampleStreams:
    def __init__(self, streams: list[AsyncGenerator[TokenDelta, None]]) -> None:
        self._streams = streams
        self._open = set(range(len(streams)))
        self._box = _Mailboxes()
        # The pumps hold the mailboxes, not this object, so dropping it lets `__del__` stop them.
        self._pumps: dict[int, asyncio.Task[None]] = {}
        if len(streams) > 1:
            self._pumps = {i: asyncio.create_task(_pump(i, s, self._box)) for i, s in enumerate(streams)}

    def __aiter__(self) -> SampleStreams:
        return self

    async def __anext__(self) -> tuple[int, TokenDelta]:
        """The next delta of any open sample; raises the first error a sample raises."""
        if not self._pumps:
            if self._open:
                try:
                    return 0, await anext(self._streams[0])
                except StopAsyncIteration:
                    self._open.clear()
            raise StopAsyncIteration
        box = self._box
        while self._open:
            while not box.order:
                box.ready.clear()
                await box.ready.wait()
            index = box.order.popleft()
            delta = box.pending.pop(index, None)
            if index not in self._open:
                continue
            if delta is not None:
                if index in box.ended:
                    box.order.append(index)  # its end comes after this delta
                return index, delta
            error = box.ended[index]
            self._open.discard(index)
            if error is not None:
                raise error
        raise StopAsyncIteration

    async def close(self, index: int) -> None:
        """End one sample now (aborting it on its workers); the others go on."""
        self._open.discard(index)
        pump = self._pumps.get(index)
        if pump is None:
            await self._streams[index].aclose()
            return
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump

    async def aclose(self) -> None:
        self._open.clear()
        for pump in self._pumps.values():
            pump.cancel()
        for pump in self._pumps.values():
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        if not self._pumps:
            await self._streams[0].aclose()

    def __del__(self) -> None:
        for pump in self._pumps.values():
            pump.cancel()
