"""What the manifests tell each container is what `splitmind` accepts and does: the container's
command parses; `splitmind check-config --role R`, run with the container's environment and its
mounts laid out as the kubelet would (the ConfigMap's file, the Secrets' files), accepts the
configuration and resolves it to the ports, names and paths the manifests use elsewhere
(containerPorts, Services, probes, NetworkPolicies); every probe and hook command parses and
points at a port or path the process serves; and the stop timings leave the drains their time."""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from models import BUNDLED_MODEL
from splitmind.cli import app
from tests.deploy.manifests import (
    COMPONENTS,
    OVERLAYS,
    Pod,
    api_secret,
    component,
    config_text,
    container,
    curve_secret,
    deployment,
    entrypoint,
    make_pod,
    of_kind,
    overlay,
    parse_cli,
    splitmind_args,
)

FIELDS = {"metadata.name": "splitmind-pod-0", "status.podIP": "10.0.0.7"}
DNS_TTL_S = 5  # CoreDNS's default TTL for Service records: a gateway may see a leaving pod this long


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    return {"splitmind-curve-keys": curve_secret(tmp_path_factory.mktemp("secret")),
            "splitmind-api-keys": api_secret()}


@pytest.fixture(scope="module")
def claims(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The GPU overlay's model volume: a directory holding the checkpoint as `model`."""
    volume = tmp_path_factory.mktemp("claim")
    (volume / "model").symlink_to(BUNDLED_MODEL)
    return {"splitmind-models": volume}


def ports(c: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in c["ports"]}


def checked(pod: Pod, role: str) -> tuple[dict[str, Any], str]:
    """`splitmind check-config --role ROLE` in the container's environment: the file comes from
    SPLITMIND_CONFIG, as it does for the process."""
    result = CliRunner().invoke(app, ["check-config", "--role", role], env=pod.env)
    assert result.exit_code == 0, result.output
    return tomllib.loads(result.stdout), result.stdout


@pytest.mark.parametrize("name", OVERLAYS)
def test_each_container_command_and_config_is_accepted_by_splitmind(
        name: str, tmp_path: Path, secrets: dict[str, dict[str, bytes]], claims: dict[str, Path]) -> None:
    objs = overlay(name)
    services = {component(s): s for s in of_kind(objs, "Service").values()}
    for part in COMPONENTS:
        dep = deployment(objs, part)
        c = container(dep)
        pod = make_pod(objs, dep, tmp_path / part, secrets, FIELDS, claims)
        assert Path(pod.env["SPLITMIND_CONFIG"]).read_text() == config_text(objs)
        command, params = parse_cli(splitmind_args([*entrypoint(), *c["args"]]))
        if part == "gateway":
            assert command == "gateway" and params["config"] is None  # the file comes from SPLITMIND_CONFIG
            config, text = checked(pod, "gateway")
            assert config["serve"]["host"] == "0.0.0.0" and config["serve"]["port"] == ports(c)["http"]
            assert services["gateway"]["spec"]["ports"] == [{"name": "http", "port": ports(c)["http"],
                                                             "targetPort": "http"}]
            assert config["serve"]["keys_dir"] == pod.local("/etc/splitmind/keys")
            assert "SPLITMIND_API_KEY_FILE set" in text and "SPLITMIND_ADMIN_KEY_FILE set" in text
            assert "warning" not in text  # keys are set: the gateway is not open to all
            discovered = {d["role"]: d for d in config["discover"]}
            assert not config.get("workers") and set(discovered) == {"prefill", "decode"}
            for role, d in discovered.items():  # the names are the headless Services, the ports theirs
                svc = services[role]
                assert d["name"] == svc["metadata"]["name"] and svc["spec"]["clusterIP"] == "None"
                assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"rpc": d["rpc_port"],
                                                                                "stats": d["stats_port"]}
        else:
            assert command == "node" and params["role"] == part
            config, _ = checked(pod, part)
            node = config["node"]
            assert (node["role"], node["host"], node["worker_id"], node["nixl_host"]) == (
                part, "0.0.0.0", FIELDS["metadata.name"], FIELDS["status.podIP"])
            assert ports(c) == {"rpc": node["rpc_port"], "stats": node["stats_port"], "nixl": node["nixl_port"]}
            assert node["keys_dir"] == pod.local("/etc/splitmind/keys")
            if name == "cpu":
                assert config["engine"]["kv_cache_gib"] == 1 and config["engine"]["max_model_len"] == 2048


def test_a_config_splitmind_refuses_fails_the_check(tmp_path: Path, secrets: dict[str, dict[str, bytes]]) -> None:
    """The check above can fail: a node without its keys, a typo in an overlay's variable."""
    objs = overlay("cpu")
    pod = make_pod(objs, deployment(objs, "decode"), tmp_path, secrets, FIELDS)
    for broken in ({"SPLITMIND__NODE__KEYS_DIR": ""}, {"SPLITMIND__ENGINE__KV_CACHE_GB": "1"}):
        result = CliRunner().invoke(app, ["check-config", "--role", "decode"], env={**pod.env, **broken})
        assert result.exit_code == 2 and "error:" in result.output
    with pytest.raises(Exception, match="No such option"):
        parse_cli(["node", "--rol", "decode"])


@functools.cache
def gateway_paths() -> frozenset[str]:
    from api.app import create_app
    from splitmind.config import GatewayConfig, WorkerDNS
    from splitmind.protocol import Role

    gateway = create_app(GatewayConfig(model=str(BUNDLED_MODEL), served_model_name="m", host="127.0.0.1", port=1,
                                       workers=(), discover=(WorkerDNS(Role.DECODE, "splitmind-decode"),)))
    return frozenset(getattr(route, "path", "") for route in gateway.routes)


@pytest.mark.parametrize("name", OVERLAYS)
def test_probes_and_hooks_point_at_what_the_processes_serve(name: str) -> None:
    objs = overlay(name)
    config = tomllib.loads(config_text(objs))
    served = gateway_paths()
    for part in COMPONENTS:
        dep = deployment(objs, part)
        c = container(dep)
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c[kind]
            if "httpGet" in probe:
                assert probe["httpGet"]["port"] in ports(c) and probe["httpGet"]["path"] in served
            elif "tcpSocket" in probe:
                assert probe["tcpSocket"]["port"] in ports(c)
            else:
                command, params = parse_cli(splitmind_args(probe["exec"]["command"]))
                assert (command, params["role"]) == ("probe", part)
                assert probe["timeoutSeconds"] > params["timeout_s"], kind  # the probe's own answer comes first
        assert c["readinessProbe"] != c["livenessProbe"]  # liveness is the more patient one
        grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        if part == "gateway":  # the Service drops the pod, then streams get drain_s, then uvicorn's margin
            assert c["readinessProbe"]["httpGet"]["path"] == "/health"
            assert grace > c["lifecycle"]["preStop"]["sleep"]["seconds"] + config["gateway"]["drain_s"] + 5
        else:
            command, params = parse_cli(splitmind_args(c["lifecycle"]["preStop"]["exec"]["command"]))
            assert (command, params["role"]) == ("drain", part)
            assert params["quiet_s"] > config["gateway"]["resolve_interval_s"] + DNS_TTL_S
            assert grace >= params["max_s"] + 30  # the drain, then the engine's stop
            liveness = c["livenessProbe"]
            assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 120  # hung, not busy


@pytest.mark.parametrize("name", OVERLAYS)
def test_network_policies_open_the_ports_the_parts_use(name: str) -> None:
    objs = overlay(name)
    policies = of_kind(objs, "NetworkPolicy")
    nodes = {part: container(deployment(objs, part)) for part in ("prefill", "decode")}
    gateway = policies["splitmind-gateway"]["spec"]
    assert [p["port"] for rule in gateway["ingress"] for p in rule["ports"]] == ["http"]
    ingress = policies["splitmind-nodes"]["spec"]["ingress"]
    from_gateways, from_nodes = ingress
    assert from_gateways["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    assert [p["port"] for p in from_gateways["ports"]] == ["rpc", "stats"]
    for part, c in nodes.items():
        assert {"rpc", "stats", "nixl"} <= set(ports(c)), part
        ucx_range = {e["name"]: e.get("value") for e in c["env"]}["UCX_TCP_PORT_RANGE"]
        [kv] = [p for p in from_nodes["ports"] if "endPort" in p]
        assert ucx_range == f"{kv['port']}-{kv['endPort']}"
    assert [p["port"] for p in from_nodes["ports"] if "endPort" not in p] == ["nixl"]
