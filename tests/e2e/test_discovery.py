"""A second gateway that knows the workers only by a DNS name (`discover`, router/discovery.py),
in front of the same nodes as the cluster's own gateway: two gateways, no shared state, the same
answers. "localhost" stands in for a headless Service's name."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from openai import OpenAI

from splitmind.config import WorkerDNS
from tests.e2e.cluster import RunningCluster, metric
from tests.e2e.gateway import Gateway, cluster_workers

PROMPT = list(range(5, 69))


def port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def discovering(random_cluster: RunningCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    discover = [WorkerDNS(w.role, "localhost", port(w.rpc_address), port(w.stats_address))
                for w in cluster_workers(random_cluster)]
    gateway = Gateway(random_cluster, tmp_path_factory.mktemp("discovery") / "gateway.log", {}, workers=(),
                      discover=discover, resolve_interval_s=1.0)
    yield gateway
    gateway.stop()


def openai(url: str) -> OpenAI:
    return OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


def complete(url: str, stream: bool, **sampling: object) -> tuple[str, dict[str, object] | None]:
    c = openai(url)
    if not stream:
        r = c.completions.create(model="model", prompt=PROMPT, max_tokens=12, **sampling)  # type: ignore[call-overload]
        return r.choices[0].text, r.model_extra["splitmind"]
    text, report = "", None
    for chunk in c.completions.create(model="model", prompt=PROMPT, max_tokens=12, stream=True,  # type: ignore[call-overload]
                                      stream_options={"include_usage": True}, **sampling):
        text += "".join(ch.text for ch in chunk.choices)
        report = (chunk.model_extra or {}).get("splitmind", report)
    return text, report


def test_workers_found_through_dns_serve(discovering: Gateway, random_cluster: RunningCluster) -> None:
    # The gateway is healthy once a decode node is ready; the prefill node's handshake may come
    # a moment later on a loaded machine (a full suite run read the list in between).
    deadline = time.monotonic() + 30
    while True:
        workers = {w["id"]: w for w in httpx.get(discovering.url + "/admin/workers", timeout=10).json()}
        ready = {wid for wid, w in workers.items() if w["state"] == "ready"}
        if {re.sub(r"@.*", "", wid) for wid in ready} == {"prefill", "decode"} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {re.sub(r"@.*", "", wid) for wid in ready} == {"prefill", "decode"}, workers
    assert all(wid.split("@")[1].startswith("127.0.0.1:") for wid in ready)  # localhost's IPv4 address
    # same nodes, same answers, greedy and sampled with a seed, streamed and not
    for stream in (False, True):
        for sampling in ({"temperature": 0}, {"temperature": 1.0, "seed": 7}):
            mine, report = complete(discovering.url, stream, **sampling)
            theirs, _ = complete(random_cluster.url, stream, **sampling)
            assert mine == theirs and mine, (stream, sampling)
            assert report is not None and set(report["served_by"]["decode"]) <= ready  # type: ignore[index]
    # the access log: one line per request, naming the workers that served it
    openai(discovering.url).completions.create(model="model", prompt=PROMPT, max_tokens=4,
                                               extra_headers={"x-request-id": "discovery-access-1"})
    line = next(line for line in discovering.log.read_text().splitlines() if "access id=discovery-access-1 " in line)
    assert re.search(r" POST /v1/completions status=200 route=disaggregated prefill=prefill@127\.0\.0\.1:\d+ "
                     r"decode=decode@127\.0\.0\.1:\d+ prompt=64 completion=4 reasoning=0 ttft=[\d.]+s "
                     r"duration=[\d.]+s fallbacks=-$", line), line


def test_two_gateways_at_once_share_the_nodes(discovering: Gateway, random_cluster: RunningCluster) -> None:
    urls = [discovering.url, random_cluster.url] * 4
    with ThreadPoolExecutor(len(urls)) as pool:  # default temperature (1.0), as users call it
        texts = list(pool.map(lambda u: complete(u, stream=True)[0], urls))
    assert all(texts)
    assert (metric(discovering.url, "splitmind_router_decisions_total", pool="pd", reason="long_prompt") or 0) > 0
    # one worker per pool: the filters run (and are timed), the scorers have nothing to choose between
    assert (metric(discovering.url, "splitmind_router_decisions_total", pool="decode", reason="only_candidate")
            or 0) > 0
    assert (metric(discovering.url, "splitmind_router_plugin_duration_seconds_count", plugin="full") or 0) > 0
