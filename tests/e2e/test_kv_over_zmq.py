"""KV over ZMQ end to end (`kv_transport = "zmq"`), on its own cluster for this file only (a
fourth PD cluster living all session ran a 2-core, 24 GiB machine out of memory): the NIXL
set (test_pd_identity: output identical to colocated around block boundaries and the KV
counted; test_kv_release: KV released at once, a storm of cancels leaving nothing held), then
a 2,000-token prompt with MTP on both nodes, concurrent streams, clients as users call them
(sampled, streamed), no transfer failing along the way, and the prefill node killed while it
pushes. The kill is last: `splitmind up` restarts the node, and the test waits for it."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from models.test_checkpoints import CheckpointSpec
from tests.e2e.cluster import RunningCluster, metric, settled
from tests.e2e.conftest import NO_PREFIX_CACHING_CONFIG, _cluster, client
from tests.e2e.test_kv_release import (
    first_token_last_frees_its_kv_at_once,
    storm_of_cancelled_requests_leaves_no_kv_behind,
)
from tests.e2e.test_pd_identity import (
    PROMPT_LENGTHS,
    disaggregated_matches_colocated,
    generate,
    settled_remote_kv_tokens,
)
from tests.e2e.test_supervision import _wait_ready, fallbacks


@pytest.fixture(scope="module")
def zmq_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    """PD cluster on random weights with an MTP layer (MTP on both nodes), its KV pushed over ZMQ
    with CURVE on every plane, KV sockets included (`--keys-dir`), prefix caching off."""
    config = NO_PREFIX_CACHING_CONFIG.replace("[engine]\n", '[engine]\nkv_transport = "zmq"\n')
    yield from _cluster(tmp_path_factory.mktemp("clusters"), "zmq", CheckpointSpec(weights="random", mtp_layers=1),
                        prefill=1, config=config, curve=True)


def transfers(cluster: RunningCluster) -> float:
    return metric(cluster.url, "splitmind_kv_transfers_total", worker="decode-0") or 0.0


def failures(cluster: RunningCluster) -> float:
    return sum(metric(cluster.url, "splitmind_kv_transfer_failures_total", worker="decode-0", kind=k) or 0.0
               for k in ("transfer", "expired"))


def decode_load(cluster: RunningCluster) -> tuple[float, float]:
    """The decode node's KV in use and open requests, from its heartbeat."""
    open_ = sum(metric(cluster.url, name, worker="decode-0") or 0.0
                for name in ("splitmind_worker_running_requests", "splitmind_worker_waiting_requests"))
    return metric(cluster.url, "splitmind_worker_kv_usage_ratio", worker="decode-0") or 0.0, open_


def workers(cluster: RunningCluster) -> dict[str, dict[str, object]]:
    return {w["id"]: w for w in httpx.get(cluster.url + "/admin/workers", timeout=10).json()}


def test_the_nodes_say_they_move_kv_over_zmq(zmq_cluster: RunningCluster) -> None:
    nodes = workers(zmq_cluster)
    assert {w["kv_transport"] for w in nodes.values()} == {"zmq"}, nodes
    assert str(nodes["decode-0"]["kv_address"]).startswith("tcp://127.0.0.1:"), "where prefill pushes"
    assert nodes["prefill-0"]["kv_address"] == "", "prefill nodes receive nothing"
    assert nodes["decode-0"]["mtp_tokens"] == 1, "MTP on"


@pytest.mark.parametrize("length", PROMPT_LENGTHS)
def test_disaggregated_matches_colocated(zmq_cluster: RunningCluster, length: int) -> None:
    failed = failures(zmq_cluster)
    disaggregated_matches_colocated(zmq_cluster, length)
    assert failures(zmq_cluster) == failed, "no push failed: the decode node did not recompute the prompt"


@pytest.mark.parametrize("stream", [False, True])
def test_a_prefill_whose_first_token_is_the_last_frees_its_kv_at_once(zmq_cluster: RunningCluster,
                                                                       stream: bool) -> None:
    first_token_last_frees_its_kv_at_once(zmq_cluster, stream)


def test_a_storm_of_cancelled_requests_leaves_no_kv_behind(zmq_cluster: RunningCluster) -> None:
    storm_of_cancelled_requests_leaves_no_kv_behind(zmq_cluster)


def test_a_long_prompt_with_mtp_matches_colocated(zmq_cluster: RunningCluster) -> None:
    rng = random.Random(2000)
    prompt = [rng.randrange(3, 250) for _ in range(2000)]
    before, moved, failed = settled_remote_kv_tokens(zmq_cluster), transfers(zmq_cluster), failures(zmq_cluster)
    disagg, resp = generate(zmq_cluster, prompt, "disaggregated")
    assert resp.headers["x-splitmind-prefill"] == "prefill-0"
    assert settled_remote_kv_tokens(zmq_cluster) - before == 2000
    assert settled(lambda: transfers(zmq_cluster), lambda n: n > moved) == moved + 1
    colocated, _ = generate(zmq_cluster, prompt, "colocated")
    assert disagg == colocated
    assert failures(zmq_cluster) == failed


def test_sixteen_concurrent_streams_match_colocated(zmq_cluster: RunningCluster) -> None:
    prompts = [[random.Random(i).randrange(3, 250) for _ in range(40 + 37 * i)] for i in range(16)]
    failed = failures(zmq_cluster)

    def one(prompt: list[int], route: str) -> tuple[str, int]:
        """The streamed text and its token count (the usage chunk)."""
        body = {"model": "model", "prompt": prompt, "max_tokens": 24, "temperature": 0, "stream": True,
                "ignore_eos": True, "stream_options": {"include_usage": True}}
        text, tokens = "", 0
        with httpx.Client(timeout=120) as http, http.stream(
                "POST", zmq_cluster.url + "/v1/completions", json=body, headers={"x-splitmind-route": route}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    text += "".join(c["text"] for c in chunk["choices"])
                    tokens = (chunk.get("usage") or {}).get("completion_tokens", tokens)
        return text, tokens

    with ThreadPoolExecutor(16) as pool:
        disagg = list(pool.map(lambda p: one(p, "disaggregated"), prompts))
        colocated = list(pool.map(lambda p: one(p, "colocated"), prompts))
    assert [n for _, n in disagg] == [24] * 16
    assert disagg == colocated
    assert failures(zmq_cluster) == failed


def test_users_default_sampling_streamed_and_not(zmq_cluster: RunningCluster) -> None:
    oa = client(zmq_cluster)
    messages = [{"role": "user", "content": "What is 17 + 25?"}]
    whole = oa.chat.completions.create(model="model", messages=messages, max_tokens=32)  # type: ignore[arg-type]
    assert whole.choices[0].finish_reason in ("stop", "length") and whole.usage is not None
    assert whole.model_extra["splitmind"]["served_by"]["prefill"] == ["prefill-0"]  # type: ignore[index]
    chunks = list(oa.chat.completions.create(model="model", messages=messages, max_tokens=32,  # type: ignore[arg-type]
                                             stream=True))
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_a_prefill_node_killed_while_it_pushes_costs_the_client_nothing(zmq_cluster: RunningCluster) -> None:
    """SIGKILL on the prefill node while long prompts are being prefilled and pushed: every
    client gets its answer (prefilled on the decode node instead), decode is idle again, and
    `splitmind up` brings the node back."""
    node = _wait_ready(zmq_cluster, "prefill-0")
    local = fallbacks(zmq_cluster, "prefill_local")
    started = threading.Event()

    def one(i: int) -> int:
        rng = random.Random(i)
        body = {"model": "model", "prompt": [rng.randrange(3, 250) for _ in range(1500)], "max_tokens": 8,
                "stream": i % 2 == 0}  # default temperature, as users call
        started.set()
        with httpx.Client(timeout=120) as http:
            r = http.post(zmq_cluster.url + "/v1/completions", json=body,
                          headers={"x-splitmind-route": "disaggregated"})
            return r.status_code

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(one, i) for i in range(6)]
        started.wait(10)
        time.sleep(0.15)
        psutil.Process(int(node["pid"])).kill()  # type: ignore[call-overload]
        codes = [f.result(timeout=180) for f in futures]
    assert codes == [200] * 6, codes
    assert fallbacks(zmq_cluster, "prefill_local") > local, "some request was prefilled on the decode node"
    # The decode node only: the dead prefill node's last heartbeat stays on /metrics until its
    # successor's first.
    settled(lambda: decode_load(zmq_cluster), lambda load: load == (0.0, 0.0), timeout_s=10)
    assert decode_load(zmq_cluster) == (0.0, 0.0), "decode still holds KV or requests"
    after = _wait_ready(zmq_cluster, "prefill-0", replacing=node["pid"])
    assert after["restarts"] == 1
