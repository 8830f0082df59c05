"""The parts run separately, one process per container: `splitmind gateway`, `splitmind node`,
and `splitmind check-config`, all from one config file plus environment variables
(splitmind/config_file.py).

`gateway` and `node` check everything `check-config` checks, then check their ports, then
replace themselves (exec) with the process `splitmind up` starts for that part, `python -m api
--config JSON` or `python -m prefill_node|decode_node --spec JSON`: the same code runs either way,
the process keeps its pid (a container's signals reach it, SIGTERM drains a gateway and stops a
node's engine), and its exit code is the container's. The JSON is built here, never by hand.
Exit codes: 2 for a configuration error, 1 for a port in use, and a node's own (3: its engine
could not run the warm-up request, the reason on stderr).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import msgspec
import typer

from splitmind.config import EngineConfig, is_loopback
from splitmind.config_check import CHECK_ROLES, check, check_gateway, roles_in
from splitmind.config_file import build, node_config, node_spec, read
from splitmind.ports import PortError, check_free
from splitmind.standalone import check_model_dir

ROOT = Path(__file__).resolve().parent.parent

ApiKeys = Annotated[Optional[list[str]], typer.Option(
    envvar="SPLITMIND_API_KEY", show_envvar=True,
    help="API key clients send as 'Authorization: Bearer KEY'; repeat it, or separate keys with commas. Prefer "
         "the environment variable or --api-key-file: a command line is visible to every local user. "
         "[default: none, every endpoint open]")]
ApiKeyFile = Annotated[Optional[Path], typer.Option(
    envvar="SPLITMIND_API_KEY_FILE", show_envvar=True, help="File with API keys, one a line.")]
AdminKey = Annotated[Optional[str], typer.Option(
    envvar="SPLITMIND_ADMIN_KEY", show_envvar=True,
    help="Key for /admin/* (and /metrics with metrics_access = \"admin_key\"). [default: none, /admin closed "
         "when API keys are set]")]
ConfigFile = Annotated[Optional[Path], typer.Option(
    envvar="SPLITMIND_CONFIG", show_envvar=True,
    help="TOML config file, one for every role; SPLITMIND__<TABLE>__<KEY> variables override it. "
         "[default: none, the environment and defaults only]")]


def fail(message: object, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def gateway_keys(api_keys: list[str], api_key_file: Path | None, admin_key: str | None) -> dict[str, str]:
    """The gateway's keys as environment variables (its command line would show them in `ps`)."""
    env = {}
    if api_keys:
        env["SPLITMIND_API_KEY"] = ",".join(api_keys)
    if api_key_file is not None:
        if not api_key_file.is_file():
            fail(f"--api-key-file {api_key_file}: no such file")
        env["SPLITMIND_API_KEY_FILE"] = str(api_key_file.resolve())
    if admin_key:
        env["SPLITMIND_ADMIN_KEY"] = admin_key
    return env


def exec_python(args: list[str], extra_env: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> NoReturn:
    """Become `python ARGS`, with `extra_env` and without the variables starting with `drop` (tests
    replace this)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(drop)} if drop else dict(os.environ)
    env = {**inherited, **(extra_env or {}), "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *args], env)


def _check_ports(ports: list[tuple[str, str, int]]) -> None:
    try:
        check_free(ports)
    except PortError as exc:
        fail(exc, code=1)


def gateway(config: ConfigFile = None, api_key: ApiKeys = None, api_key_file: ApiKeyFile = None,
            admin_key: AdminKey = None) -> None:
    """Run one gateway from [serve], [[workers]]/[[discover]], [gateway] and [reasoning]; SIGTERM drains it."""
    try:
        cfg = check_gateway(read(config, os.environ))
    except (ValueError, OSError) as exc:
        fail(exc)
    key_env = gateway_keys(api_key or [], api_key_file, admin_key)
    if not key_env and not is_loopback(cfg.host):
        typer.echo(f"[splitmind] warning: the gateway listens on {cfg.host} with no API key: anyone who can reach "
                   "it can use it, /admin included. Set SPLITMIND_API_KEY.", err=True)
    _check_ports([("gateway", cfg.host, cfg.port)])
    typer.echo(f"[splitmind] gateway for {cfg.served_model_name} on {cfg.host}:{cfg.port}: {len(cfg.workers)} "
               f"worker(s) by address, {len(cfg.discover)} DNS name(s)")
    exec_python(["-m", "api", "--config", msgspec.json.encode(cfg).decode()], key_env)


def node(config: ConfigFile = None, role: Annotated[Optional[str], typer.Option(
        help="prefill or decode. [default: role in [node], or SPLITMIND__NODE__ROLE]")] = None) -> None:
    """Run one prefill or decode node from [node] and [engine]: it loads the model and runs a warm-up
    request before it answers; if it cannot start it exits non-zero with the reason on stderr."""
    from splitmind.launcher import KEY_VARIABLES, NODE_MODULES

    try:
        doc = read(config, os.environ)
        spec = node_spec(node_config(doc, role), build(EngineConfig, doc.table("engine"), "engine"))
        check_model_dir(spec.model, "node.model")
    except (ValueError, OSError) as exc:
        fail(exc)
    planes = {"rpc": spec.rpc_address, "stats": spec.stats_address}
    _check_ports([(f"{spec.worker_id} {what}", address.removeprefix("tcp://").rsplit(":", 1)[0],
                   int(address.rsplit(":", 1)[1])) for what, address in planes.items()]
                 + [(f"{spec.worker_id} NIXL side channel", spec.nixl_host, spec.nixl_port)])
    typer.echo(f"[splitmind] node {spec.worker_id} ({spec.role.name.lower()}): requests {spec.rpc_address}, stats "
               f"{spec.stats_address}, NIXL {spec.nixl_host}:{spec.nixl_port}; loading {spec.model}")
    # A node has no use for the clients' keys, nor its vLLM engine processes, which inherit them.
    exec_python(["-m", NODE_MODULES[spec.role], "--spec", msgspec.json.encode(spec).decode()], drop=KEY_VARIABLES)


def check_config(
    file: Annotated[Optional[Path], typer.Argument(
        envvar="SPLITMIND_CONFIG", show_envvar=True, metavar="FILE",
        help="TOML config file. [default: none, the environment and defaults only]")] = None,
    role: Annotated[Optional[str], typer.Option(
        help="up, gateway, prefill or decode. [default: every role the file configures]")] = None,
) -> None:
    """Check a config file as a role would (nothing is loaded or started) and print the configuration it
    would run: defaults filled in, SPLITMIND__* variables applied, secrets never shown. Exit 2 on an error."""
    if role is not None and role not in CHECK_ROLES:
        fail(f"--role must be one of {', '.join(CHECK_ROLES)}, not {role!r}")
    try:
        doc = read(file, os.environ)
        text = check(doc, [role] if role else roles_in(doc), os.environ)
    except (ValueError, OSError) as exc:
        fail(exc)
    typer.echo(text, nl=False)
