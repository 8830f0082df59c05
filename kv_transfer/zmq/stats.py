"""The ZMQ connector's telemetry, in the keys `kv_transfer.stats` already reads for NIXL."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from vllm.distributed.kv_transfer.kv_connector.v1.metrics import KVConnectorStats

KEYS = ("transfer_duration", "bytes_transferred", "num_failed_transfers", "num_kv_expired_reqs")


@dataclass
class ZmqKVConnectorStats(KVConnectorStats):
    def __post_init__(self) -> None:
        if not self.data:
            self.reset()

    def reset(self) -> None:
        self.data = {k: [] for k in KEYS}

    def record_load(self, seconds: float, nbytes: int) -> None:
        self.data["transfer_duration"].append(seconds)
        self.data["bytes_transferred"].append(nbytes)

    def record_failure(self) -> None:
        self.data["num_failed_transfers"].append(1)

    def record_expired(self, n: int) -> None:
        self.data["num_kv_expired_reqs"].extend([1] * n)

    def is_empty(self) -> bool:
        return not any(self.data.get(k) for k in KEYS)

    def aggregate(self, other: KVConnectorStats) -> KVConnectorStats:
        for k in KEYS:
            self.data.setdefault(k, []).extend(other.data.get(k, []))
        return self

    def reduce(self) -> dict[str, int | float]:
        n = len(self.data["transfer_duration"])
        return {"Num successful transfers": n,
                "Avg xfer time (ms)": 1000 * sum(self.data["transfer_duration"]) / n if n else 0,
                "Avg MB per transfer": sum(self.data["bytes_transferred"]) / 2**20 / n if n else 0,
                "Num failed transfers": len(self.data["num_failed_transfers"]),
                "Num KV expired reqs": len(self.data["num_kv_expired_reqs"])}

    def clone_and_reset(self) -> ZmqKVConnectorStats:
        old = copy.copy(self)
        self.reset()
        return old
