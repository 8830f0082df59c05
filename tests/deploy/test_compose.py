"""deploy/compose.yaml (one host) parses and runs what the Kubernetes manifests run: the same
image, the same command for each part, the CPU overlay's settings, the same config file and
mount paths, the health checks as commands `splitmind` parses, and stop timeouts as long as the
pods' grace periods. (No `docker compose` here to run it: the Docker CLI has no compose plugin
and there is no daemon.)"""

from __future__ import annotations

from typing import Any

import yaml

from tests.deploy.manifests import (
    COMPONENTS,
    DEPLOY,
    container,
    deployment,
    entrypoint,
    overlay,
    parse_cli,
    splitmind_args,
)


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def seconds(text: str) -> int:
    assert text.endswith("s"), text
    return int(text[:-1])


def test_compose_runs_the_manifests_commands_and_settings() -> None:
    services = compose()["services"]
    objs = overlay("cpu")
    assert set(services) == {f"splitmind-{part}" for part in COMPONENTS}  # the Services' names: DNS discovery
    for part in COMPONENTS:
        service, dep = services[f"splitmind-{part}"], deployment(objs, part)
        c = container(dep)
        assert service["image"] == c["image"] and service["command"] == c["args"]
        assert parse_cli(splitmind_args([*entrypoint(), *service["command"]]))[0] == c["args"][0]
        manifest_env = {e["name"]: str(e["value"]) for e in c["env"] if "value" in e}
        env = {k: str(v) for k, v in service["environment"].items()}
        # the same settings, less the admin key (not set on one host)
        assert {k: v for k, v in manifest_env.items() if k != "SPLITMIND_ADMIN_KEY_FILE"} == env, part
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        assert mounts["/etc/splitmind/config/splitmind.toml"] == "./k8s/base/splitmind.toml"
        assert env["SPLITMIND_CONFIG"] == "/etc/splitmind/config/splitmind.toml"
        assert "/etc/splitmind/keys" in mounts
        assert parse_cli(splitmind_args(service["healthcheck"]["test"]))[:1] == ("probe",)
        assert parse_cli(splitmind_args(service["healthcheck"]["test"]))[1]["role"] == part
        assert seconds(service["stop_grace_period"]) == dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert service["user"].startswith("${SPLITMIND_UID:-10001}")
    assert services["splitmind-gateway"]["ports"] == ["8000:8000"]
    assert all("ports" not in services[f"splitmind-{p}"] for p in ("prefill", "decode"))  # nodes stay inside
