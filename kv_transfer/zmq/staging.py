"""The decode engine's side of the wire: a thread that receives pushed KV into `Staging`.

KV arrives before the decode request does (the gateway names the decode node in the prefill
request, so prefill pushes while it computes), which is why it is held here, outside vLLM's
blocks, until the worker copies it into the blocks vLLM allocated. Received frames are kept as
they came (zero-copy: tensors are views of the ZMQ frames); the one copy is the one into the
blocks. The store is bounded in bytes, and a transfer nobody claims is dropped after its lease.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from dataclasses import dataclass, field

import msgspec
import torch
import zmq

from kv_transfer.zmq import keys as node_keys
from kv_transfer.zmq.wire import BadFrame, Done, Drop, LayerBlocks, check, decoder
from splitmind import curve

# Under "vllm.": this runs in vLLM's worker process, where only vLLM's loggers have a handler.
logger = logging.getLogger("vllm.splitmind." + __name__)

# The frames are read-only and so are the tensors over them; they are only read (the copy into
# vLLM's blocks), so torch's warning about writing through them does not apply.
warnings.filterwarnings("ignore", message="The given buffer is not writable")
TOMBSTONE_S = 60.0  # a dropped transfer's late frames are ignored for this long


@dataclass
class Pushed:
    """One transfer as received: per layer, (first block position, blocks) in arrival order."""

    started: float
    layers: dict[str, list[tuple[int, torch.Tensor]]] = field(default_factory=dict)
    nbytes: int = 0
    done: Done | None = None


class Staging:
    """Thread-safe: the receiver thread adds, the worker's main thread takes."""

    def __init__(self, max_bytes: int, lease_s: float) -> None:
        self.max_bytes = max_bytes
        self.lease_s = lease_s
        self._lock = threading.Lock()
        self._entries: dict[str, Pushed] = {}
        self._gone: dict[str, tuple[float, str]] = {}  # transfer_id -> (until, why): dropped or refused
        self.nbytes = 0
        self.expired = 0  # transfers dropped at their lease's end, unclaimed (metrics)

    def add(self, frame: LayerBlocks, blocks: torch.Tensor) -> None:
        size = blocks.numel() * blocks.element_size()
        with self._lock:
            if frame.transfer_id in self._gone:
                return
            entry = self._entries.get(frame.transfer_id)
            if entry is None:
                entry = self._entries[frame.transfer_id] = Pushed(time.monotonic())
            if self.nbytes + size > self.max_bytes:
                self._forget(frame.transfer_id, f"refused: staging full ({self.max_bytes} bytes)")
                logger.warning("KV transfer %s refused: staging holds %d of %d bytes", frame.transfer_id,
                               self.nbytes, self.max_bytes)
                return
            entry.layers.setdefault(frame.layer, []).append((frame.first, blocks))
            entry.nbytes += size
            self.nbytes += size

    def finish(self, done: Done) -> None:
        with self._lock:
            entry = self._entries.get(done.transfer_id)
            if entry is not None:
                entry.done = done

    def drop(self, transfer_id: str, why: str = "dropped") -> None:
        with self._lock:
            self._forget(transfer_id, why)

    def take(self, transfer_id: str) -> Pushed | str | None:
        """The whole transfer once its `Done` came (and it leaves the store); why it never will
        (a string); None while it is still coming."""
        with self._lock:
            entry = self._entries.get(transfer_id)
            if entry is not None and entry.done is not None:
                del self._entries[transfer_id]
                self.nbytes -= entry.nbytes
                return entry
            gone = self._gone.get(transfer_id)
            return gone[1] if gone is not None else None

    def expire(self, now: float) -> None:
        with self._lock:
            for tid in [t for t, e in self._entries.items() if now - e.started > self.lease_s]:
                self._forget(tid, f"expired: not claimed within its {self.lease_s:g} s lease")
                self.expired += 1
            for tid in [t for t, (until, _) in self._gone.items() if until < now]:
                del self._gone[tid]

    def _forget(self, transfer_id: str, why: str) -> None:
        entry = self._entries.pop(transfer_id, None)
        if entry is not None:
            self.nbytes -= entry.nbytes
        self._gone[transfer_id] = (time.monotonic() + TOMBSTONE_S, why)


class Receiver(threading.Thread):
    """Binds the decode engine's KV socket (PULL) and files what arrives into `staging`."""

    POLL_MS = 500  # how often an idle receiver looks up (to stop, to expire leases)

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], bind: str, staging: Staging,
                 keys: curve.KeyPair | None = None) -> None:
        super().__init__(name="splitmind-kv-receiver", daemon=True)
        self.staging = staging
        self.sock = ctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.auth = node_keys.serve(ctx, self.sock, keys) if keys is not None else None
        self.sock.bind(bind)
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                if self.sock.poll(self.POLL_MS):
                    self.handle(self.sock.recv_multipart(copy=False))
                self.staging.expire(time.monotonic())
        except zmq.ContextTerminated:
            pass
        finally:
            self.sock.close(linger=0)
            if self.auth is not None:
                self.auth.stop()

    def handle(self, frames: list[zmq.Frame]) -> None:
        try:
            frame = decoder.decode(frames[0].buffer)
            data = frames[1] if len(frames) == 2 and isinstance(frame, LayerBlocks) else None
            if len(frames) != (2 if isinstance(frame, LayerBlocks) else 1):
                raise BadFrame(f"{len(frames)} frames for a {type(frame).__name__}")
            check(frame, len(data.buffer) if data is not None else None)
        except (msgspec.DecodeError, BadFrame) as exc:
            logger.warning("KV socket: a bad frame was dropped: %s", exc)
            return
        if isinstance(frame, LayerBlocks):
            assert data is not None
            blocks = torch.frombuffer(data.buffer, dtype=getattr(torch, frame.dtype)).view(frame.shape)
            self.staging.add(frame, blocks)
        elif isinstance(frame, Done):
            self.staging.finish(frame)
        elif isinstance(frame, Drop):
            self.staging.drop(frame.transfer_id)

    def stop(self) -> None:
        self._stop_event.set()
