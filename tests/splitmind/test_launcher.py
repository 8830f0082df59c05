from splitmind.config import ClusterConfig
from splitmind.launcher import plan_nodes, split_cpus


def test_cpu_split_covers_nodes() -> None:
    parts = split_cpus(2)
    assert len(parts) == 2 and all(parts)


def test_plan_gives_every_node_its_own_ports() -> None:
    specs = plan_nodes(ClusterConfig(num_prefill=2, num_decode=2), "/m")
    assert [s.worker_id for s in specs] == ["prefill-0", "prefill-1", "decode-0", "decode-1"]
    ports = [p for s in specs for p in (s.rpc_address, s.stats_address, str(s.nixl_port))]
    assert len(set(ports)) == len(ports)
