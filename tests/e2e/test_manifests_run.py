"""The manifests run: the gateway, prefill and decode containers of the rendered CPU overlay
(`kubectl kustomize deploy/k8s/overlays/cpu`) start as local processes with the commands and
environment the manifests give them, and serve a request through the disaggregated path.

What stands in for Kubernetes, and nothing else:
- the image's entrypoint (`tini -- splitmind`) is .venv/bin/splitmind, with the container's args;
- each pod's volumes are laid out as the kubelet mounts them (the ConfigMap's file, the Secrets'
  files, made as docs/operations.md makes them), and paths in the environment point there;
- fieldRefs: the pod's name, and 127.0.0.1 as its IP;
- the headless Services' names resolve to 127.0.0.1 (tests/e2e/service_dns/sitecustomize.py);
- a port two processes would both bind on one host (each pod has its own IP in a cluster), or one
  already taken here, is moved to a free one with the variables an operator would use
  (SPLITMIND__NODE__RPC_PORT, SPLITMIND__DISCOVER__1__RPC_PORT, ...); each node gets its own core
  (SPLITMIND__NODE__CPUS), as a pod gets its own cores;
- readiness is the manifests' own probes, run as the kubelet runs them.
Requests go through the official `openai` client with the API key from the Secret, greedy and at
the default temperature, streamed and not. The gateway's /metrics is then scraped: every metric
the dashboard and the alerts name is one it exports, and the KV really moved over NIXL (UCX_TLS=tcp,
as in the overlay)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from splitmind.launcher import split_cpus
from splitmind.ports import free_port
from tests.deploy.manifests import (
    api_secret,
    config_text,
    container,
    curve_secret,
    deployment,
    entrypoint,
    exported_series,
    make_pod,
    metric_names,
    overlay,
    queries,
    splitmind_args,
)
from tests.e2e.cluster import SPLITMIND
from tests.e2e.test_parts import ANSWER, QUESTION, Parts, served_by

SERVICE_DNS = Path(__file__).parent / "service_dns"
START_TIMEOUT_S = 150


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


@dataclass
class Deployed:
    url: str
    api_key: str
    prefill_id: str
    decode_id: str
    parts: Parts


@dataclass
class Plan:
    argv: dict[str, list[str]]
    env: dict[str, dict[str, str]]
    node_ids: dict[str, str]
    url: str


def plan(tmp: Path) -> Plan:
    """Each container's command and environment as the CPU overlay has them, for this host."""
    objs = overlay("cpu")
    discover = [d["role"] for d in tomllib.loads(config_text(objs))["discover"]]
    secrets = {"splitmind-curve-keys": curve_secret(tmp), "splitmind-api-keys": api_secret()}
    base = {k: v for k, v in os.environ.items() if not k.startswith("SPLITMIND")}
    base.update(PYTHONPATH=str(SERVICE_DNS),
                SPLITMIND_TEST_HOSTS="splitmind-prefill=127.0.0.1,splitmind-decode=127.0.0.1")
    taken: set[int] = set()
    out = Plan({}, {}, {}, "")
    gateway_moves: dict[str, str] = {}
    cpus = dict(zip(("prefill", "decode"), split_cpus(2), strict=True))
    for part in ("prefill", "decode", "gateway"):
        dep = deployment(objs, part)
        c = container(dep)
        pod = make_pod(objs, dep, tmp / part, secrets, {"metadata.name": f"splitmind-{part}-0",
                                                        "status.podIP": "127.0.0.1"})
        env = {**base, **pod.env}
        settings = ({"SPLITMIND__SERVE__PORT": "http"} if part == "gateway" else
                    {"SPLITMIND__NODE__RPC_PORT": "rpc", "SPLITMIND__NODE__STATS_PORT": "stats",
                     "SPLITMIND__NODE__NIXL_PORT": "nixl"})
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for variable, port_name in settings.items():
            port = ports[port_name]
            if port in taken or not port_free(port):
                port = free_port("0.0.0.0")
                env[variable] = str(port)
                if port_name in ("rpc", "stats"):  # the gateways find the node there: the same mechanism
                    gateway_moves[f"SPLITMIND__DISCOVER__{discover.index(part)}__{port_name.upper()}_PORT"] = str(port)
            taken.add(port)
            ports[port_name] = port
        if part == "gateway":
            env.update(gateway_moves)
            out.url = f"http://127.0.0.1:{ports['http']}"
        else:
            env["SPLITMIND__NODE__CPUS"] = cpus[part]
            out.node_ids[part] = f"{part}@127.0.0.1:{ports['rpc']}"
        out.env[part] = env
        out.argv[part] = [str(SPLITMIND), *pod.argv(splitmind_args([*entrypoint(), *c["args"]]))]
        moved = {k: v for k, v in env.items() if k.startswith("SPLITMIND__") and k not in pod.env}
        print(f"{part}: splitmind {' '.join(out.argv[part][1:])}; for this host: {moved}")
    return out


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    tmp = tmp_path_factory.mktemp("manifests")
    objs = overlay("cpu")
    run = plan(tmp)
    parts = Parts(tmp)
    try:
        for part in ("prefill", "decode"):
            parts.start(part, run.argv[part], run.env[part])
        deadline = time.monotonic() + START_TIMEOUT_S
        for part in ("prefill", "decode"):  # the readiness probe, as the kubelet runs it
            probe = container(deployment(objs, part))["readinessProbe"]["exec"]["command"]
            while True:
                parts.alive(part)
                ran = subprocess.run([str(SPLITMIND), *splitmind_args(probe)], env=run.env[part], capture_output=True,
                                     text=True, timeout=probe_timeout(part))
                if ran.returncode == 0:
                    break
                assert time.monotonic() < deadline, f"{part} not ready: {ran.stderr}\n{parts.log(part)[-3000:]}"
                time.sleep(1)
        parts.start("gateway", run.argv["gateway"], run.env["gateway"])
        health = run.url + container(deployment(objs, "gateway"))["readinessProbe"]["httpGet"]["path"]
        while True:  # ready, and both workers found through their Services' names
            parts.alive("gateway")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(health, timeout=2)
                if r.status_code == 200 and r.json()["prefill_workers"] == 1:
                    break
            assert time.monotonic() < deadline + 30, parts.log("gateway")[-3000:]
            time.sleep(0.3)
        yield Deployed(run.url, api_secret()["api-keys"].decode().strip(), run.node_ids["prefill"],
                       run.node_ids["decode"], parts)
    finally:
        parts.stop()


def probe_timeout(part: str) -> float:
    return float(container(deployment(overlay("cpu"), part))["readinessProbe"]["timeoutSeconds"]) + 5


def test_the_manifests_serve_through_the_disaggregated_path(deployed: Deployed) -> None:
    client = OpenAI(base_url=deployed.url + "/v1", api_key=deployed.api_key, max_retries=0, timeout=120)
    route = ([deployed.prefill_id], [deployed.decode_id])
    raw = client.chat.completions.with_raw_response.create(model="tiny-reasoner", messages=QUESTION,  # type: ignore[arg-type]
                                                           temperature=0, max_tokens=600)
    greedy = raw.parse()
    assert (raw.headers["x-splitmind-prefill"], raw.headers["x-splitmind-decode"]) == (deployed.prefill_id,
                                                                                        deployed.decode_id)
    assert served_by(greedy.model_extra) == route
    assert (greedy.choices[0].message.content or "").strip() == ANSWER
    assert (greedy.choices[0].message.model_extra or {})["reasoning_content"].strip()

    def stream(**sampling: Any) -> tuple[str, dict[str, object] | None]:
        text, report = "", None
        for chunk in client.chat.completions.create(model="tiny-reasoner", messages=QUESTION, max_tokens=600,  # type: ignore[call-overload]
                                                    stream=True, stream_options={"include_usage": True}, **sampling):
            text += "".join(c.delta.content or "" for c in chunk.choices)
            if chunk.model_extra and "splitmind" in chunk.model_extra:
                report = chunk.model_extra
        return text.strip(), report

    text, report = stream(temperature=0)
    assert text == ANSWER and served_by(report) == route
    sampled = client.chat.completions.create(model="tiny-reasoner", messages=QUESTION, max_tokens=600)  # type: ignore[arg-type]
    assert served_by(sampled.model_extra) == route
    assert re.fullmatch(r"The answer is \d+\.", (sampled.choices[0].message.content or "").strip())
    text, report = stream()
    assert re.fullmatch(r"The answer is \d+\.", text) and served_by(report) == route
    with pytest.raises(Exception, match="401"):  # the Secret's keys are the only way in
        OpenAI(base_url=deployed.url + "/v1", api_key="sk-wrong", max_retries=0).models.list()


def test_every_metric_in_the_dashboard_and_alerts_is_scraped(deployed: Deployed) -> None:
    """After the requests above: a real scrape of the deployed gateway."""
    scrape = httpx.get(deployed.url + "/metrics", timeout=10).text
    exported = exported_series(scrape)
    for where, expr in queries().items():
        unknown = metric_names(expr) - set(exported)
        assert not unknown, f"{where}: {sorted(unknown)} not in the gateway's /metrics"
    samples = re.findall(r"^(splitmind_\w+)\{([^}]*)\} (\S+)$", scrape, re.M)
    by_family: dict[str, set[str]] = {}
    for name, labels, _ in samples:
        by_family.setdefault(exported.get(name, name), set()).update(re.findall(r'(\w+)="', labels))
    for where, expr in queries().items():  # the labels the queries select on exist on those series
        for name, selector in re.findall(r"\b(splitmind_\w+)\{([^}]*)\}", expr):
            family = exported[name]
            if family in by_family:
                assert set(re.findall(r"(\w+)\s*=~?", selector)) <= by_family[family], (where, name)
    routed = [float(v) for name, labels, v in samples
              if name == "splitmind_requests_total" and 'route="disaggregated"' in labels]
    assert routed == [4.0]
    deadline = time.monotonic() + 5  # node counters arrive with its heartbeat (every 0.5 s)
    while (transfers := kv_transfers(deployed)) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert transfers >= 4, "the decode node reports fewer KV transfers over NIXL (UCX_TLS=tcp) than requests"


def kv_transfers(deployed: Deployed) -> float:
    scrape = httpx.get(deployed.url + "/metrics", timeout=10).text
    worker = re.escape(deployed.decode_id)
    found = re.findall(rf'^splitmind_kv_transfers_total\{{[^}}]*worker="{worker}"[^}}]*\}} (\S+)$', scrape, re.M)
    return float(found[0]) if found else 0.0
