"""vLLM `kv_transfer_config` for a node on the ZMQ transport (`kv_transfer.zmq.connector`)."""

from __future__ import annotations

from typing import Any


def zmq_kv_transfer_config(*, kv_lease_s: int, bind: str | None, keys_dir: str = "") -> dict[str, Any]:
    """`bind`: where a decode node receives KV (its advertised host and KV port); None on prefill
    nodes, which only push. `keys_dir`: CURVE on the KV sockets, with the nodes' key pair."""
    return {
        "kv_connector": "ZmqPushConnector",
        "kv_connector_module_path": "kv_transfer.zmq.connector",
        "kv_role": "kv_both",
        # A push that never completes (prefill died, staging full) is recomputed, not failed.
        "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": {"kv_lease_duration": kv_lease_s, "bind": bind or "", "keys_dir": keys_dir},
    }


def kv_address(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
