"""The Kubernetes manifests render (`kubectl kustomize`, every overlay) and every object
validates offline against the pinned Kubernetes versions (kubernetes-validate ships the API
schemas; strict: no unknown field). The Prometheus Operator's objects (ServiceMonitor,
PrometheusRule) are CRDs whose schemas it does not ship: tests/deploy/test_monitoring.py checks
their structure. Then what every overlay must hold: the security context, resources, probes,
disruption budgets, headless Services, and what the GPU overlay adds."""

from __future__ import annotations

import copy
import functools
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.manifests import (
    COMPONENTS,
    KUBERNETES_VERSIONS,
    OVERLAYS,
    component,
    container,
    deployment,
    of_kind,
    overlay,
    render,
)

# Each call reads the schema files again (0.1 s an object); they never change.
kubernetes_validate.utils.schema_contents = functools.cache(kubernetes_validate.utils.schema_contents)  # type: ignore[attr-defined]


def validate(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_object_of_the_overlay_validates(name: str) -> None:
    objs = overlay(name)
    assert {o["kind"] for o in objs} >= {"Namespace", "ServiceAccount", "ConfigMap", "Service", "Deployment",
                                         "PodDisruptionBudget", "NetworkPolicy"}
    for obj in objs:
        assert obj["kind"] not in ("ServiceMonitor", "PrometheusRule"), "CRDs live in deploy/k8s/monitoring"
        assert obj["metadata"].get("namespace", "splitmind") == "splitmind", obj["metadata"]
        for version in KUBERNETES_VERSIONS:
            validate(obj, version)


def test_the_validator_refuses_what_the_api_server_would() -> None:
    """The check above can fail: an unknown field, and a wrong type."""
    gateway = deployment(overlay("cpu"), "gateway")
    typo = copy.deepcopy(gateway)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = "/health"
    wrong_type = copy.deepcopy(gateway)
    wrong_type["spec"]["replicas"] = "two"
    for broken in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(broken, KUBERNETES_VERSIONS[0])


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_container_is_locked_down_and_sized(name: str) -> None:
    objs = overlay(name)
    for part in COMPONENTS:
        dep = deployment(objs, part)
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        c = container(dep)
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert set(sc["capabilities"].get("add", [])) <= {"IPC_LOCK"}  # RDMA memory pinning, GPU overlay only
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
        assert c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"]  # no OOM surprise
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/tmp", "/home/splitmind", "/etc/splitmind/config", "/etc/splitmind/keys"} <= mounts
        assert all(k in c for k in ("startupProbe", "readinessProbe", "livenessProbe")), part
        assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


@pytest.mark.parametrize("name", OVERLAYS)
def test_disruption_budgets_and_services_cover_every_pool(name: str) -> None:
    objs = overlay(name)
    budgets = of_kind(objs, "PodDisruptionBudget").values()
    services = of_kind(objs, "Service")
    for part in COMPONENTS:
        labels = deployment(objs, part)["spec"]["template"]["metadata"]["labels"]
        [budget] = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert budget["spec"]["maxUnavailable"] == 1
        [service] = [s for s in services.values() if s["spec"]["selector"].items() <= labels.items()]
        assert (service["spec"].get("clusterIP") == "None") == (part != "gateway"), service  # nodes: headless
    for hpa in of_kind(objs, "HorizontalPodAutoscaler").values():
        assert component(of_kind(objs, "Deployment")[hpa["spec"]["scaleTargetRef"]["name"]]) == "gateway"


def test_what_each_overlay_changes() -> None:
    cpu, gpu, multi = overlay("cpu"), overlay("gpu"), overlay("multi-gateway")
    assert not of_kind(cpu, "HorizontalPodAutoscaler") and deployment(cpu, "gateway")["spec"]["replicas"] == 1
    for objs in (gpu, multi):  # components/multi-gateway
        [hpa] = of_kind(objs, "HorizontalPodAutoscaler").values()
        assert hpa["spec"]["minReplicas"] >= 2 and deployment(objs, "gateway")["spec"]["replicas"] >= 2
        assert deployment(objs, "gateway")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    for part in ("prefill", "decode"):
        c, pod = container(deployment(cpu, part)), deployment(cpu, part)["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["UCX_TLS"] == "tcp" and c["image"].endswith("-cpu")
        assert c["resources"]["requests"] == c["resources"]["limits"]  # Guaranteed QoS: whole cores
        c, pod = container(deployment(gpu, part)), deployment(gpu, part)["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and c["image"].endswith("-gpu")
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"UCX_TLS", "UCX_NET_DEVICES", "UCX_TCP_PORT_RANGE"} <= set(env) and "rc" in env["UCX_TLS"].split(",")
    assert deployment(gpu, "decode")["spec"]["replicas"] > deployment(gpu, "prefill")["spec"]["replicas"]
    for part in COMPONENTS:  # the GPU overlay mounts the model everywhere and names it in [serve]
        c = container(deployment(gpu, part))
        assert {"name": "SPLITMIND__SERVE__MODEL", "value": "/models/model"} in c["env"]
        assert any(m["mountPath"] == "/models" for m in c["volumeMounts"])


def test_the_base_alone_renders_and_names_its_image_once() -> None:
    """Overlays change the image by name (kustomize `images`): every container uses that name."""
    for obj in of_kind(render("k8s/base"), "Deployment").values():
        assert container(obj)["image"].split(":")[0] == "splitmind"
