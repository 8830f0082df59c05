"""API keys reach the gateway through its environment and nothing else does: not the nodes,
not a command line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import typer

from splitmind.cli_parts import gateway_keys as _gateway_keys
from splitmind.config import ClusterConfig
from splitmind.launcher import Cluster


def test_keys_from_the_command_line_become_the_gateways_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("sk-1\n")
    env = _gateway_keys(["sk-a", "sk-b"], key_file, "sk-admin")
    assert env == {"SPLITMIND_API_KEY": "sk-a,sk-b", "SPLITMIND_API_KEY_FILE": str(key_file.resolve()),
                   "SPLITMIND_ADMIN_KEY": "sk-admin"}
    assert _gateway_keys([], None, None) == {}
    with pytest.raises(typer.Exit):
        _gateway_keys([], tmp_path / "missing", None)


def test_only_the_gateway_is_given_the_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node has no use for the keys; a key in the launcher's own environment (a user's
    `export SPLITMIND_API_KEY=...`) is not passed on to nodes either."""
    monkeypatch.setenv("SPLITMIND_API_KEY", "sk-from-shell")
    cluster = Cluster(ClusterConfig(model="/m"), "/m", tmp_path, say=lambda s: None,
                      gateway_env={"SPLITMIND_API_KEY": "sk-x"})
    probe = ["-c", "import os, sys; sys.stdout.write(os.environ.get('SPLITMIND_API_KEY', '-'))"]
    node = cluster._spawn("decode-0", probe)
    gateway = cluster._spawn("gateway", probe, cluster.gateway_env)
    for child in (node, gateway):
        child.proc.wait(30)
        child.log_file.close()
    assert node.log_path.read_text() == "-"
    assert gateway.log_path.read_text() == "sk-x"
    assert "sk-x" not in " ".join(map(str, gateway.proc.args)) and sys.executable in gateway.proc.args
