"""vLLM NixlConnector configuration for splitmind nodes.

Both roles use `kv_both`: whether an engine produces or consumes KV is decided per request by
`kv_transfer_params` (`do_remote_decode` on prefill, `do_remote_prefill` on decode), which lets a
decode node also prefill locally. The NIXL side-channel port (where peers fetch an engine's
handshake metadata) comes from `VLLM_NIXL_SIDE_CHANNEL_PORT`, set per node by the launcher.
The connector is vLLM's NixlConnector with one fix for seeded decode (`kv_transfer.connector`).
"""

from __future__ import annotations

from typing import Any

# What a prefill request asks of the connector: keep the KV for a remote decode to pull.
PREFILL_REQUEST_PARAMS: dict[str, Any] = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}


def nixl_kv_transfer_config(*, kv_buffer_device: str, kv_lease_s: int) -> dict[str, Any]:
    """The `kv_transfer_config` engine argument for a node of either role."""
    return {
        "kv_connector": "SeededNixlConnector",
        "kv_connector_module_path": "kv_transfer.connector",
        "kv_role": "kv_both",
        "kv_buffer_device": kv_buffer_device,
        "kv_connector_extra_config": {"kv_lease_duration": kv_lease_s},
    }
