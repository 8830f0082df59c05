import asyncio

import pytest

from router.client import RequestStream
from splitmind.errors import WorkerError, WorkerRejectedError, WorkerTimeoutError
from splitmind.protocol import ErrorCode, ErrorReply, FinishReason, TokenDelta


def test_unread_deltas_merge_into_one() -> None:
    async def run() -> TokenDelta:
        s = RequestStream("r", "w")
        s.push(TokenDelta("r", [1, 2]))
        s.push(TokenDelta("r", [3]))
        s.push(TokenDelta("r", [4], FinishReason.STOP))
        return await s.next(1)

    d = asyncio.run(run())
    assert d.token_ids == [1, 2, 3, 4] and d.finish_reason == FinishReason.STOP


@pytest.mark.parametrize("code, exc", [(ErrorCode.BAD_REQUEST, WorkerRejectedError),
                                       (ErrorCode.INTERNAL, WorkerError)])
def test_errors_become_types(code: ErrorCode, exc: type[Exception]) -> None:
    async def run() -> None:
        s = RequestStream("r", "w")
        s.push(ErrorReply("r", code, "boom"))
        await s.next(1)

    with pytest.raises(exc):
        asyncio.run(run())


def test_silence_times_out() -> None:
    with pytest.raises(WorkerTimeoutError):
        asyncio.run(RequestStream("r", "w").next(0.05))
