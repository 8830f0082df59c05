import asyncio

import pytest

from router.request_stream import RequestStream
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


def test_a_reads_wait_counts_from_its_first_unread_delta() -> None:
    """`on_wait` (the gateway's splitmind_output_wait_seconds) hears once per read, how long the
    read's output sat unread: from the first of its merged deltas, not the last."""
    async def run() -> tuple[list[float], list[int]]:
        waits: list[float] = []
        s = RequestStream("r", "w", on_wait=waits.append)
        s.push(TokenDelta("r", [1]))
        await asyncio.sleep(0.05)
        s.push(TokenDelta("r", [2]))
        await asyncio.sleep(0.05)
        first = await s.next(1)
        reader = asyncio.ensure_future(s.next(1))
        await asyncio.sleep(0.01)
        s.push(TokenDelta("r", [3]))  # taken as soon as the waiting reader runs
        return waits, first.token_ids + (await reader).token_ids

    waits, tokens = asyncio.run(run())
    assert tokens == [1, 2, 3] and len(waits) == 2
    assert 0.1 <= waits[0] < 1 and 0 <= waits[1] < 0.05, waits


@pytest.mark.parametrize("code, exc", [(ErrorCode.BAD_REQUEST, WorkerRejectedError),
                                       (ErrorCode.INTERNAL, WorkerError)])
def test_errors_become_types(code: ErrorCode, exc: type[Exception]) -> None:
    async def run() -> None:
        s = RequestStream("r", "w")
        s.push(ErrorReply("r", code, "boom"))
        await s.next(1)

    with pytest.raises(exc):
        asyncio.run(run())


def test_silence_times_out_naming_the_phase() -> None:
    with pytest.raises(WorkerTimeoutError, match=r"worker w: no next token \(gateway.stream_idle_timeout_s\) "
                                                 r"for request r in 0.05s"):
        asyncio.run(RequestStream("r", "w").next(0.05, "next token (gateway.stream_idle_timeout_s)"))


def test_the_silence_timeout_counts_from_each_wait_and_its_timer_moves_lazily() -> None:
    """One timer per stream, re-armed only when it fires before the current wait's deadline:
    tokens every 0.1 s never trip a 0.25 s timeout however long the stream runs, a later wait
    with a shorter timeout than the timer armed for still gets its own, and silence then trips
    it within its timeout, not the earlier wait's."""
    async def run() -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        s = RequestStream("r", "w")

        async def feed() -> None:
            for i in range(12):
                await asyncio.sleep(0.1)
                s.push(TokenDelta("r", [i]))

        feeder = asyncio.ensure_future(feed())
        got = []
        while len(got) < 12:
            got += (await s.next(0.25)).token_ids
        await feeder
        s2 = RequestStream("r2", "w")
        waiter = asyncio.ensure_future(s2.next(30))  # arms a timer 30 s out
        await asyncio.sleep(0.05)
        s2.push(TokenDelta("r2", [1]))
        await waiter
        t0 = loop.time()
        with pytest.raises(WorkerTimeoutError):
            await s2.next(0.2)  # earlier than the armed timer: re-armed for it
        took = loop.time() - t0
        return len(got), took

    n, took = asyncio.run(run())
    assert n == 12
    assert 0.2 <= took < 1.0, took


def test_output_that_arrives_as_the_timer_fires_is_returned_not_lost() -> None:
    """The timer fires and a delta arrives in the same turn of the loop, before the waiter runs."""
    import time

    async def run() -> list[int]:
        s = RequestStream("r", "w")
        waiter = asyncio.ensure_future(s.next(0.01))
        await asyncio.sleep(0)  # waiting now, its timer armed
        time.sleep(0.02)  # noqa: ASYNC251 - the loop is busy past the deadline, on purpose
        s._on_timer()  # what the timer does when it runs: due, so it times the wait out
        s.push(TokenDelta("r", [7]))  # and output arrives in the same turn
        return (await waiter).token_ids

    assert asyncio.run(run()) == [7]


def test_a_node_streaming_tokens_is_alive_though_its_heartbeat_is_late() -> None:
    """Only silence on every plane makes a worker unhealthy: replies count as signs of life."""
    import zmq
    import zmq.asyncio

    from router.client import WorkerClient
    from splitmind.config import WorkerAddress
    from splitmind.launcher import free_port
    from splitmind.protocol import GenerateRequest, NodeStats, Role, Sampling, encoder, to_node_decoder

    async def run() -> list[bool]:
        ctx = zmq.asyncio.Context()
        rpc, pub = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PUB)
        address = WorkerAddress("d0", Role.DECODE, f"tcp://127.0.0.1:{free_port('127.0.0.1')}",
                                f"tcp://127.0.0.1:{free_port('127.0.0.1')}")
        rpc.bind(address.rpc_address)
        pub.bind(address.stats_address)
        worker = WorkerClient(address, ctx)
        worker.start()
        worker.info = object()  # type: ignore[assignment]  # the handshake's result; not under test
        healthy = []
        try:
            for _ in range(100):  # until the subscription is up and one heartbeat arrived
                await pub.send(encoder.encode(NodeStats("d0", Role.DECODE, 1, 1)))
                await asyncio.sleep(0.02)
                if worker.last_seen_s is not None:
                    break
            stream = await worker.open(GenerateRequest("r", [1], Sampling(max_tokens=100)))
            identity, payload = await rpc.recv_multipart()
            assert to_node_decoder.decode(payload).request_id == "r"
            for _ in range(8):  # tokens for 0.8 s, no heartbeat, against a 0.3 s timeout
                await rpc.send_multipart([identity, encoder.encode(TokenDelta("r", [5]))])
                await asyncio.sleep(0.1)
                healthy.append(worker.is_healthy(0.3))
            await stream.next(1)
            await asyncio.sleep(0.5)  # then silence on both planes
            healthy.append(worker.is_healthy(0.3))
        finally:
            await worker.close()
            rpc.close()
            pub.close()
            ctx.term()
        return healthy

    healthy = asyncio.run(run())
    assert healthy[:-1] == [True] * 8 and healthy[-1] is False


def test_tokens_in_flight_follow_open_tokens_release_and_abort() -> None:
    """The gateway's own load on a worker (router/policies/least_tokens.py): prompt tokens on open,
    generated tokens as they arrive, all of a request's tokens gone when it is released or aborted."""
    import zmq
    import zmq.asyncio

    from router.client import WorkerClient
    from splitmind.config import WorkerAddress
    from splitmind.protocol import GenerateRequest, Role, Sampling

    async def run() -> list[int]:
        ctx = zmq.asyncio.Context()
        node = ctx.socket(zmq.ROUTER)
        port = node.bind_to_random_port("tcp://127.0.0.1")
        worker = WorkerClient(WorkerAddress("d0", Role.DECODE, f"tcp://127.0.0.1:{port}", "tcp://127.0.0.1:9"), ctx)
        worker.dealer.connect(worker.address.rpc_address)  # sends need a peer; nothing else runs
        seen = []
        try:
            a = await worker.open(GenerateRequest("a", [1] * 10, Sampling(max_tokens=5)))
            await worker.open(GenerateRequest("b", [1] * 7, Sampling(max_tokens=5)))
            seen.append(worker.view().tokens_in_flight)
            a.push(TokenDelta("a", [4, 5]))
            seen.append(worker.view().tokens_in_flight)
            worker.release(a)
            seen.append(worker.view().tokens_in_flight)
            await worker.abort("b")
            seen.append(worker.view().tokens_in_flight)
            worker.release(a)  # twice: nothing more to take away
            seen.append(worker.view().requests)
        finally:
            node.close(0)
            worker.dealer.close()
            worker.sub.close()
            ctx.term()
        return seen

    assert asyncio.run(run()) == [17, 19, 7, 0, 0]


def test_a_burst_of_replies_is_read_whole_in_order_across_batches() -> None:
    """The receive loop reads what is already queued without awaiting each message, at most
    `RECV_BATCH` per wake-up (router/client.py): a burst several batches long arrives whole, in
    order, merged into the one-slot mailbox, and two requests' replies stay apart."""
    import zmq
    import zmq.asyncio

    from router.client import RECV_BATCH, WorkerClient
    from splitmind.config import WorkerAddress
    from splitmind.protocol import GenerateRequest, Role, Sampling, encoder

    burst = 3 * RECV_BATCH + 7

    async def run() -> tuple[list[int], list[int]]:
        ctx = zmq.asyncio.Context()
        node = ctx.socket(zmq.ROUTER)
        node.setsockopt(zmq.ROUTER_MANDATORY, 1)  # as a node's: a full queue waits, never drops
        port = node.bind_to_random_port("tcp://127.0.0.1")
        worker = WorkerClient(WorkerAddress("d0", Role.DECODE, f"tcp://127.0.0.1:{port}", "tcp://127.0.0.1:9"), ctx)
        worker.start()
        try:
            a = await worker.open(GenerateRequest("a", [1], Sampling(max_tokens=burst)))
            b = await worker.open(GenerateRequest("b", [1], Sampling(max_tokens=burst)))
            identity, _ = await node.recv_multipart()
            await node.recv_multipart()
            for i in range(burst):  # queued faster than the loop wakes
                await node.send_multipart([identity, encoder.encode(TokenDelta("a", [i]))])
                await node.send_multipart([identity, encoder.encode(TokenDelta("b", [burst - i]))])
            got_a: list[int] = []
            got_b: list[int] = []
            while len(got_a) < burst or len(got_b) < burst:
                if len(got_a) < burst:
                    got_a += (await a.next(5)).token_ids
                if len(got_b) < burst:
                    got_b += (await b.next(5)).token_ids
        finally:
            await worker.close()
            node.close(0)
            ctx.term()
        return got_a, got_b

    got_a, got_b = asyncio.run(run())
    assert got_a == list(range(burst))
    assert got_b == [burst - i for i in range(burst)]
