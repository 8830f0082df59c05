"""`splitmind probe` and `splitmind drain`: what a container's health checks and a node's pre-stop
hook run (deploy/k8s, deploy/compose.yaml, the images' HEALTHCHECK). Both read the same config
file and `SPLITMIND__*` variables as the part they check, so they look where it listens.

probe, exit 0 when the part in this container can serve, 1 when it cannot (the reason on stderr):
    gateway   GET /health on its own port is 200: a decode node is up (api/app.py).
    node      its request plane answers a HealthRequest. A node opens its sockets only after its
              warm-up request ran (splitmind/node/main.py), so "ready" means the model has run; and
              the reply comes from its event loop, so a loop that hangs fails the probe where a TCP
              check (the kernel accepting for libzmq's I/O thread) would pass.
    auto      (no --role) [node] role if the config sets one; otherwise whichever of the gateway's
              port and the node's request port accepts a connection on this host.

The probe talks to a node as a gateway does: over CURVE when the node has `keys_dir`, with the
gateway's key pair and the nodes' public key (gateway.key_secret, node.key) from that directory.
A node's pod therefore holds the gateway's key pair next to its own (docs/operations.md says why
that is accepted, and what it means).

drain, a node's pre-stop hook: once its pod is terminating, the pod leaves its headless Service,
and gateways stop sending it work within their DNS refresh (`resolve_interval_s`, plus the DNS
cache). The hook watches the node's stats plane and returns when the node has reported no running
or waiting request for `--quiet-s` in a row (longer than that refresh, so that a request routed
just before it is seen), or after `--max-s`; then SIGTERM stops the node. Streams that outlast
`--max-s` are cut when the node stops, and the gateway moves them to another decode node.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Annotated, Optional

import typer
import zmq

from splitmind import curve
from splitmind.cli_parts import ConfigFile, fail
from splitmind.config_file import Document, build, read
from splitmind.protocol import NodeStats, Role, stats_decoder
from splitmind.standalone import ROLES, NodeConfig, ServeConfig

PROBE_ROLES = ("auto", "gateway", *ROLES)
NODE_GONE_S = 5.0  # no heartbeat for this long: the node is not there to drain


def local_host(host: str) -> str:
    """Where to reach a part that listens on `host` from inside its own container."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def listening(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def gateway_target(doc: Document) -> str:
    serve = build(ServeConfig, doc.table("serve"), "serve")
    host = local_host(serve.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{serve.port}/health"


def node_config_for_probe(doc: Document, role: str | None) -> NodeConfig:
    table = doc.table("node")
    if role:
        table["role"] = role
    return build(NodeConfig, table, "node")


def node_keys(node: NodeConfig) -> curve.CurveClientKeys | None:
    if not node.keys_dir:
        return None
    try:
        return curve.load_client_keys(node.keys_dir)
    except ValueError as exc:
        raise ValueError(f"node.keys_dir: the probe talks to the node as a gateway does, so it needs "
                         f"gateway.key_secret and node.key there too: {exc}") from None


def address(node: NodeConfig, port: int) -> str:
    host = local_host(node.host)
    return f"tcp://{f'[{host}]' if ':' in host else host}:{port}"


def check_gateway(url: str, timeout_s: float) -> str | None:
    """None when /health is 200, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return None if r.status == 200 else f"{url} answered {r.status}"
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}: {exc.read(300).decode(errors='replace')}"
    except OSError as exc:
        return f"{url}: {exc}"


def check_node(node: NodeConfig, timeout_s: float) -> str | None:
    """None when the node's request plane answers a HealthRequest (in the expected role), else why not."""
    from splitmind.launcher import ping_node

    target = address(node, node.rpc_port)
    reply = ping_node(target, timeout_s, node_keys(node))
    if reply is None:
        return f"no health reply from {target} within {timeout_s:g} s (still warming up, or not running)"
    if node.role and reply.role != Role[node.role.upper()]:
        return f"{target} is a {reply.role.name.lower()} node, not {node.role}"
    return None


def choose_role(doc: Document) -> str:
    """auto: the config's [node] role, else whichever part listens here."""
    role = doc.table("node").get("role") or ""
    if role:
        return str(role)
    gateway = build(ServeConfig, doc.table("serve"), "serve")
    if listening(local_host(gateway.host), gateway.port):
        return "gateway"
    node = node_config_for_probe(doc, None)
    if listening(local_host(node.host), node.rpc_port):
        return "node"
    raise LookupError(f"nothing listens on the gateway's port {gateway.port} or a node's request port "
                      f"{node.rpc_port} here (yet)")


def probe(config: ConfigFile = None,
          role: Annotated[str, typer.Option(help="gateway, prefill, decode, or auto: the config's [node] role, "
                                                 "else whichever part listens here.")] = "auto",
          timeout_s: Annotated[float, typer.Option(help="How long to wait for the answer.")] = 3.0) -> None:
    """Exit 0 when the part in this container can serve, 1 when it cannot (the reason on stderr): a gateway's
    /health, or a node's answer to a health request (it answers only after its warm-up request ran)."""
    if role not in PROBE_ROLES:
        fail(f"--role must be one of {', '.join(PROBE_ROLES)}, not {role!r}")
    try:
        doc = read(config, os.environ)
        chosen = choose_role(doc) if role == "auto" else role
        if chosen == "gateway":
            problem = check_gateway(gateway_target(doc), timeout_s)
        else:
            problem = check_node(node_config_for_probe(doc, chosen if chosen in ROLES else None), timeout_s)
    except LookupError as exc:
        problem = str(exc)
    except (ValueError, OSError) as exc:
        fail(exc)
    if problem is not None:
        fail(problem, code=1)
    typer.echo(f"ok: {chosen}")


def wait_idle(stats_address: str, keys: curve.CurveClientKeys | None, quiet_s: float, max_s: float,
              say: Callable[[str], None], gone_s: float = NODE_GONE_S) -> bool:
    """True once the node reported nothing running or waiting for `quiet_s` in a row, or stopped
    publishing (gone); False when `max_s` ran out first."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        curve.make_client(sock, keys)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(stats_address)
    clock = time.monotonic
    start = last_seen = clock()
    idle_since: float | None = None
    busy_reported = -1
    try:
        while clock() - start < max_s:
            if sock.poll(250):
                frames = sock.recv_multipart()
                stats: NodeStats = stats_decoder.decode(frames[-1])
                last_seen = clock()
                busy = stats.num_running + stats.num_waiting
                if busy:
                    idle_since = None
                    if busy != busy_reported:
                        say(f"{busy} request(s) open on {stats.worker_id}; waiting")
                        busy_reported = busy
                elif idle_since is None:
                    idle_since = last_seen
            if clock() - last_seen > gone_s:
                say(f"no stats from {stats_address} for {gone_s:g} s: nothing to drain")
                return True
            if idle_since is not None and clock() - idle_since >= quiet_s:
                return True
        return False
    finally:
        sock.close()


def drain(config: ConfigFile = None,
          quiet_s: Annotated[float, typer.Option(help="Return after the node has had no request for this long; "
                                                      "longer than gateways take to see it leave DNS.")] = 15.0,
          max_s: Annotated[float, typer.Option(help="Give up waiting after this long (exit 0 all the same).")] = 600.0,
          role: Annotated[Optional[str], typer.Option(help="prefill or decode. [default: [node] role]")] = None,
          ) -> None:
    """A node's pre-stop hook: wait until it has no open request (gateways stopped sending it work, and its
    streams finished), so that SIGTERM then stops an idle node. Exits 0, also when `--max-s` runs out."""
    try:
        node = node_config_for_probe(read(config, os.environ), role)
        keys = node_keys(node)
    except (ValueError, OSError) as exc:
        fail(exc)
    t0 = time.monotonic()
    idle = wait_idle(address(node, node.stats_port), keys, quiet_s, max_s, typer.echo)
    took = time.monotonic() - t0
    typer.echo(f"drained in {took:.0f} s" if idle else f"still busy after {max_s:g} s; stopping anyway")

