"""A ZMQ context whose sockets never connect: `WorkerClient`s for routing tests and
bench/routing.py, with the real client and registry code and no network."""

from __future__ import annotations


class NullSocket:
    """A socket never connected: what a `WorkerClient` that was not started does with one."""

    def setsockopt(self, option: int, value: object) -> None:
        pass

    def close(self) -> None:
        pass

    async def send(self, data: bytes) -> None:
        pass


class NullContext:
    def socket(self, kind: int) -> NullSocket:
        return NullSocket()
