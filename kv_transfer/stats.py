"""Read vLLM's KV-connector stats (NIXL telemetry) into plain numbers.

vLLM hands a stat logger `SchedulerStats.kv_connector_stats`: for NixlConnector a dict of lists
(`transfer_duration` in seconds, `bytes_transferred`, ...), for MultiConnector a dict of such
dicts keyed by connector name. Both shapes are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# vLLM's NIXL failure lists (one entry per failure) -> splitmind.protocol.KV_FAILURE_KINDS
FAILURE_KINDS = {
    "num_failed_transfers": "transfer",
    "num_failed_handshakes": "handshake",
    "num_failed_notifications": "notification",
    "num_kv_expired_reqs": "expired",
}


@dataclass
class TransferObservations:
    durations_s: list[float] = field(default_factory=list)
    num_bytes: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # by kind (KV_FAILURE_KINDS)


def read_connector_stats(data: dict[str, Any] | None) -> TransferObservations:
    obs = TransferObservations()
    if not data:
        return obs
    tables = [data] if "transfer_duration" in data else [v for v in data.values() if isinstance(v, dict)]
    for table in tables:
        obs.durations_s.extend(float(x) for x in table.get("transfer_duration", []))
        obs.num_bytes += int(sum(table.get("bytes_transferred", [])))
        for key, kind in FAILURE_KINDS.items():
            if n := len(table.get(key, [])):
                obs.failures[kind] = obs.failures.get(kind, 0) + n
    return obs
