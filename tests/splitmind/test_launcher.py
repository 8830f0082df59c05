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


def test_ports_avoid_the_kernels_ephemeral_range() -> None:
    """Bug: ports came from bind(0), inside the ephemeral range; between planning and the
    node's bind, vLLM or an outgoing connection took one ("Address already in use").
    Fix: choose below the ephemeral range, which the kernel never hands out by itself."""
    from splitmind.ports import ephemeral_range as _ephemeral_range
    from splitmind.ports import free_port

    low, _ = _ephemeral_range()
    ports = {free_port("127.0.0.1") for _ in range(50)}
    assert all(1024 <= p < low for p in ports)
    assert len(ports) > 40  # random picks: concurrent launchers rarely collide


def test_a_node_with_several_cores_leaves_one_to_its_engine_core() -> None:
    """Bug: a colocated node on 2 cores bound its compute threads to both, and the engine core's
    spin held one of them: 48.8 s for a reply served in 0.8 s. Fix: compute threads on all of a
    node's cores but the first."""
    from splitmind.node.main import omp_cpus

    assert omp_cpus("0-1") == "1"
    assert omp_cpus("2-5") == "3,4,5"
    assert omp_cpus("3") == "3"


def test_the_root_cause_is_the_engines_error_not_the_wrapper() -> None:
    from splitmind.failure_report import root_cause

    log = [
        "(EngineCore pid=1) ERROR [core.py:1512] RuntimeError: Worker failed with error 'Unsupported CPU attention "
        "configuration: head_dim=24 isa=1 kv_cache_idx=0', please check the stack trace above for the root cause",
        "(MainProcess pid=2) ERROR [async_llm.py:906] vllm.v1.engine.exceptions.EngineDeadError: EngineCore "
        "encountered an issue. See stack trace (above) for the root cause.",
        "[decode-0] error: the engine failed its warm-up request: EngineDeadError: EngineCore encountered an issue.",
    ]
    cause = root_cause(log)
    assert cause is not None and cause.startswith("RuntimeError: Worker failed with error 'Unsupported CPU attention")
    assert root_cause(["all fine", "INFO ready"]) is None


def test_an_engine_that_cannot_start_names_why() -> None:
    """A KV cache that does not fit: the engine core's start fails, and the frontend's last line
    says only that it failed (seen in a full suite run, 2026-12-02)."""
    from splitmind.failure_report import root_cause

    log = [
        "(EngineCore pid=1) ERROR [core.py:1510] RuntimeError: Worker failed with error 'Available memory on node 0 "
        "(2.22/23.54 GiB) on kv cache allocation is less than requested memory for kv (4.0 GiB). Decrease "
        "--kv-cache-memory-bytes, VLLM_CPU_KVCACHE_SPACE, or reduce CPU memory used by other processes.', please "
        "check the stack trace above for the root cause",
        "Traceback (most recent call last):",
        "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
    ]
    cause = root_cause(log)
    assert cause is not None and "Available memory on node 0" in cause


def test_ready_waits_for_every_node_in_the_gateway() -> None:
    """Bug: `splitmind up` said ready once the gateway had a decode node, before the prefill
    node's first heartbeat: the first requests went colocated, and one that asked for the
    disaggregated route got a 503 (bench/kv_transfer.py's warm-up)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from splitmind.launcher import gateway_healthy

    seen = {"prefill_workers": 0, "decode_workers": 1}

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": "ok", **seen}).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        assert gateway_healthy(url, prefill=0, decode=1), "colocated: the decode node is all it needs"
        assert not gateway_healthy(url, prefill=1, decode=1)
        seen["prefill_workers"] = 1
        assert gateway_healthy(url, prefill=1, decode=1)
    finally:
        server.shutdown()
