"""`splitmind check-config`: everything a role would check before it starts, and the configuration
it would run, resolved: defaults filled in, the environment applied, paths absolute, a node's
host-dependent defaults (worker_id, nixl_host) decided. Nothing is loaded or started: the model
directory is checked for its config.json and its reasoning profile, keys directories for their
files. Secrets are never printed; only whether their variables are set.

Without a role, every role the document configures is checked: the gateway when it has [serve],
[[workers]] or [[discover]]; a node when it has [node] (its own role, if it names one); `up` when
it has [cluster] or none of those.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from splitmind.config import EngineConfig, GatewayConfig, is_loopback
from splitmind.config_file import (
    Document,
    build,
    cluster_config,
    gateway_config,
    node_config,
    node_spec,
)
from splitmind.config_render import to_toml
from splitmind.reasoning_profile import load_profile
from splitmind.standalone import ROLES, check_model_dir, model_dir

CHECK_ROLES = ("up", "gateway", *ROLES)
SECRET_VARIABLES = ("SPLITMIND_API_KEY", "SPLITMIND_API_KEY_FILE", "SPLITMIND_ADMIN_KEY", "SPLITMIND_ADMIN_KEY_FILE")
_ORDER = ("cluster", "serve", "workers", "discover", "node", "engine", "gateway", "reasoning")


def roles_in(doc: Document) -> list[str]:
    found = []
    if doc.has("serve", "workers", "discover"):
        found.append("gateway")
    if doc.has("node"):
        found.append(doc.table("node").get("role") or "node")
    if doc.has("cluster") or not found:
        found.insert(0, "up")
    return found


def _fields(obj: Any, *skip: str) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name not in skip}


def _profile(model: str, overrides: dict[str, Any]) -> dict[str, Any]:
    try:
        return load_profile(model, overrides).to_dict()
    except (ValueError, OSError) as exc:
        raise ValueError(f"reasoning profile: {exc}") from None


def secrets_line(env: Mapping[str, str]) -> str:
    """Which secret variables are set, never their values; a key file must be readable."""
    for name in ("SPLITMIND_API_KEY_FILE", "SPLITMIND_ADMIN_KEY_FILE"):
        if env.get(name) and not Path(env[name]).is_file():
            raise ValueError(f"{name}: no such file: {env[name]}")
    state = [f"{name} {'set' if env.get(name) else 'not set'}" for name in SECRET_VARIABLES]
    return "# secrets (values never shown): " + ", ".join(state)


def check_gateway(doc: Document) -> GatewayConfig:
    """The gateway's configuration, with its model directory and reasoning profile checked."""
    gateway = gateway_config(doc)
    check_model_dir(gateway.model, "serve.model")
    _profile(gateway.model, gateway.reasoning_profile)
    return gateway


def check(doc: Document, roles: list[str], env: Mapping[str, str]) -> str:
    """The resolved configuration of `roles` as TOML, with a header naming what was checked."""
    sections: dict[str, Any] = {}
    header = [f"# splitmind check-config {doc.path or '(no file)'}: {', '.join(roles)}"]
    if doc.from_env:
        header.append("# set from the environment: " + ", ".join(doc.from_env))
    for role in roles:
        if role == "up":
            cluster = cluster_config(doc)
            model = model_dir(cluster.model or "")
            check_model_dir(model, "cluster.model")
            sections["cluster"] = {**_fields(cluster, "engine", "gateway", "reasoning"), "model": model,
                                   "served_model_name": cluster.served_model_name or Path(model).name}
            sections["engine"] = _fields(cluster.engine)
            sections["gateway"] = _fields(cluster.gateway)
            sections["reasoning"] = _profile(model, cluster.reasoning)
        elif role == "gateway":
            gateway = check_gateway(doc)
            sections["serve"] = {"model": gateway.model, "served_model_name": gateway.served_model_name,
                                 "host": gateway.host, "port": gateway.port, "keys_dir": gateway.keys_dir}
            sections["workers"] = [_fields(w) for w in gateway.workers]
            sections["discover"] = [_fields(d) for d in gateway.discover]
            sections["gateway"] = _fields(gateway.tuning)
            sections["reasoning"] = _profile(gateway.model, gateway.reasoning_profile)
            header.append(secrets_line(env))
            if not is_loopback(gateway.host) and not any(env.get(n) for n in SECRET_VARIABLES[:2]):
                header.append(f"# warning: the gateway listens on {gateway.host} with no API key: anyone who can "
                              "reach it can use it, /admin included")
        else:  # prefill, decode, or "node": a [node] that leaves its role to --role
            node = node_config(doc, role if role in ROLES else None)
            engine = build(EngineConfig, doc.table("engine"), "engine")
            if node.role:
                node_spec(node, engine)
            check_model_dir(node.model, "node.model")
            sections["node"] = _fields(node)
            sections["engine"] = _fields(engine)
            if not node.role:
                header.append("# node.role is not set: `splitmind node --role prefill|decode` gives it")
    ordered = {name: sections[name] for name in _ORDER if name in sections}
    return "\n".join(header) + "\n\n" + to_toml(ordered)
