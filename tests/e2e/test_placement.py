"""Every engine thread of a node runs on that node's cores, after real requests through NIXL.

`splitmind up` gives each node its own cores (`splitmind.launcher.split_cpus`) and the node
confines its engine processes to them (`splitmind.node.main.confine_to_cpus`). vLLM's NIXL worker
moved the worker's main thread, the one that runs the model, to the last core of the host
(`kv_transfer/connector.py`, `SeededNixlConnector.__init__`): a prefill node then computed on the
decode node's core. This reads each thread's allowed cores from /proc on the random PD cluster.
The second test notices the day vLLM stops moving the thread itself.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import httpx
import psutil
import pytest

from splitmind.node.main import parse_cpus
from tests.e2e.cluster import RunningCluster


def allowed_cpus(pid: int, tid: int) -> set[int]:
    status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list:"))
    return parse_cpus(line.split(":", 1)[1].strip())


def node_cpus(pid: int) -> str:
    cmdline = psutil.Process(pid).cmdline()
    return str(json.loads(cmdline[cmdline.index("--spec") + 1])["cpus"])


def test_engine_threads_stay_on_their_nodes_cores(random_cluster: RunningCluster) -> None:
    workers = httpx.get(random_cluster.url + "/admin/workers", timeout=10).json()
    cpus = {w["id"]: node_cpus(w["pid"]) for w in workers}
    if any(not c for c in cpus.values()):
        pytest.skip(f"the nodes were not given cores of their own here (cpus {cpus}): nothing to check")
    for route in ("disaggregated", "colocated"):  # the NIXL worker is built at start; this proves the nodes serve
        r = httpx.post(random_cluster.url + "/v1/completions", headers={"x-splitmind-route": route}, timeout=120,
                       json={"model": "model", "prompt": "placement", "max_tokens": 4, "temperature": 0})
        assert r.status_code == 200, r.text
    strays = []
    for w in workers:
        own = parse_cpus(cpus[w["id"]])
        engines = [p for p in psutil.Process(w["pid"]).children(recursive=True) if p.name().startswith("VLLM::")]
        assert {p.name() for p in engines} >= {"VLLM::EngineCore", "VLLM::Worker"}, engines
        for proc in engines:
            for thread in proc.threads():
                where = allowed_cpus(proc.pid, thread.id)
                if not where <= own:
                    name = Path(f"/proc/{proc.pid}/task/{thread.id}/comm").read_text().strip()
                    strays.append(f"{w['id']} (cores {sorted(own)}): {proc.name()} thread {name} on {sorted(where)}")
    assert not strays, "engine threads off their node's cores:\n" + "\n".join(strays)


def test_vllms_nixl_worker_still_moves_its_thread() -> None:
    """The day this fails, vLLM no longer pins the NIXL worker's building thread to the host's
    last cores (PR 58036 or later): SeededNixlConnector.__init__'s restore can go."""
    from vllm.distributed.kv_transfer.kv_connector.v1.nixl import base_worker

    source = inspect.getsource(base_worker)
    assert "os.sched_setaffinity(0, rsv_cores_for_kv)" in source
    assert "sched_getaffinity" not in source, "vLLM now intersects with the thread's own cores"
