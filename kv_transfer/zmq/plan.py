"""The scheduler's half of the ZMQ connector: which blocks to push, load or forget this step.

Pure bookkeeping over vLLM's scheduler objects (read through their attributes, never changed
except `do_remote_prefill`, cleared once a load is planned, as vLLM's NIXL connector does); the
worker (`kv_transfer.zmq.worker`) does what it plans. `claim` keeps the seeded-decode contract
(`kv_transfer.seeded`), as `SeededNixlConnector` does for NIXL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorMetadata

from kv_transfer.seeded import remote_tokens_to_take

TRANSPORT = "zmq"


@dataclass
class Send:
    """Push blocks `first` .. `first + len(block_ids)` of a prefill request (all its layers);
    `done_tokens` > 0 when this step computes the rest of its prompt (then `Done` follows)."""

    transfer_id: str
    push_to: str
    block_ids: list[int]
    first: int
    done_tokens: int = 0
    req_id: str = ""


@dataclass
class Load:
    """Copy a pushed transfer into a decode request's blocks `first` .. `first + len(block_ids)`."""

    req_id: str
    transfer_id: str
    block_ids: list[int]
    first: int
    num_tokens: int


@dataclass
class ZmqMetadata(KVConnectorMetadata):
    sends: list[Send] = field(default_factory=list)
    loads: list[Load] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)  # req_ids whose planned load is off (aborted)
    drops: list[str] = field(default_factory=list)  # transfer_ids this engine holds for nobody
    held: list[str] = field(default_factory=list)  # prefill req_ids whose blocks wait for their sends
    remote_drops: list[tuple[str, str]] = field(default_factory=list)  # (push_to, transfer_id)


def push_params(params: dict[str, Any] | None) -> tuple[str, str] | None:
    """(transfer_id, push_to) of a prefill request that pushes its KV."""
    if params and params.get("transport") == TRANSPORT and params.get("do_remote_decode"):
        tid, dest = params.get("transfer_id"), params.get("push_to")
        if isinstance(tid, str) and tid and isinstance(dest, str) and dest:
            return tid, dest
    return None


def load_params(params: dict[str, Any] | None) -> tuple[str, int] | None:
    """(transfer_id, remote_num_tokens) of a decode request whose prompt KV was pushed here."""
    if params and params.get("transport") == TRANSPORT and params.get("do_remote_prefill"):
        tid, n = params.get("transfer_id"), params.get("remote_num_tokens")
        if isinstance(tid, str) and tid and isinstance(n, int) and n > 0:
            return tid, n
    return None


@dataclass
class _Pushing:
    transfer_id: str
    push_to: str
    num_prompt_tokens: int
    block_ids: list[int] = field(default_factory=list)
    sent_full: int = 0  # blocks already sent complete
    done: bool = False


class Planner:
    def __init__(self, block_size: int, engine_id: str) -> None:
        self.block_size = block_size
        self.engine_id = engine_id
        self._pushing: dict[str, _Pushing] = {}  # req_id -> prefill request pushing its KV
        self._claims: dict[str, int] = {}  # req_id -> local tokens, between the claim and the alloc
        self._loading: dict[str, str] = {}  # req_id -> transfer_id, load planned, not yet finished
        self._meta = ZmqMetadata()

    # -- prefill ------------------------------------------------------------------------------
    def on_new_request(self, request: Any) -> None:
        push = push_params(request.kv_transfer_params)
        if push is not None:
            self._pushing[request.request_id] = _Pushing(*push, num_prompt_tokens=request.num_prompt_tokens)

    def _plan_sends(self, scheduler_output: Any) -> None:
        steps: list[tuple[str, list[int] | None, int]] = [
            (r.req_id, r.block_ids[0], r.num_computed_tokens) for r in scheduler_output.scheduled_new_reqs
            if r.req_id in self._pushing]
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            if req_id in self._pushing:
                new = cached.new_block_ids[i]
                if req_id in cached.resumed_req_ids:  # preempted: new blocks, all of them sent again
                    self._pushing[req_id].block_ids, self._pushing[req_id].sent_full = [], 0
                steps.append((req_id, new[0] if new is not None else None, cached.num_computed_tokens[i]))
        for req_id, new_blocks, computed in steps:
            p = self._pushing[req_id]
            if p.done:
                continue
            p.block_ids += new_blocks or []
            after = min(computed + scheduler_output.num_scheduled_tokens.get(req_id, 0), p.num_prompt_tokens)
            end = min(-(-after // self.block_size), len(p.block_ids))
            done = after >= p.num_prompt_tokens
            self._meta.sends.append(Send(p.transfer_id, p.push_to, p.block_ids[p.sent_full:end], p.sent_full,
                                         p.num_prompt_tokens if done else 0, req_id))
            p.sent_full, p.done = after // self.block_size, done

    # -- decode -------------------------------------------------------------------------------
    def claim(self, request: Any, num_computed_tokens: int) -> tuple[int, bool]:
        load = load_params(request.kv_transfer_params)
        if load is None:
            return 0, False
        transfer_id, remote = load
        count = remote_tokens_to_take(remote, request.num_prompt_tokens, num_computed_tokens)
        if count <= 0:  # decode's own cache holds it all: the push is of no use
            self._meta.drops.append(transfer_id)
            request.kv_transfer_params["do_remote_prefill"] = False
            return 0, False
        self._claims[request.request_id] = num_computed_tokens
        return count, True

    def allocated(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        local = self._claims.pop(request.request_id, None)
        load = load_params(request.kv_transfer_params)
        if local is None or load is None or num_external_tokens <= 0:
            return
        transfer_id, _ = load
        request.kv_transfer_params["do_remote_prefill"] = False  # loaded once, never again
        block_ids = list(blocks.get_block_ids()[0])
        first = local // self.block_size
        end = -(-(local + num_external_tokens) // self.block_size)
        self._meta.loads.append(Load(request.request_id, transfer_id, block_ids[first:end], first,
                                     local + num_external_tokens))
        self._loading[request.request_id] = transfer_id

    def loaded(self, finished_recving: set[str] | None) -> None:
        for req_id in finished_recving or ():
            self._loading.pop(req_id, None)

    # -- both ---------------------------------------------------------------------------------
    def finished(self, request: Any) -> tuple[bool, dict[str, Any] | None]:
        """The request ended (done, aborted, or a pre-aborted release): whether vLLM must keep its
        blocks (a prefill's, until the worker reports them sent: frames go out of the KV cache
        itself), a prefill's reply params for the decode request, and the cleanups the worker
        must do."""
        req_id = request.request_id
        self._claims.pop(req_id, None)
        pushing = self._pushing.pop(req_id, None)
        if pushing is not None:
            self._meta.held.append(req_id)
            return True, self._pushed(pushing)
        self._unclaimed(request)
        return False, None

    def _pushed(self, pushing: _Pushing) -> dict[str, Any] | None:
        if pushing.done:
            return {"transport": TRANSPORT, "transfer_id": pushing.transfer_id, "push_to": pushing.push_to,
                    "remote_num_tokens": pushing.num_prompt_tokens, "remote_engine_id": self.engine_id}
        self._meta.remote_drops.append((pushing.push_to, pushing.transfer_id))  # aborted half way
        return None

    def _unclaimed(self, request: Any) -> None:
        req_id = request.request_id
        if req_id in self._loading:  # aborted while its KV was on its way: the worker reports it
            del self._loading[req_id]
            self._meta.cancels.append(req_id)
        load = load_params(request.kv_transfer_params)
        if load is not None:  # never loaded (released, aborted early): forget the pushed KV
            self._meta.drops.append(load[0])

    def build(self, scheduler_output: Any) -> ZmqMetadata:
        self._plan_sends(scheduler_output)
        meta, self._meta = self._meta, ZmqMetadata()
        return meta
