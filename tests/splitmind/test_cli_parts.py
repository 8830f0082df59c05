"""`splitmind check-config`, `splitmind gateway` and `splitmind node` (splitmind/cli_parts.py):
what they print, what they refuse, and the process they become. The exec is replaced here; the
real processes run in tests/e2e/test_parts.py."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import typer
from typer.testing import CliRunner

from splitmind import cli_parts
from splitmind.cli import app
from splitmind.config import GatewayConfig, NodeSpec
from splitmind.config_file import gateway_config, read
from splitmind.launcher import KEY_VARIABLES
from splitmind.ports import free_port
from splitmind.protocol import Role

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"SPLITMIND_API_KEY": "sk-never-printed-1", "SPLITMIND_ADMIN_KEY": "sk-never-printed-2"}


def parts_file(tmp_path: Path, extra: str = "", port: int = 8000) -> Path:
    f = tmp_path / "parts.toml"
    f.write_text(f"""
[serve]
port = {port}
[[workers]]
worker_id = "prefill-0"
role = "prefill"
rpc_address = "tcp://127.0.0.1:8100"
stats_address = "tcp://127.0.0.1:8101"
[[workers]]
worker_id = "decode-0"
role = "decode"
rpc_address = "tcp://127.0.0.1:8200"
stats_address = "tcp://127.0.0.1:8201"
[node]
worker_id = "node-a"
[engine]
kv_cache_gib = 1
{extra}""")
    return f


def invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, args, env=env or {})


def tables(stdout: str) -> dict[str, Any]:
    return tomllib.loads(stdout)


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict[str, str], tuple[str, ...]]]:
    calls: list[tuple[list[str], dict[str, str], tuple[str, ...]]] = []

    def become(args: list[str], extra_env: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> None:
        calls.append((args, extra_env or {}, drop))
        raise typer.Exit(0)

    monkeypatch.setattr(cli_parts, "exec_python", become)
    return calls


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def test_check_config_prints_what_would_run_and_no_secret(tmp_path: Path) -> None:
    result = invoke(["check-config", str(parts_file(tmp_path))],
                    {"SPLITMIND__NODE__RPC_PORT": "9100", "SPLITMIND__GATEWAY__DRAIN_S": "5", **SECRETS})
    assert result.exit_code == 0, result.output
    out = tables(result.stdout)
    assert set(out) == {"serve", "workers", "node", "engine", "gateway", "reasoning"}
    assert out["serve"] == {"model": str(ROOT / "models" / "tiny-reasoner"), "served_model_name": "tiny-reasoner",
                            "host": "127.0.0.1", "port": 8000, "keys_dir": ""}
    assert [w["role"] for w in out["workers"]] == ["prefill", "decode"]
    assert out["node"]["rpc_port"] == 9100 and out["node"]["nixl_port"] == 5600 and out["node"]["role"] == ""
    assert out["engine"]["kv_cache_gib"] == 1 and out["engine"]["max_num_seqs"] == 64  # the file, and a default
    assert out["gateway"]["drain_s"] == 5.0 and out["gateway"]["decode_policy"] == "least-tokens"
    assert out["reasoning"]["think_end"] == "</think>"  # from the model directory's profile
    assert "# max_model_len = <unset>" in result.stdout
    assert "set from the environment: SPLITMIND__GATEWAY__DRAIN_S, SPLITMIND__NODE__RPC_PORT" in result.stdout
    assert "SPLITMIND_API_KEY set" in result.stdout and "SPLITMIND_ADMIN_KEY set" in result.stdout
    assert not any(secret in result.output for secret in SECRETS.values())


def test_check_config_output_reads_back_as_the_same_config(tmp_path: Path) -> None:
    first = invoke(["check-config", str(parts_file(tmp_path)), "--role", "gateway"],
                   {"SPLITMIND__SERVE__PORT": "9000", "SPLITMIND__REASONING__EFFORT_BUDGETS__LOW": "50",
                    "SPLITMIND__DISCOVER__0__ROLE": "prefill", "SPLITMIND__DISCOVER__0__NAME": "splitmind-prefill"})
    again = tmp_path / "resolved.toml"
    again.write_text(first.stdout)
    second = invoke(["check-config", str(again), "--role", "gateway"])
    assert first.exit_code == second.exit_code == 0, second.output
    assert tables(first.stdout) == tables(second.stdout)
    assert tables(second.stdout)["reasoning"]["effort_budgets"]["low"] == 50
    assert tables(second.stdout)["discover"] == [{"role": "prefill", "name": "splitmind-prefill", "rpc_port": 8100,
                                                  "stats_port": 8101}]


@pytest.mark.parametrize("role, expected", [
    ("up", {"cluster", "engine", "gateway", "reasoning"}),
    ("gateway", {"serve", "workers", "gateway", "reasoning"}),  # no [[discover]]: a comment says none
    ("prefill", {"node", "engine"}),
    ("decode", {"node", "engine"}),
])
def test_check_config_for_each_role(tmp_path: Path, role: str, expected: set[str]) -> None:
    result = invoke(["check-config", str(parts_file(tmp_path)), "--role", role])
    assert result.exit_code == 0, result.output
    out = tables(result.stdout)
    assert set(out) == expected
    if role in ("prefill", "decode"):
        assert out["node"]["role"] == role and out["node"]["worker_id"] == "node-a"
    if role == "up":
        assert out["cluster"]["num_prefill"] == 1 and out["cluster"]["served_model_name"] == "tiny-reasoner"


def test_check_config_file_from_the_environment(tmp_path: Path) -> None:
    result = invoke(["check-config", "--role", "decode"], {"SPLITMIND_CONFIG": str(parts_file(tmp_path))})
    assert result.exit_code == 0 and tables(result.stdout)["node"]["worker_id"] == "node-a"


@pytest.mark.parametrize("extra, env, args, message", [
    ("[node]\nprot = 1\n", {}, [], r"unknown key\(s\) in \[node\]: prot"),  # the file's second [node] table
    ("", {"SPLITMIND__SERVE__PORT": "http"}, [], r"SPLITMIND__SERVE__PORT: serve.port must be an integer"),
    ("", {"SPLITMIND__NODE__PROT": "1"}, [], r"SPLITMIND__NODE__PROT: \[node\] has no key 'prot'"),
    ("", {"SPLITMIND__NODE__HOST": "0.0.0.0"}, [], r"node.host 0.0.0.0 is reachable from other machines"),
    ("", {"SPLITMIND__SERVE__MODEL": "/"}, [], r"serve.model / is not a model directory \(no config.json\)"),
    ("", {"SPLITMIND_API_KEY_FILE": "/nonexistent"}, [], r"SPLITMIND_API_KEY_FILE: no such file"),
    ("[reasoning]\nanswer_reserve = -1\n", {}, [], r"reasoning profile: reasoning.answer_reserve"),
    ("", {}, ["--role", "router"], r"--role must be one of up, gateway, prefill, decode"),
    ("", {"SPLITMIND__WORKERS__1__ROLE": "prefill"}, ["--role", "gateway"], r"at least one decode worker"),
])
def test_check_config_errors_name_the_key_and_exit_2(tmp_path: Path, extra: str, env: dict[str, str],
                                                     args: list[str], message: str) -> None:
    f = parts_file(tmp_path)
    if extra.startswith("[node]"):
        f.write_text(f.read_text().replace("[node]\n", extra))
    elif extra:
        f.write_text(f.read_text() + extra)
    result = invoke(["check-config", str(f), *args], {**env, **SECRETS})
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and re.search(message, result.stderr), result.stderr
    assert not any(secret in result.output for secret in SECRETS.values())


def test_check_config_is_a_real_command_that_loads_nothing(tmp_path: Path) -> None:
    """Through the console script's code in a process of its own: no vLLM, no torch, exit codes
    as documented."""
    good, bad = parts_file(tmp_path), tmp_path / "bad.toml"
    bad.write_text("[serve]\nport = 0\n")
    probe = ("import sys\nfrom splitmind.cli import main\nsys.argv = ['splitmind', 'check-config', sys.argv[1]]\n"
             "try:\n    main()\nfinally:\n    assert 'vllm' not in sys.modules and 'torch' not in sys.modules\n")
    ok = subprocess.run([sys.executable, "-c", probe, str(good)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "[node]" in ok.stdout
    no = subprocess.run([str(ROOT / ".venv" / "bin" / "splitmind"), "check-config", str(bad)], capture_output=True,
                        text=True, cwd=ROOT, timeout=60)
    assert (no.returncode, no.stdout, no.stderr) == (2, "", "error: serve.port out of range: 0\n")


def test_gateway_becomes_python_m_api(tmp_path: Path, execs: list[Any]) -> None:
    port = free_port("127.0.0.1")
    f = parts_file(tmp_path, port=port)
    result = invoke(["gateway", "--config", str(f), "--api-key", "sk-flag"], {"SPLITMIND__GATEWAY__DRAIN_S": "3"})
    assert result.exit_code == 0, result.output
    [(args, extra_env, _)] = execs
    assert args[:3] == ["-m", "api", "--config"]
    config = msgspec.json.decode(args[3], type=GatewayConfig)
    assert config == gateway_config(read(f, {"SPLITMIND__GATEWAY__DRAIN_S": "3"}))
    assert config.tuning.drain_s == 3.0 and config.port == port  # SIGTERM drains for drain_s (api/__main__.py)
    assert extra_env == {"SPLITMIND_API_KEY": "sk-flag"} and "sk-flag" not in " ".join(args)
    assert f"gateway for tiny-reasoner on 127.0.0.1:{port}: 2 worker(s) by address" in result.stdout


def test_gateway_refuses_a_bad_config_and_a_taken_port(tmp_path: Path, execs: list[Any], listening: int) -> None:
    bad = invoke(["gateway"], {"SPLITMIND_CONFIG": str(parts_file(tmp_path)), "SPLITMIND__SERVE__PORT": "x"})
    assert bad.exit_code == 2 and "SPLITMIND__SERVE__PORT" in bad.stderr
    taken = invoke(["gateway", "--config", str(parts_file(tmp_path, port=listening))])
    assert taken.exit_code == 1 and f"gateway 127.0.0.1:{listening}" in taken.stderr and "port in use" in taken.stderr
    no_decode = invoke(["gateway"])  # no file: defaults and environment only, and no worker
    assert no_decode.exit_code == 2 and "at least one decode worker" in no_decode.stderr
    assert execs == []


def test_gateway_on_all_interfaces_without_keys_warns(tmp_path: Path, execs: list[Any]) -> None:
    result = invoke(["gateway", "--config", str(parts_file(tmp_path, port=free_port("0.0.0.0")))],
                    {"SPLITMIND__SERVE__HOST": "0.0.0.0"})
    assert result.exit_code == 0 and "with no API key" in result.stderr and len(execs) == 1


def test_node_becomes_its_roles_module(tmp_path: Path, execs: list[Any]) -> None:
    rpc, stats, nixl = (str(free_port("127.0.0.1")) for _ in range(3))
    env = {"SPLITMIND__NODE__RPC_PORT": rpc, "SPLITMIND__NODE__STATS_PORT": stats, "SPLITMIND__NODE__NIXL_PORT": nixl,
           "SPLITMIND__NODE__CPUS": "0", "SPLITMIND__ENGINE__MTP_TOKENS": "0"}
    result = invoke(["node", "--config", str(parts_file(tmp_path)), "--role", "decode"], env)
    assert result.exit_code == 0, result.output
    [(args, extra_env, drop)] = execs
    assert args[:3] == ["-m", "decode_node", "--spec"]
    spec = msgspec.json.decode(args[3], type=NodeSpec)
    assert (spec.worker_id, spec.role, spec.rpc_address, spec.stats_address, spec.nixl_host, spec.nixl_port,
            spec.cpus, spec.engine.kv_cache_gib, spec.engine.mtp_tokens) == (
        "node-a", Role.DECODE, f"tcp://127.0.0.1:{rpc}", f"tcp://127.0.0.1:{stats}", "127.0.0.1", int(nixl), "0", 1, 0)
    assert extra_env == {} and drop == KEY_VARIABLES  # the clients' keys stay with the gateway
    assert "node node-a (decode)" in result.stdout
    execs.clear()
    prefill = invoke(["node", "--config", str(parts_file(tmp_path))], {**env, "SPLITMIND__NODE__ROLE": "prefill"})
    assert prefill.exit_code == 0 and execs[0][0][:2] == ["-m", "prefill_node"]


def test_node_refuses_without_a_role_or_with_a_taken_port(tmp_path: Path, execs: list[Any], listening: int) -> None:
    no_role = invoke(["node", "--config", str(parts_file(tmp_path))])
    assert no_role.exit_code == 2 and "node.role is not set: pass --role prefill|decode" in no_role.stderr
    bad_role = invoke(["node", "--config", str(parts_file(tmp_path)), "--role", "both"])
    assert bad_role.exit_code == 2 and "node.role must be prefill or decode, not 'both'" in bad_role.stderr
    env = {"SPLITMIND__NODE__RPC_PORT": str(listening), "SPLITMIND__NODE__NIXL_PORT": str(free_port("127.0.0.1"))}
    taken = invoke(["node", "--config", str(parts_file(tmp_path)), "--role", "prefill"], env)
    assert taken.exit_code == 1 and f"node-a rpc 127.0.0.1:{listening}" in taken.stderr
    assert execs == []


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_every_readme_config_example_checks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The README's config files, as written, from the repository as the README runs them
    (tests/e2e/test_parts.py runs the parts' example for real)."""
    monkeypatch.chdir(ROOT)
    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    parts = re.findall(r"```toml\n(.*?)```", readme_section("Running the parts separately"), re.S)
    assert len(blocks) == 2 and len(parts) == 1, "each README config example needs its test"
    f = tmp_path / "example.toml"
    for text, roles in ((blocks[0], ["up"]), (parts[0], ["gateway", "prefill", "decode"])):
        f.write_text(text)
        for role in roles:
            result = invoke(["check-config", str(f), "--role", role])
            assert result.exit_code == 0, (role, result.output)
