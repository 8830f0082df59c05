"""A gateway or a node on its own, one process per container: the `[serve]` and `[node]` tables.

`splitmind up` plans every process itself from `[cluster]`. In Kubernetes each part runs alone,
from one mounted config file (the same file for every role) plus environment variables:

    [serve]       `splitmind gateway`: the model it serves and where it listens. Its workers come
                  from [[workers]] (addresses) and [[discover]] (DNS names), its tuning from [gateway].
    [node]        `splitmind node`: who the node is and where it binds. Its engine comes from [engine].

Why `[serve]` and not `[gateway]`: `[gateway]` already holds the gateway's tuning, which
`splitmind up` reads too; moving it would break every config file there is, and keeping the
process's own settings apart lets one file describe a gateway for `up` and for `gateway` alike.

Defaults that depend on the machine are filled in by `resolved()`, so that `splitmind
check-config` can print what will run: a node's `worker_id` is the host name (in Kubernetes,
the pod's name), and its `nixl_host`, which vLLM binds *and* hands to decode nodes as the
address to fetch KV metadata from, is `host` unless that is a wildcard, and then the address
the host name resolves to (the pod's IP in Kubernetes). A wildcard is never handed out.
"""

from __future__ import annotations

import dataclasses
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from splitmind import curve
from splitmind.config import NODE_NIXL_PORT, NODE_RPC_PORT, NODE_STATS_PORT, is_loopback

WILDCARD_HOSTS = ("0.0.0.0", "::")
ROLES = ("prefill", "decode")
_CPUS = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")


def model_dir(model: str) -> str:
    """An absolute model directory; "": the bundled tiny reasoner, as `splitmind up` serves."""
    if not model:
        from models import BUNDLED_MODEL

        return str(BUNDLED_MODEL)
    return str(Path(model).resolve())


def check_model_dir(model: str, where: str) -> None:
    if not (Path(model) / "config.json").is_file():
        raise ValueError(f"{where} {model} is not a model directory (no config.json)")


def _check_keys(where: str, load: Callable[[str], object], keys_dir: str) -> None:
    try:
        load(keys_dir)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class ServeConfig:
    """[serve]: what a gateway on its own serves, and where."""

    model: str = ""  # model directory (tokenizer, chat template); "": the bundled models/tiny-reasoner
    served_model_name: str = ""  # the name clients ask for; "": the model directory's name
    host: str = "127.0.0.1"  # where the HTTP API listens; 0.0.0.0 in a container
    port: int = 8000
    keys_dir: str = ""  # CURVE client keys (gateway.key_secret, node.key); "": plain TCP to the nodes

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("serve.host must not be empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"serve.port out of range: {self.port}")
        if self.keys_dir:
            _check_keys("serve.keys_dir", curve.load_client_keys, self.keys_dir)

    def resolved(self) -> ServeConfig:
        model = model_dir(self.model)
        return dataclasses.replace(self, model=model, served_model_name=self.served_model_name or Path(model).name,
                                   keys_dir=str(Path(self.keys_dir).resolve()) if self.keys_dir else "")


@dataclass(frozen=True)
class NodeConfig:
    """[node]: one prefill or decode node on its own."""

    worker_id: str = ""  # how the gateway names it; "": this machine's host name (the pod's name)
    role: str = ""  # "prefill" or "decode"; "": `splitmind node --role` says
    model: str = ""  # "": [serve]'s model, else the bundled models/tiny-reasoner
    host: str = "127.0.0.1"  # where the request and stats planes bind; other than loopback needs keys_dir
    rpc_port: int = NODE_RPC_PORT  # request plane (ZMQ ROUTER)
    stats_port: int = NODE_STATS_PORT  # stats plane (ZMQ PUB)
    nixl_host: str = ""  # NIXL side channel, bound and sent to decode nodes; "": see the module docstring
    nixl_port: int = NODE_NIXL_PORT
    keys_dir: str = ""  # CURVE server keys (node.key_secret, authorized/); "": plain TCP
    cpus: str = ""  # cores for the node's engine, e.g. "0-3" (VLLM_CPU_OMP_THREADS_BIND); "": all

    def __post_init__(self) -> None:
        if self.role not in ("", *ROLES):
            raise ValueError(f"node.role must be prefill or decode, not {self.role!r}")
        if not self.host:
            raise ValueError("node.host must not be empty")
        ports = {"rpc_port": self.rpc_port, "stats_port": self.stats_port, "nixl_port": self.nixl_port}
        for name, port in ports.items():
            if not 0 < port < 65536:
                raise ValueError(f"node.{name} out of range: {port}")
        if len(set(ports.values())) < len(ports):
            raise ValueError(f"node.rpc_port, stats_port and nixl_port must differ, not {sorted(ports.values())}")
        if self.nixl_host in WILDCARD_HOSTS:
            raise ValueError(f"node.nixl_host {self.nixl_host} is sent to decode nodes as the address of this "
                             "node's KV: give an address they can reach (or leave it out)")
        if self.cpus and not _CPUS.fullmatch(self.cpus):
            raise ValueError(f"node.cpus must list cores such as \"0\", \"2-3\" or \"0,2-3\", not {self.cpus!r}")
        if self.keys_dir:
            _check_keys("node.keys_dir", curve.load_server_keys, self.keys_dir)
        else:
            for name in ("host", "nixl_host"):
                host = getattr(self, name)
                if host and not is_loopback(host):
                    raise ValueError(f"node.{name} {host} is reachable from other machines: set node.keys_dir "
                                     "(make keys with `splitmind keys DIR`), so that the node takes requests "
                                     "only from gateways with a known key")

    def resolved(self, fallback_model: str = "") -> NodeConfig:
        """Every default filled in: worker_id, model (absolute), nixl_host, keys_dir (absolute)."""
        host_name = socket.gethostname()
        nixl_host = self.nixl_host or self.host
        if nixl_host in WILDCARD_HOSTS:
            try:
                nixl_host = socket.gethostbyname(host_name)
            except OSError as exc:
                raise ValueError(f"node.nixl_host is not set and node.host is {self.host}, so it would be the "
                                 f"address of this machine's name {host_name!r}, which does not resolve ({exc}): "
                                 "set node.nixl_host to an address decode nodes can reach") from None
        return dataclasses.replace(
            self, worker_id=self.worker_id or host_name, model=model_dir(self.model or fallback_model),
            nixl_host=nixl_host, keys_dir=str(Path(self.keys_dir).resolve()) if self.keys_dir else "")
