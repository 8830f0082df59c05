"""vLLM's NIXL telemetry read into splitmind's counters (kv_transfer/stats.py): transfers and
failures by kind, from both the NixlConnector and the MultiConnector shapes."""

from __future__ import annotations

from kv_transfer.stats import read_connector_stats
from splitmind.node.counters import EngineCounters
from splitmind.protocol import KV_FAILURE_KINDS


def nixl_table(**lists: list[float]) -> dict[str, list[float]]:
    """A NixlKVConnectorStats.data as vLLM hands it over, every list present."""
    keys = ("transfer_duration", "post_duration", "bytes_transferred", "num_descriptors", "num_failed_transfers",
            "num_failed_notifications", "num_failed_handshakes", "num_kv_expired_reqs",
            "num_notifications_after_expiry")
    return {k: list(lists.get(k, [])) for k in keys}


def test_failures_are_counted_by_kind_in_both_shapes() -> None:
    table = nixl_table(transfer_duration=[0.01, 0.02], bytes_transferred=[100, 200], num_failed_handshakes=[1],
                       num_failed_transfers=[1, 1], num_kv_expired_reqs=[1])
    for data in (table, {"NixlConnector": table}):
        obs = read_connector_stats(data)
        assert obs.durations_s == [0.01, 0.02] and obs.num_bytes == 300
        assert obs.failures == {"transfer": 2, "handshake": 1, "expired": 1}
        assert set(obs.failures) <= set(KV_FAILURE_KINDS)


def test_the_node_counters_accumulate_failures_across_steps() -> None:
    class Stats:
        kv_cache_usage = 0.0
        connector_prefix_cache_stats = None
        spec_decoding_stats = None

        def __init__(self, data: dict[str, list[float]]) -> None:
            self.kv_connector_stats = data

    c = EngineCounters()
    c.record(Stats(nixl_table(num_failed_handshakes=[1])), None)
    c.record(Stats(nixl_table(num_failed_handshakes=[1], num_failed_notifications=[1])), None)
    c.record(Stats(nixl_table(transfer_duration=[0.5], bytes_transferred=[10])), None)
    assert c.kv_transfer_failures_total == {"handshake": 2, "notification": 1}
    assert c.kv_transfers_total == 1


def test_the_installed_vllm_still_reports_the_failure_lists_read_here() -> None:
    """The names are vLLM's (NixlKVConnectorStats.data); a rename there would zero our counters."""
    from vllm.distributed.kv_transfer.kv_connector.v1.nixl.stats import NixlKVConnectorStats

    from kv_transfer.stats import FAILURE_KINDS

    assert set(FAILURE_KINDS) <= set(NixlKVConnectorStats().data)
    assert set(FAILURE_KINDS.values()) == set(KV_FAILURE_KINDS)
