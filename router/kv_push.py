"""Where a prefill's KV goes on the ZMQ transport: the gateway names the decode node in the
prefill request, so prefill pushes each layer there while it computes (`kv_transfer.zmq`). On
NIXL nothing is named: decode pulls after prefill, from the address in prefill's reply."""

from __future__ import annotations

from router.client import WorkerClient
from splitmind.protocol import KVTransferParams


def kv_address_of(node: WorkerClient) -> str:
    """The decode node's KV socket, when it receives pushed KV; "" otherwise."""
    return node.info.kv_address if node.info is not None and node.info.kv_transport == "zmq" else ""


def push_kv_to(prefill: WorkerClient, decode: WorkerClient, transfer_id: str) -> KVTransferParams | None:
    """The prefill request's KV params: push to `decode`, when both nodes speak ZMQ. A node that
    does not (a deployment half way through a change) gets none, and decode computes the prompt."""
    address = kv_address_of(decode)
    if not address or prefill.info is None or prefill.info.kv_transport != "zmq":
        return None
    return KVTransferParams(transport="zmq", transfer_id=transfer_id, push_to=address)
