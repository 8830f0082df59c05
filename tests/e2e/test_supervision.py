"""`splitmind up` tells the truth about its processes, and the router routes around the ones that
fail: a taken port is refused before anything loads; a model that cannot run fails with the
engine's reason; a decode engine that dies mid-stream hands its stream to another decode node and
is restarted; a prefill node killed before it answers costs the client nothing. (That every
process dies with a launcher killed outright is checked by the random cluster's teardown,
tests/e2e/conftest.py.)
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from models.test_checkpoints import CheckpointSpec, build_checkpoint
from splitmind.launcher import free_port
from tests.e2e.cluster import ROOT, SPLITMIND, RunningCluster, metric
from tests.e2e.conftest import BASE_CONFIG, client, running

# The decode node whose engine the migration test killed, for the file's last test, which waits
# for its restart (the tests between run while it loads).
RESTARTING: dict[str, dict[str, object]] = {}
MAX_TOKENS = 1900


def up(*args: str, timeout_s: float) -> tuple[int, str, float]:
    t0 = time.monotonic()
    done = subprocess.run([str(SPLITMIND), "up", *args], capture_output=True, text=True, timeout=timeout_s, cwd=ROOT,
                          stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - t0


def test_a_taken_port_stops_up_before_anything_loads(tmp_path: Path) -> None:
    port = free_port("127.0.0.1")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen(1)
        code, out, _ = up("--port", str(port), "--log-dir", str(tmp_path / "logs"), timeout_s=120)
    assert code != 0, out
    assert f"port in use: gateway 127.0.0.1:{port} (Address already in use)" in out, out
    assert "starting prefill-0" not in out and "starting decode-0" not in out  # nothing loaded


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    """2 decode nodes (colocated) on the scripted model, for killing one without disturbing the
    clusters other tests share. No prefill node: a stream moves between decode nodes the same
    way after a remote prefill (tests/router/test_fallback.py), and a third engine on 2 cores
    doubled this cluster's start (158 s against about 60)."""
    for cluster in running(build_checkpoint(tmp_path_factory.mktemp("supervised") / "model",
                                            CheckpointSpec(weights="scripted")),
                           tmp_path_factory.mktemp("supervised-run"), prefill=0, decode=2, config=BASE_CONFIG):
        # `splitmind up` is ready once requests can be served; a node's first heartbeat may come
        # a moment later, and these tests need every node in rotation.
        for worker_id in ("decode-0", "decode-1"):
            _wait_ready(cluster, worker_id, limit_s=30)
        yield cluster


def _node(cluster: RunningCluster, worker_id: str) -> dict[str, object]:
    workers = httpx.get(cluster.url + "/admin/workers", timeout=10).json()
    (node,) = [w for w in workers if w["id"] == worker_id]
    return dict(node)


def fallbacks(cluster: RunningCluster, reason: str) -> float:
    return metric(cluster.url, "splitmind_router_fallbacks_total", reason=reason) or 0.0


def _wait_ready(cluster: RunningCluster, worker_id: str, replacing: object = None, limit_s: float = 240
                ) -> dict[str, object]:
    """Until the worker is ready, and (`replacing`: a pid) runs as another process than that one."""
    t0 = time.monotonic()
    while (node := _node(cluster, worker_id))["state"] != "ready" or node["pid"] == replacing:
        assert time.monotonic() - t0 < limit_s, node
        time.sleep(0.5)
    return node


def _engine_core(node_pid: int) -> psutil.Process:
    (core,) = [p for p in psutil.Process(node_pid).children(recursive=True)
               if p.name().startswith("VLLM::EngineCor") or "EngineCore" in " ".join(p.cmdline())]
    return core


def test_a_decode_engine_dying_mid_stream_hands_the_stream_over(supervised: RunningCluster) -> None:
    """The engine under a streaming reply dies: the node exits instead of answering errors, the
    stream goes on, uninterrupted, on the other decode node (prompt plus the tokens already sent
    re-prefilled there), and `splitmind up` restarts the node (which rejoins: the file's last test)."""
    # As long a stream as the cluster's 2,048-token context allows, and the engine killed at its
    # first tokens: on a loaded host a slow client once read its 30th chunk after the scripted
    # model had written all 600 tokens, and nothing was left to hand over (CI, stop 23).
    body = {"model": "model", "messages": [{"role": "user", "content": "go on"}], "max_tokens": MAX_TOKENS,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    counted = fallbacks(supervised, "decode_migrate")
    text: list[str] = []
    usage, report, errors = None, None, []
    with httpx.stream("POST", supervised.url + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        victim = _node(supervised, r.headers["x-splitmind-decode"])
        node = psutil.Process(int(victim["pid"]))  # type: ignore[call-overload]
        lines = r.iter_lines()
        for line in lines:
            if line.startswith("data: {"):
                text.append(line)
            if len(text) == 3:
                _engine_core(node.pid).kill()
                break
        comments = []
        for line in lines:
            if line.startswith(": served-by"):
                comments.append(line)
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                break
            chunk = json.loads(line[6:])
            if "error" in chunk:
                errors.append(chunk)
            if chunk.get("usage"):
                usage, report = chunk["usage"], chunk.get("splitmind")
    assert errors == [] and usage is not None
    assert usage["completion_tokens"] == MAX_TOKENS  # one stream, every token, nothing repeated or lost
    # The headers named the first decode node; the end of the stream names both.
    assert report is not None and report["fallbacks"] == ["decode_migrate"]
    assert report["served_by"]["decode"][0] == victim["id"] and len(report["served_by"]["decode"]) == 2
    prefill, decode = (",".join(report["served_by"][phase]) or "none" for phase in ("prefill", "decode"))
    assert comments == [f": served-by prefill={prefill} decode={decode} fallbacks=decode_migrate"]  # for any client
    assert fallbacks(supervised, "decode_migrate") == counted + 1
    node.wait(30)  # the node left instead of answering errors
    t0 = time.monotonic()
    while f"{victim['id']} exited (code 3); restart 1 in 1 s" not in (supervised.workdir / "up.log").read_text():
        assert time.monotonic() - t0 < 15, "splitmind up did not restart the node"
        time.sleep(0.2)
    # The restarted node loads while the next tests run; the last test of this file waits for it.
    RESTARTING["victim"] = victim


def test_a_model_the_engine_cannot_run_fails_up_with_the_engines_reason(tmp_path: Path) -> None:
    """Hidden 96 with 4 heads: head size 24, which vLLM's CPU attention has no kernel for. The
    engine builds; only a real request finds out. The warm-up runs one before the node is ready."""
    model = build_checkpoint(tmp_path / "model", CheckpointSpec(hidden_size=96, num_heads=4, num_kv_heads=2))
    # A small KV cache: the suite's clusters hold most of the memory (with the default 4 GiB, one
    # run here failed on memory before it reached the head size).
    (tmp_path / "small.toml").write_text(BASE_CONFIG)
    code, out, _ = up("--model", str(model), "--prefill", "0", "--config", str(tmp_path / "small.toml"),
                      "--log-dir", str(tmp_path / "logs"), timeout_s=600)
    assert code != 0, out
    assert "ready in" not in out, out
    # The engine's own reason leads, from the engine core's lines in the node's log. (When a vLLM
    # release gains a kernel for head size 24, this test says so: pick another unsupported shape.)
    assert "decode-0 exited with code 3: RuntimeError: Worker failed with error 'Unsupported CPU attention " \
           "configuration: head_dim=24" in out, out
    assert "the engine failed its warm-up request" in out, out


def test_a_prefill_node_killed_before_it_answers_costs_the_client_nothing(random_cluster: RunningCluster) -> None:
    """SIGKILL (the OOM killer) on the only prefill node: requests already routed to it are
    prefilled on their decode node instead, the client sees normal responses, the node's engine
    processes do not outlive it, and `splitmind up` restarts it. On the session's random
    cluster, whose other tests ran before this file (test_discovery, test_pd_identity,
    test_sampling): its own teardown then checks that the restarted node dies with the launcher."""
    supervised = random_cluster
    before = _wait_ready(supervised, "prefill-0")
    counted = fallbacks(supervised, "prefill_local")
    node = psutil.Process(int(before["pid"]))  # type: ignore[call-overload]
    engine = node.children(recursive=True)
    assert engine, "the node runs vLLM's engine in child processes"
    node.kill()
    # Sent at once, while the gateway still counts the node as healthy: both are routed to it.
    oa = client(supervised)
    messages = [{"role": "user", "content": "What is 2+2?"}]
    stream = oa.chat.completions.create(model="model", messages=messages, max_tokens=16, stream=True)
    whole = oa.chat.completions.create(model="model", messages=messages, max_tokens=16)  # sampled, as users call
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert whole.choices[0].finish_reason in ("stop", "length") and whole.usage.completion_tokens > 0
    # The stream waited out the dead node's heartbeat before its first token; by then the gateway
    # had taken the node out, so this one was planned colocated: either way, no prefill node served.
    assert whole.model_extra["splitmind"]["served_by"]["prefill"] == []  # type: ignore[index]
    assert fallbacks(supervised, "prefill_local") >= counted + 1
    left = psutil.wait_procs(engine, timeout=15)[1]
    log = supervised.node_log("prefill-0")
    stuck = log[log.find("splitmind: pid"):][:3000] if "still runs" in log else ""
    assert left == [], f"the engine outlived its node: {left}\n{stuck}"
    if stuck:  # gone, but only through the backstop (splitmind/lifeline.py): say where it hung
        warnings.warn(f"an engine process ignored its SIGTERM and was SIGKILLed:\n{stuck}", stacklevel=1)
    # `splitmind up` restarts it (the last test here waits for a restarted node to rejoin; this
    # one is back long before the random cluster's teardown, many test files later).
    t0 = time.monotonic()
    while "prefill-0 exited (code -9); restart 1 in 1 s" not in (supervised.workdir / "up.log").read_text():
        assert time.monotonic() - t0 < 15
        time.sleep(0.2)


def test_the_dead_decode_node_is_restarted_and_rejoins(supervised: RunningCluster) -> None:
    """The decode node whose engine died above (restarted while the tests between ran)."""
    assert "victim" in RESTARTING, "the decode engine test did not get as far as the restart"
    victim = RESTARTING["victim"]
    after = _wait_ready(supervised, str(victim["id"]), replacing=victim["pid"])
    assert after["restarts"] == 1 and after["pid"] != victim["pid"]
    assert metric(supervised.url, "splitmind_worker_restarts_total", worker=str(victim["id"])) == 1
    node_log = supervised.node_log(str(victim["id"]))  # appended on restart: the crash stays readable
    assert node_log.index("its vLLM engine died") < node_log.index(f"[splitmind] restart 1 of {victim['id']}")
