"""The config file and its environment overrides: one TOML document for every role.

Tables (each typed by the dataclass it builds; an unknown table or key is an error):

    [cluster]                  ClusterConfig     `splitmind up`
    [serve]                    ServeConfig       `splitmind gateway` (splitmind/standalone.py)
    [[workers]] [[discover]]   WorkerAddress, WorkerDNS: the gateway's workers
    [node]                     NodeConfig        `splitmind node` (splitmind/standalone.py)
    [engine]                   EngineConfig      every node's vLLM engine
    [gateway]                  GatewayTuning     every gateway's timeouts and routing
    [reasoning]                the reasoning profile, key by key (splitmind/reasoning_profile.py)

Any key can be set from the environment instead (a Kubernetes pod's `env`), values typed by the
field (splitmind/config_values.py), names in any case:

    SPLITMIND__<TABLE>__<KEY>=value            SPLITMIND__ENGINE__KV_CACHE_GIB=2
    SPLITMIND__<ARRAY>__<N>__<KEY>=value       SPLITMIND__WORKERS__0__RPC_ADDRESS=tcp://10.0.0.7:8100
    SPLITMIND__REASONING__EFFORT_BUDGETS__<LEVEL>=N

N counts the file's entries from 0; the next N past them adds an entry (no gaps). The double
underscore sets these apart from variables that are not configuration (`SPLITMIND_API_KEY`,
`SPLITMIND_CONFIG`), and a variable that names no table or key is an error, as an unknown key in
the file is: a typo must not leave a default silently in place. Precedence: command-line flags,
then the environment, then the file, then the defaults. Secrets (API and admin keys) are not
configuration: they stay in their own variables and files (api/auth.py).
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from splitmind import config_values
from splitmind.config import (
    ClusterConfig,
    EngineConfig,
    GatewayConfig,
    GatewayTuning,
    NodeSpec,
    WorkerAddress,
    WorkerDNS,
)
from splitmind.protocol import Role
from splitmind.reasoning_profile import EFFORTS, ReasoningProfile
from splitmind.standalone import NodeConfig, ServeConfig

PREFIX = "SPLITMIND__"
TABLES: dict[str, type[Any]] = {"cluster": ClusterConfig, "serve": ServeConfig, "node": NodeConfig,
                                 "engine": EngineConfig, "gateway": GatewayTuning, "reasoning": ReasoningProfile}
ARRAYS: dict[str, type[Any]] = {"workers": WorkerAddress, "discover": WorkerDNS}
_NOT_KEYS = {"cluster": {"engine", "gateway", "reasoning"}}  # ClusterConfig fields that are tables

T = TypeVar("T")


def fields_of(table: str) -> dict[str, Any]:
    """A table's keys and their types."""
    cls = TABLES.get(table) or ARRAYS[table]
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name not in _NOT_KEYS.get(table, ())}


@dataclass(frozen=True)
class Document:
    """The file with the environment applied, every value checked against its field's type."""

    data: dict[str, Any]  # table -> {key: value}; array -> [{key: value}, ...]
    path: Path | None = None
    from_env: tuple[str, ...] = ()  # the variables that set something

    def table(self, name: str) -> dict[str, Any]:
        return dict(self.data.get(name, {}))

    def entries(self, name: str) -> list[dict[str, Any]]:
        return [dict(e) for e in self.data.get(name, [])]

    def has(self, *names: str) -> bool:
        return any(name in self.data for name in names)


def read(path: Path | None, env: Mapping[str, str] | None = None) -> Document:
    """Read the TOML file (optional) and apply `SPLITMIND__*` variables from `env`."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(TABLES) - set(ARRAYS))
    if unknown:
        raise ValueError(f"unknown table(s) in {path}: {', '.join(unknown)}")
    for name, value in data.items():
        if name in ARRAYS:
            if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
                raise ValueError(f"{name} must be an array of tables ([[{name}]]), not [{name}]")
            data[name] = [_checked(name, e, f"{name}[{i}]") for i, e in enumerate(value)]
        elif not isinstance(value, dict):
            raise ValueError(f"{name} must be a table ([{name}])")
        else:
            data[name] = _checked(name, value, name)
    applied = []
    for variable in sorted(env or {}):
        if variable.upper().startswith(PREFIX):
            _apply(data, variable, (env or {})[variable])
            applied.append(variable)
    return Document(data, path, tuple(applied))


def _checked(table: str, values: dict[str, Any], where: str) -> dict[str, Any]:
    hints = fields_of(table)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ValueError(f"unknown key(s) in [{where}]: {', '.join(unknown)}")
    return {k: config_values.check(f"{where}.{k}", v, hints[k]) for k, v in values.items()}


def _apply(data: dict[str, Any], variable: str, text: str) -> None:
    parts = variable[len(PREFIX):].lower().split("__")
    table = parts[0]
    if table in ARRAYS and len(parts) == 3 and parts[1].isdigit():
        entries = data.setdefault(table, [])
        index = int(parts[1])
        if index > len(entries):
            raise ValueError(f"{variable}: [[{table}]] has {len(entries)} entries, so the next one is "
                             f"{table.upper()}__{len(entries)}")
        if index == len(entries):
            entries.append({})
        target, key, where = entries[index], parts[2], f"{table}[{index}]"
    elif table == "reasoning" and len(parts) == 3 and parts[1] == "effort_budgets":
        if parts[2] not in EFFORTS:
            raise ValueError(f"{variable}: reasoning.effort_budgets has the levels {', '.join(EFFORTS)}")
        budgets = data.setdefault("reasoning", {}).setdefault("effort_budgets", {})
        budgets[parts[2]] = config_values.parse(variable, f"reasoning.effort_budgets.{parts[2]}", text, int | None)
        return
    elif table in TABLES and len(parts) == 2:
        target, key, where = data.setdefault(table, {}), parts[1], table
    else:
        raise ValueError(f"{variable}: no such setting (SPLITMIND__<TABLE>__<KEY>, or SPLITMIND__<ARRAY>__<N>__<KEY> "
                         f"for {', '.join(ARRAYS)}; tables: {', '.join(TABLES)})")
    hints = fields_of(table)
    if key not in hints:
        raise ValueError(f"{variable}: [{table}] has no key {key!r}")
    target[key] = config_values.parse(variable, f"{where}.{key}", text, hints[key])


def build(cls: type[T], values: dict[str, Any], where: str) -> T:
    """`cls(**values)`; a required key that is missing is named."""
    missing = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
               if f.name not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"[{where}] needs {', '.join(missing)}")
    return cls(**values)


def cluster_config(doc: Document, **flags: Any) -> ClusterConfig:
    """`splitmind up`'s configuration; `flags` (None: not given) win over the document."""
    gateway = doc.table("gateway")
    if flags.get("reasoning") is not None:
        gateway["reasoning"] = flags["reasoning"]
    flags.pop("reasoning", None)
    cluster = {**doc.table("cluster"), **{k: v for k, v in flags.items() if v is not None}}
    return build(ClusterConfig, {**cluster, "engine": build(EngineConfig, doc.table("engine"), "engine"),
                                 "gateway": build(GatewayTuning, gateway, "gateway"),
                                 "reasoning": doc.table("reasoning")}, "cluster")


def load_cluster_config(path: Path | None, env: Mapping[str, str] | None = None, **flags: Any) -> ClusterConfig:
    """Read a TOML file (optional), apply `env` and then command-line flags (None: not given)."""
    return cluster_config(read(path, env), **flags)


def gateway_config(doc: Document) -> GatewayConfig:
    """`splitmind gateway`'s configuration: [serve], [[workers]], [[discover]], [gateway], [reasoning]."""
    serve = build(ServeConfig, doc.table("serve"), "serve").resolved()
    workers = tuple(build(WorkerAddress, e, f"workers[{i}]") for i, e in enumerate(doc.entries("workers")))
    discover = tuple(build(WorkerDNS, e, f"discover[{i}]") for i, e in enumerate(doc.entries("discover")))
    return GatewayConfig(model=serve.model, served_model_name=serve.served_model_name, host=serve.host,
                         port=serve.port, workers=workers, tuning=build(GatewayTuning, doc.table("gateway"), "gateway"),
                         reasoning_profile=doc.table("reasoning"), keys_dir=serve.keys_dir, discover=discover)


def node_config(doc: Document, role: str | None = None) -> NodeConfig:
    """`splitmind node`'s [node], every default filled in; `role` (the --role flag) wins."""
    table = doc.table("node")
    if role:
        table["role"] = role
    return build(NodeConfig, table, "node").resolved(fallback_model=doc.table("serve").get("model", ""))


def node_spec(node: NodeConfig, engine: EngineConfig) -> NodeSpec:
    """What the node process runs (`python -m prefill_node --spec`), from a resolved [node]."""
    if not node.role:
        raise ValueError("node.role is not set: pass --role prefill|decode, or set role in [node] "
                         "(or SPLITMIND__NODE__ROLE)")
    return NodeSpec(worker_id=node.worker_id, role=Role[node.role.upper()], model=node.model, engine=engine,
                    rpc_address=f"tcp://{node.host}:{node.rpc_port}",
                    stats_address=f"tcp://{node.host}:{node.stats_port}",
                    nixl_host=node.nixl_host, nixl_port=node.nixl_port, cpus=node.cpus, keys_dir=node.keys_dir)
