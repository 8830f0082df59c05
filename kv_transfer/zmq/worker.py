"""The worker's half of the ZMQ connector: push a prefill's blocks layer by layer while the next
layer computes, and copy pushed KV into a decode request's blocks once all of it is here.

Sends run on the model's thread, between layers, and copy nothing: each run of consecutive
blocks of the layer just computed goes out as a view of the KV cache (ZMQ frames with
`copy=False`), and ZMQ's I/O thread moves it while the next layer computes. So the request's
blocks must outlive the sends: vLLM keeps them (`request_finished` said so) until the frames'
trackers say ZMQ is done with them, or the lease ends. (Gathering the blocks first cost the
model's thread 20 ms per 32 MiB, page faults mostly: the push ran at 600 MB/s.) Nothing is
ever waited for: a destination that does not keep up (its queue full) fails the transfer, and
the decode side, which then never sees `Done`, recomputes. Loads are checked once per engine
step, so an idle decode engine that waits for KV keeps stepping (vLLM steps while a request
waits for remote KV).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
import zmq

from kv_transfer.zmq.keys import connect_as_node, node_pair
from kv_transfer.zmq.plan import Load, Send, ZmqMetadata
from kv_transfer.zmq.staging import Pushed, Receiver, Staging
from kv_transfer.zmq.stats import ZmqKVConnectorStats
from kv_transfer.zmq.wire import Done, Drop, LayerBlocks, encoder

# Under "vllm.": this runs in vLLM's worker process, where only vLLM's loggers have a handler.
logger = logging.getLogger("vllm.splitmind." + __name__)

SEND_HWM = 10_000  # frames queued per destination before a send fails


def blocks_view(cache: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """A layer's cache with vLLM's (manager) blocks as dim 0. vLLM 0.32 lays caches out block
    first, possibly split into smaller kernel blocks (`group_kernel_blocks`)."""
    if cache.shape[0] == num_blocks:
        return cache
    if cache.shape[0] % num_blocks == 0:
        grouped: torch.Tensor = cache.unflatten(0, (num_blocks, -1))
        return grouped
    raise ValueError(f"KV cache layer of shape {tuple(cache.shape)} is not laid out block first "
                     f"({num_blocks} blocks): the ZMQ connector cannot address its blocks")


def runs(view: torch.Tensor, block_ids: list[int]) -> list[tuple[int, torch.Tensor]]:
    """(offset in `block_ids`, the blocks) for each run of consecutive ids: views of the cache
    where it is contiguous (vLLM's block-first layout is), else one gathered copy."""
    out: list[tuple[int, torch.Tensor]] = []
    start = 0
    for i in range(1, len(block_ids) + 1):
        if i == len(block_ids) or block_ids[i] != block_ids[i - 1] + 1:
            data = view[block_ids[start]:block_ids[start] + i - start]
            if data.device.type != "cpu" or not data.is_contiguous():
                data = data.cpu().contiguous()  # a copy: nothing then depends on the blocks
            out.append((start, data))
            start = i
    return out


@dataclass
class _Pending:
    load: Load
    since: float  # when vLLM scheduled the load: the decode request waits from here
    deadline: float


class ZmqWorker:
    def __init__(self, num_blocks: int, bind: str | None, lease_s: float, receive_timeout_s: float,
                 max_staging_bytes: int, keys_dir: str = "") -> None:
        self.num_blocks = num_blocks
        self.keys = node_pair(keys_dir) if keys_dir else None  # CURVE on both ends (kv_transfer.zmq.keys)
        self.receive_timeout_s = receive_timeout_s
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.staging = Staging(max_staging_bytes, lease_s)
        self.receiver = Receiver(self.ctx, bind, self.staging, self.keys) if bind else None
        if self.receiver is not None:
            self.receiver.start()
            logger.info("splitmind: KV over ZMQ, receiving on %s (%s)", bind, "CURVE" if self.keys else "plain TCP")
        self.kv: dict[str, torch.Tensor] = {}
        self.senders: dict[str, zmq.Socket[bytes]] = {}
        self.sent_layers: list[str] = []  # this step's, in order
        self.failed_sends: set[str] = set()  # transfer_ids whose push broke off
        self.lease_s = lease_s
        self.trackers: dict[str, list[zmq.MessageTracker]] = {}  # prefill req_id -> its frames out of the cache
        self.held: dict[str, float] = {}  # prefill req_id -> when its blocks go back whatever ZMQ did
        self.pending: dict[str, _Pending] = {}
        self.finished: set[str] = set()
        self.load_errors: set[int] = set()
        self.stats = ZmqKVConnectorStats()
        self._expired_seen = 0

    def register(self, kv_caches: dict[str, torch.Tensor]) -> None:
        self.kv = {name: blocks_view(t, self.num_blocks) for name, t in kv_caches.items()}

    # -- prefill: push -----------------------------------------------------------------------
    def save_layer(self, meta: ZmqMetadata, layer: str, kv_layer: torch.Tensor) -> None:
        if not meta.sends or layer in self.sent_layers:  # MTP's drafter may run a layer again
            return
        self.sent_layers.append(layer)
        view = blocks_view(kv_layer, self.num_blocks)
        dtype = str(view.dtype).removeprefix("torch.")
        for send in meta.sends:
            if not send.block_ids or send.transfer_id in self.failed_sends:
                continue
            for offset, data in runs(view, send.block_ids):
                header = LayerBlocks(send.transfer_id, layer, send.first + offset, dtype, list(data.shape))
                tracker = self._send(send, [encoder.encode(header), data.view(torch.uint8).numpy()], track=True)
                if tracker is not None:
                    self.trackers.setdefault(send.req_id, []).append(tracker)

    def wait_for_save(self, meta: ZmqMetadata) -> None:
        for send in meta.sends:
            if send.done_tokens and send.transfer_id not in self.failed_sends:
                self._send(send, [encoder.encode(Done(send.transfer_id, send.done_tokens, list(self.sent_layers)))])
            if send.done_tokens:
                self.failed_sends.discard(send.transfer_id)
        self.sent_layers.clear()

    def _send(self, send: Send, frames: list[Any], track: bool = False) -> zmq.MessageTracker | None:
        try:
            tracker = self._socket(send.push_to).send_multipart(frames, flags=zmq.NOBLOCK, copy=False, track=track)
            return tracker if isinstance(tracker, zmq.MessageTracker) else None
        except (zmq.ZMQError, ValueError) as exc:  # Again: the destination is not keeping up
            self.failed_sends.add(send.transfer_id)
            self.stats.record_failure()
            logger.warning("KV transfer %s to %s broke off: %s", send.transfer_id, send.push_to, exc)
            return None

    def take_sent(self) -> set[str]:
        """Prefill requests whose blocks vLLM may free now: ZMQ is done with every frame out of
        them, or their lease ended (a destination that never took them)."""
        now, out = time.monotonic(), set()
        for req_id, until in list(self.held.items()):
            if now > until or all(t.done for t in self.trackers.get(req_id, ())):
                del self.held[req_id]
                self.trackers.pop(req_id, None)
                out.add(req_id)
        return out

    def _socket(self, dest: str) -> zmq.Socket[bytes]:
        sock = self.senders.get(dest)
        if sock is None:
            if not dest.startswith(("tcp://", "ipc://")) or len(dest) > 256:
                raise ValueError(f"not a KV address: {dest[:80]!r}")
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, SEND_HWM)
            if self.keys is not None:
                connect_as_node(sock, self.keys)
            sock.connect(dest)
            self.senders[dest] = sock
        return sock

    # -- decode: load ------------------------------------------------------------------------
    def start_load(self, meta: ZmqMetadata) -> None:
        for req_id in meta.held:
            self.held[req_id] = time.monotonic() + self.lease_s
        for req_id in meta.cancels:
            pending = self.pending.pop(req_id, None)
            if pending is not None:
                self.staging.drop(pending.load.transfer_id)
                self.finished.add(req_id)  # vLLM frees the blocks once it hears the load is over
        for transfer_id in meta.drops:
            self.staging.drop(transfer_id)
        for dest, transfer_id in meta.remote_drops:
            self._send(Send(transfer_id, dest, [], 0), [encoder.encode(Drop(transfer_id))])
        now = time.monotonic()
        for load in meta.loads:
            self.pending[load.req_id] = _Pending(load, now, now + self.receive_timeout_s)
        self._try_loads()

    def take_finished(self) -> set[str]:
        self._try_loads()
        expired = self.staging.expired
        if expired > self._expired_seen:
            self.stats.record_expired(expired - self._expired_seen)
            self._expired_seen = expired
        out, self.finished = self.finished, set()
        return out

    def take_load_errors(self) -> set[int]:
        out, self.load_errors = self.load_errors, set()
        return out

    def _try_loads(self) -> None:
        now = time.monotonic()
        for req_id, p in list(self.pending.items()):
            got = self.staging.take(p.load.transfer_id)
            if got is None and now < p.deadline:
                continue
            if isinstance(got, Pushed):
                error = self._copy(p.load, got)
            else:
                error = got or f"not all of it came within {self.receive_timeout_s:g} s"
                self.staging.drop(p.load.transfer_id, "timed out")
            del self.pending[req_id]
            self.finished.add(req_id)
            if error is None and isinstance(got, Pushed):
                # The decode request's wait for its KV, as NIXL's pull time is: the push itself
                # overlapped prefill's compute, and only what was left of it (and the copy) is here.
                self.stats.record_load(time.monotonic() - p.since, got.nbytes)
            else:
                self.load_errors.update(p.load.block_ids)
                self.stats.record_failure()
                logger.warning("KV transfer %s for request %s failed, recomputed here: %s", p.load.transfer_id,
                               req_id, error)

    def _copy(self, load: Load, pushed: Pushed) -> str | None:
        assert pushed.done is not None
        if pushed.done.num_tokens < load.num_tokens:
            return f"{pushed.done.num_tokens} tokens pushed, {load.num_tokens} needed"
        if missing := sorted(set(self.kv) - set(pushed.layers)):
            return f"layers not pushed: {missing[:3]}"
        end = load.first + len(load.block_ids)
        for name, parts in pushed.layers.items():
            dst = self.kv.get(name)
            if dst is None:
                continue  # a layer this engine does not have (the prefill's drafter): not needed
            covered = 0
            for first, blocks in parts:
                lo, hi = max(first, load.first), min(first + blocks.shape[0], end)
                if lo >= hi:
                    continue
                if blocks.shape[1:] != dst.shape[1:] or str(blocks.dtype) != str(dst.dtype):
                    return f"layer {name}: blocks of {tuple(blocks.shape[1:])} {blocks.dtype} pushed, " \
                           f"{tuple(dst.shape[1:])} {dst.dtype} here"
                idx = torch.tensor(load.block_ids[lo - load.first:hi - load.first], device=dst.device)
                dst.index_copy_(0, idx, blocks[lo - first:hi - first].to(dst.device))
                covered = max(covered, hi)
            if covered < end:
                return f"layer {name}: blocks up to {covered} pushed, {end} needed"
        return None

    def close(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()
            self.receiver.join(timeout=2)
        for sock in self.senders.values():
            sock.close(linger=0)
        self.ctx.term()

