"""What a receiver on the internal plane does with a message it cannot use: drop it, say so, go on.

Nodes and gateways share these guards. A message with the wrong number of frames, a payload
that does not decode, or a peer whose handshake fails is one log line and nothing else: the
receive loop that met it keeps serving. Log lines are rate-limited per kind, because a hostile
or broken peer can send thousands a second, and they never include the payload (it may be
large, and it is the sender's, not ours to copy into logs).
"""

from __future__ import annotations

import logging
import time
from typing import Any, TypeVar

import msgspec
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

T = TypeVar("T")

# The largest message a node or gateway accepts; libzmq disconnects a peer that announces a
# larger one before it allocates anything. The largest legitimate message is a GenerateRequest
# whose prompt fills the context: msgpack spends at most 5 bytes on a token id, so a 1M-token
# prompt is 5 MiB. 64 MiB leaves room for any model's context and still bounds what one peer
# can make a node allocate.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
LOG_INTERVAL_S = 10.0  # at most one line per kind of drop in this time; the next line counts the rest
_DETAIL_CHARS = 200  # of a decoder's error message: it names the field, not the payload

HANDSHAKE_FAILURES = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                      | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class RateLimitedLog:
    """A logger that writes at most one line per kind every `interval_s` and counts the others."""

    def __init__(self, logger: logging.Logger, interval_s: float = LOG_INTERVAL_S) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last_s: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, kind: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last_s.get(kind)
        if last is not None and now - last < self.interval_s:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last_s[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            msg += " (and %d more like it since the last such line)"
            args = (*args, suppressed)
        self.logger.log(level, msg, *args)


def limit_message_size(*sockets: zmq.Socket[Any]) -> None:
    """Set before bind/connect: the limit applies to connections made afterwards."""
    for sock in sockets:
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)


def decode_frames(frames: list[bytes], num_frames: int, decoder: msgspec.msgpack.Decoder[T],
                  drops: RateLimitedLog, where: str) -> T | None:
    """The message in the last of `frames`, or None, logged, if there are not `num_frames` of
    them or the payload does not decode to the decoder's type."""
    if len(frames) != num_frames:
        drops.log(logging.WARNING, f"{where} frames", "%s: dropped a message of %d frames (expected %d)",
                  where, len(frames), num_frames)
        return None
    try:
        return decoder.decode(frames[-1])
    except Exception as exc:  # msgspec's DecodeError and ValidationError, or anything a hostile payload finds
        drops.log(logging.WARNING, f"{where} undecodable", "%s: dropped an undecodable message of %d bytes: %s: %s",
                  where, len(frames[-1]), type(exc).__name__, str(exc)[:_DETAIL_CHARS])
        return None


def describe_event(event: int, value: int) -> str:
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return f"authentication refused (ZAP status {value})"
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return "handshake failed: security mechanism mismatch (one side has CURVE keys, the other none)"
        try:
            name = zmq.Event(value).name or hex(value)
        except ValueError:
            name = hex(value)
        return f"handshake failed: protocol error {name}"
    if event == zmq.EVENT_DISCONNECTED:
        return f"disconnected (it closed, or sent a message over {MAX_MESSAGE_BYTES >> 20} MiB)"
    return "handshake failed (no detail)"


async def watch_handshakes(sock: zmq.asyncio.Socket, where: str, drops: RateLimitedLog,
                           events: int = HANDSHAKE_FAILURES) -> None:
    """Log every peer whose handshake with `sock` failed (a refused key, no key, not ZMTP at all),
    which ZMQ tells neither side's application, and with `EVENT_DISCONNECTED` in `events`, every
    peer that left (INFO). Runs until cancelled, which must come before `sock` closes."""
    monitor = sock.get_monitor_socket(events)
    try:
        while True:
            # the monitor is an inproc socket fed by libzmq: it waits for events, not on a peer
            event = parse_monitor_message(await monitor.recv_multipart())
            kind, value = int(event["event"]), int(event["value"])
            endpoint = event["endpoint"].decode(errors="replace")
            level = logging.INFO if kind == zmq.EVENT_DISCONNECTED else logging.WARNING
            drops.log(level, f"{where} {kind}", "%s: a peer on %s: %s", where, endpoint, describe_event(kind, value))
    finally:
        sock.disable_monitor()
        monitor.close()
