"""The worker's half of the ZMQ connector: push a prefill's blocks layer by layer while the next
layer computes, and copy pushed KV into a decode request's blocks once all of it is here.

Sends run on the model's thread, between layers: `index_select` gathers the request's blocks of
the layer just computed (the only copy on the sending side) and ZMQ's I/O thread moves them
while the next layer computes. Nothing is ever waited for: a destination that does not keep up
(its queue full) fails the transfer, and the decode side, which then never sees `Done`,
recomputes. Loads are checked once per engine step, so an idle decode engine that waits for KV
keeps stepping (vLLM steps while a request waits for remote KV).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
import zmq

from kv_transfer.zmq.plan import Load, Send, ZmqMetadata
from kv_transfer.zmq.staging import Pushed, Receiver, Staging
from kv_transfer.zmq.stats import ZmqKVConnectorStats
from kv_transfer.zmq.wire import Done, Drop, LayerBlocks, encoder

logger = logging.getLogger(__name__)

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


@dataclass
class _Pending:
    load: Load
    deadline: float


class ZmqWorker:
    def __init__(self, num_blocks: int, bind: str | None, lease_s: float, receive_timeout_s: float,
                 max_staging_bytes: int) -> None:
        self.num_blocks = num_blocks
        self.receive_timeout_s = receive_timeout_s
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.staging = Staging(max_staging_bytes, lease_s)
        self.receiver = Receiver(self.ctx, bind, self.staging) if bind else None
        if self.receiver is not None:
            self.receiver.start()
            logger.info("splitmind: KV over ZMQ, receiving on %s", bind)
        self.kv: dict[str, torch.Tensor] = {}
        self.senders: dict[str, zmq.Socket[bytes]] = {}
        self.sent_layers: list[str] = []  # this step's, in order
        self.failed_sends: set[str] = set()  # transfer_ids whose push broke off
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
            data = view.index_select(0, torch.tensor(send.block_ids, device=view.device)).cpu().contiguous()
            header = LayerBlocks(send.transfer_id, layer, send.first, dtype, list(data.shape))
            self._send(send, [encoder.encode(header), data.view(torch.uint8).numpy()])

    def wait_for_save(self, meta: ZmqMetadata) -> None:
        for send in meta.sends:
            if send.done_tokens and send.transfer_id not in self.failed_sends:
                self._send(send, [encoder.encode(Done(send.transfer_id, send.done_tokens, list(self.sent_layers)))])
            if send.done_tokens:
                self.failed_sends.discard(send.transfer_id)
        self.sent_layers.clear()

    def _send(self, send: Send, frames: list[Any]) -> None:
        try:
            self._socket(send.push_to).send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except (zmq.ZMQError, ValueError) as exc:  # Again: the destination is not keeping up
            self.failed_sends.add(send.transfer_id)
            self.stats.record_failure()
            logger.warning("KV transfer %s to %s broke off: %s", send.transfer_id, send.push_to, exc)

    def _socket(self, dest: str) -> zmq.Socket[bytes]:
        sock = self.senders.get(dest)
        if sock is None:
            if not dest.startswith(("tcp://", "ipc://")) or len(dest) > 256:
                raise ValueError(f"not a KV address: {dest[:80]!r}")
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, SEND_HWM)
            sock.connect(dest)
            self.senders[dest] = sock
        return sock

    # -- decode: load ------------------------------------------------------------------------
    def start_load(self, meta: ZmqMetadata) -> None:
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
            self.pending[load.req_id] = _Pending(load, now + self.receive_timeout_s)
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
                # From the first pushed frame to the KV in this engine's blocks: the push overlaps
                # prefill's compute, so this is the KV's time in flight, not the wait it caused.
                self.stats.record_load(time.monotonic() - got.started, got.nbytes)
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

