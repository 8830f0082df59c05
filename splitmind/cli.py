"""The `splitmind` command line."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from splitmind.cli_parts import AdminKey, ApiKeyFile, ApiKeys, check_config, gateway, gateway_keys, node
from splitmind.probe import drain, probe

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="splitmind: disaggregated serving for reasoning models.")


@app.command()
def up(
    model: Annotated[Optional[Path], typer.Option(
        help="Model directory (a Hugging Face checkpoint). [default: the bundled models/tiny-reasoner]")] = None,
    host: Annotated[Optional[str], typer.Option(help="Gateway host. [default: 127.0.0.1]")] = None,
    port: Annotated[Optional[int], typer.Option(help="Gateway port. [default: 8000]")] = None,
    prefill: Annotated[Optional[int], typer.Option(help="Prefill nodes; 0 = colocated. [default: 1]")] = None,
    decode: Annotated[Optional[int], typer.Option(help="Decode nodes. [default: 1]")] = None,
    config: Annotated[Optional[Path], typer.Option(
        envvar="SPLITMIND_CONFIG", show_envvar=True,
        help="TOML config file ([cluster], [engine], [gateway], [reasoning]); SPLITMIND__<TABLE>__<KEY> variables "
             "override it, flags override both.")] = None,
    log_dir: Annotated[Path, typer.Option(
        help="Where logs go: each run in its own folder, LOG_DIR/latest the newest.")] = Path(".splitmind/logs"),
    keys_dir: Annotated[Optional[Path], typer.Option(
        help="CURVE keys from `splitmind keys DIR`: nodes then serve only the gateway's key. [default: none]")
    ] = None,
    mtp_tokens: Annotated[Optional[int], typer.Option(
        help="MTP speculative tokens on the nodes; 0 turns MTP off. [default: 1 if the model has MTP layers]")] = None,
    kv_transport: Annotated[Optional[str], typer.Option(
        help="How prefill's KV reaches decode: nixl (RDMA/UCX, decode pulls) or zmq (plain TCP, prefill pushes "
             "layer by layer). [default: nixl]")] = None,
    reasoning: Annotated[Optional[str], typer.Option(
        help="visible, or hidden: no response carries reasoning text, whatever a request asks. [default: visible]")
    ] = None,
    api_key: ApiKeys = None,
    api_key_file: ApiKeyFile = None,
    admin_key: AdminKey = None,
) -> None:
    """Start a gateway, prefill node(s) and decode node(s) on this machine; Ctrl-C stops them all."""
    from splitmind.config_file import load_cluster_config
    from splitmind.launcher import Cluster, LaunchError

    try:
        cfg = load_cluster_config(config, os.environ, model=str(model) if model else None, host=host, port=port,
                                  num_prefill=prefill, num_decode=decode, reasoning=reasoning,
                                  keys_dir=str(keys_dir) if keys_dir else None)
        if mtp_tokens is not None:
            cfg = dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, mtp_tokens=mtp_tokens))
        if kv_transport is not None:
            cfg = dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, kv_transport=kv_transport))
    except (ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if cfg.model is None:
        from models import BUNDLED_MODEL

        cfg = dataclasses.replace(cfg, model=str(BUNDLED_MODEL))
    model_dir = Path(str(cfg.model))
    if not (model_dir / "config.json").exists():
        typer.echo(f"error: {model_dir} is not a model directory (no config.json). Pass --model DIR, a Hugging "
                   "Face checkpoint directory, or retrain the bundled one: "
                   ".venv/bin/python -m models.tiny_reasoner.build", err=True)
        raise typer.Exit(2)
    try:
        from splitmind.reasoning_profile import load_profile

        load_profile(model_dir, cfg.reasoning)  # the gateway loads it again; a bad one fails here, at once
    except (ValueError, OSError) as exc:
        typer.echo(f"error: reasoning profile: {exc}", err=True)
        raise typer.Exit(2) from None

    stop_requested: list[bool] = []

    def on_signal(signum: int, frame: object) -> None:
        stop_requested.append(True)

    gateway_env = gateway_keys(api_key or [], api_key_file, admin_key)
    if not gateway_env and cfg.host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"[splitmind] warning: the gateway listens on {cfg.host} with no API key: anyone who can reach "
                   "it can use it, /admin included. Set SPLITMIND_API_KEY.", err=True)
    from splitmind.run_logs import new_run_dir

    run_dir = new_run_dir(log_dir)
    cluster = Cluster(cfg, str(model_dir.resolve()), run_dir, say=lambda s: typer.echo(f"[splitmind] {s}"),
                      gateway_env=gateway_env)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    t0 = time.monotonic()
    try:
        cluster.start()
        if not stop_requested:
            typer.echo(f"[splitmind] ready in {time.monotonic() - t0:.0f}s: {cluster.url}  "
                       f"(model {cluster.served_model_name}, prefill {cfg.num_prefill}, decode {cfg.num_decode}; "
                       f"Ctrl-C to stop)")
            typer.echo(f"[splitmind] chat in your browser: {cluster.url}/   API: {cluster.url}/v1")
            code = cluster.wait(stop_requested)
    except LaunchError as exc:
        typer.echo(f"[splitmind] error: {exc}", err=True)
        code = 1
    finally:
        typer.echo("[splitmind] stopping (open streams get a moment to finish; Ctrl-C again to stop now)")
        cluster.stop(hurry=lambda: len(stop_requested) > 1)
        typer.echo("[splitmind] stopped")
    raise typer.Exit(code)


@app.command()
def keys(
    keys_dir: Annotated[Path, typer.Argument(metavar="DIR", help="Directory to write the keys to.")],
    force: Annotated[bool, typer.Option("--force", help="Replace keys that exist.")] = False,
) -> None:
    """Make CURVE keys for the internal plane: a node key pair and a gateway key pair."""
    from splitmind.curve import create_keys

    try:
        written = create_keys(keys_dir, force=force)
    except (FileExistsError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for path in written:
        typer.echo(f"wrote {path}")
    typer.echo(f"""
One machine: splitmind up --keys-dir {keys_dir} (or keys_dir in [cluster]).
Across machines, copy:
  to every node machine:    node.key_secret, authorized/ (public keys of the gateways it serves)
  to every gateway machine: gateway.key_secret, node.key
Secret files stay mode 0600; they never leave the machines above.""")


app.command()(gateway)
app.command()(node)
app.command("check-config")(check_config)
app.command()(probe)
app.command()(drain)


@app.command("make-test-model")
def make_test_model(
    out: Annotated[Path, typer.Argument(help="Directory to write the checkpoint to.")],
    weights: Annotated[str, typer.Option(help="random (KV-sensitive) or scripted (fixed reasoning).")] = "scripted",
    template: Annotated[str, typer.Option(help="think_in_prompt (Qwen3/R1) or plain.")] = "think_in_prompt",
    no_think: Annotated[bool, typer.Option("--no-think", help="Tokenizer without think tokens.")] = False,
) -> None:
    """Write a tiny Qwen2 checkpoint with a real BPE tokenizer (for tests and trying the system)."""
    from models.test_checkpoints import CheckpointSpec, build_checkpoint

    try:
        spec = CheckpointSpec(weights=weights, template=template, think_tokens=not no_think)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    build_checkpoint(out, spec)
    typer.echo(f"wrote {out}")


def main() -> None:
    app(sys.argv[1:])


if __name__ == "__main__":
    main()
