"""The config file for every role and its environment overrides (splitmind/config_file.py,
splitmind/config_values.py, splitmind/standalone.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from models import BUNDLED_MODEL
from splitmind.config import EngineConfig, WorkerAddress, WorkerDNS
from splitmind.config_file import gateway_config, load_cluster_config, node_config, node_spec, read
from splitmind.curve import create_keys
from splitmind.protocol import Role
from splitmind.standalone import NodeConfig, ServeConfig

FULL = """
[serve]
model = "{model}"
served_model_name = "reasoner"
host = "127.0.0.1"
port = 9000
keys_dir = "{keys}"

[[workers]]
worker_id = "prefill-a"
role = "prefill"
rpc_address = "tcp://10.0.0.1:8100"
stats_address = "tcp://10.0.0.1:8101"

[[workers]]
worker_id = "decode-a"
role = "decode"
rpc_address = "tcp://10.0.0.2:8100"
stats_address = "tcp://10.0.0.2:8101"

[[discover]]
role = "decode"
name = "splitmind-decode.default.svc"
rpc_port = 7000
stats_port = 7001

[[discover]]
role = "prefill"
name = "splitmind-prefill"

[node]
worker_id = "decode-7"
role = "decode"
model = "{model}"
host = "0.0.0.0"
rpc_port = 7100
stats_port = 7101
nixl_host = "10.0.0.9"
nixl_port = 7102
keys_dir = "{keys}"
cpus = "0-1"

[engine]
kv_cache_gib = 2
"""


def write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "splitmind.toml"
    f.write_text(text)
    return f


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    create_keys(tmp_path / "keys")
    return tmp_path / "keys"


def test_every_table_and_key_of_the_parts(tmp_path: Path, keys: Path) -> None:
    doc = read(write(tmp_path, FULL.format(model=BUNDLED_MODEL, keys=keys)))
    gw = gateway_config(doc)
    assert (gw.model, gw.served_model_name, gw.host, gw.port, gw.keys_dir) == (
        str(BUNDLED_MODEL), "reasoner", "127.0.0.1", 9000, str(keys))
    assert gw.workers == (WorkerAddress("prefill-a", Role.PREFILL, "tcp://10.0.0.1:8100", "tcp://10.0.0.1:8101"),
                          WorkerAddress("decode-a", Role.DECODE, "tcp://10.0.0.2:8100", "tcp://10.0.0.2:8101"))
    assert gw.discover == (WorkerDNS(Role.DECODE, "splitmind-decode.default.svc", 7000, 7001),
                           WorkerDNS(Role.PREFILL, "splitmind-prefill", 8100, 8101))  # a node's default ports
    node = node_config(doc)
    spec = node_spec(node, EngineConfig(kv_cache_gib=2))
    assert (spec.worker_id, spec.role, spec.model, spec.rpc_address, spec.stats_address, spec.nixl_host,
            spec.nixl_port, spec.keys_dir, spec.cpus) == (
        "decode-7", Role.DECODE, str(BUNDLED_MODEL), "tcp://0.0.0.0:7100", "tcp://0.0.0.0:7101", "10.0.0.9", 7102,
        str(keys), "0-1")


def test_defaults_of_the_parts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "splitmind-decode-5f7c9")
    doc = read(None)
    serve = ServeConfig().resolved()
    assert (serve.model, serve.served_model_name, serve.host, serve.port) == (
        str(BUNDLED_MODEL), "tiny-reasoner", "127.0.0.1", 8000)
    node = node_config(doc, "prefill")
    assert node == NodeConfig(worker_id="splitmind-decode-5f7c9", role="prefill", model=str(BUNDLED_MODEL),
                              host="127.0.0.1", rpc_port=8100, stats_port=8101, nixl_host="127.0.0.1", nixl_port=5600)
    # a node without its own model serves [serve]'s, relative paths taken from the working directory
    monkeypatch.chdir(tmp_path)
    assert node_config(read(write(tmp_path, '[serve]\nmodel = "m"\n'))).model == str(tmp_path / "m")


def test_role_flag_wins_over_file_and_environment(tmp_path: Path) -> None:
    doc = read(write(tmp_path, '[node]\nrole = "prefill"\n'), {"SPLITMIND__NODE__ROLE": "prefill"})
    assert node_config(doc).role == "prefill"
    assert node_config(doc, "decode").role == "decode"
    with pytest.raises(ValueError, match=r"node.role is not set: pass --role"):
        node_spec(node_config(read(None)), EngineConfig())


def test_wildcard_host_needs_keys_and_hands_out_the_host_names_address(
        monkeypatch: pytest.MonkeyPatch, keys: Path) -> None:
    """Nodes in Kubernetes bind 0.0.0.0. The NIXL side channel's host is also the address vLLM
    sends decode nodes to fetch the KV from, so 0.0.0.0 must never be it: the pod's IP is."""
    with pytest.raises(ValueError, match=r"node.host 0.0.0.0 is reachable from other machines: set node.keys_dir"):
        NodeConfig(host="0.0.0.0")
    with pytest.raises(ValueError, match=r"node.nixl_host 10.0.0.9 is reachable .* set node.keys_dir"):
        NodeConfig(nixl_host="10.0.0.9")
    with pytest.raises(ValueError, match=r"node.nixl_host 0.0.0.0 is sent to decode nodes"):
        NodeConfig(nixl_host="0.0.0.0", keys_dir=str(keys))
    monkeypatch.setattr(socket, "gethostname", lambda: "pod-1")
    monkeypatch.setattr(socket, "gethostbyname", lambda name: {"pod-1": "10.1.2.3"}[name])
    node = NodeConfig(host="0.0.0.0", keys_dir=str(keys)).resolved()
    assert (node.worker_id, node.host, node.nixl_host) == ("pod-1", "0.0.0.0", "10.1.2.3")

    def unknown(name: str) -> str:
        raise socket.gaierror("Name or service not known")

    monkeypatch.setattr(socket, "gethostbyname", unknown)
    with pytest.raises(ValueError, match=r"set node.nixl_host to an address decode nodes can reach"):
        NodeConfig(host="0.0.0.0", keys_dir=str(keys)).resolved()
    assert NodeConfig(host="localhost").host == "localhost"  # loopback needs no keys


@pytest.mark.parametrize("table, message", [
    (dict(role="both"), "node.role must be prefill or decode"),
    (dict(rpc_port=0), "node.rpc_port out of range"),
    (dict(stats_port=5600), "must differ"),
    (dict(cpus="0-"), "node.cpus must list cores"),
    (dict(keys_dir="/nonexistent/keys"), "node.keys_dir: keys: /nonexistent/keys is not a directory"),
])
def test_bad_node_tables(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NodeConfig(**table)  # type: ignore[arg-type]


def test_environment_overrides_every_type(tmp_path: Path) -> None:
    f = write(tmp_path, '[[workers]]\nworker_id = "d0"\nrole = "decode"\nrpc_address = "tcp://a:1"\n'
                        'stats_address = "tcp://a:2"\n[engine]\nmtp_tokens = 1\n')
    env = {
        "SPLITMIND__SERVE__HOST": "0.0.0.0",  # str
        "SPLITMIND__SERVE__PORT": "9001",  # int
        "SPLITMIND__GATEWAY__PREFILL_TIMEOUT_S": "7.5",  # float
        "SPLITMIND__GATEWAY__ALLOW_ROUTE_OVERRIDE": "Yes",  # bool
        "SPLITMIND__ENGINE__ENFORCE_EAGER": "off",
        "SPLITMIND__GATEWAY__CORS_ORIGINS": "https://a.example, https://b.example",  # tuple
        "SPLITMIND__ENGINE__MTP_TOKENS": "",  # optional: unset
        "SPLITMIND__ENGINE__MAX_MODEL_LEN": "4096",  # optional: set
        "SPLITMIND__WORKERS__0__ROLE": "PREFILL",  # an entry of the file's array, Role typed
        "splitmind__workers__1__worker_id": "d1",  # any case; the next index adds an entry
        "SPLITMIND__WORKERS__1__ROLE": "decode",
        "SPLITMIND__WORKERS__1__RPC_ADDRESS": "tcp://b:1",
        "SPLITMIND__WORKERS__1__STATS_ADDRESS": "tcp://b:2",
        "SPLITMIND__REASONING__EFFORT_BUDGETS__LOW": "100",
        "SPLITMIND__REASONING__ANSWER_PATTERN": "",
        "SPLITMIND_API_KEY": "not configuration",  # one underscore: not an override
    }
    doc = read(f, env)
    gw = gateway_config(doc)
    assert (gw.host, gw.port, gw.tuning.prefill_timeout_s, gw.tuning.allow_route_override) == (
        "0.0.0.0", 9001, 7.5, True)
    assert gw.tuning.cors_origins == ("https://a.example", "https://b.example")
    assert [(w.worker_id, w.role) for w in gw.workers] == [("d0", Role.PREFILL), ("d1", Role.DECODE)]
    assert gw.reasoning_profile == {"effort_budgets": {"low": 100}, "answer_pattern": None}
    cluster = load_cluster_config(f, env)
    engine = cluster.engine
    assert (engine.enforce_eager, engine.mtp_tokens, engine.max_model_len) == (False, None, 4096)
    assert "SPLITMIND_API_KEY" not in doc.from_env and len(doc.from_env) == len(env) - 1


def test_flags_win_over_environment_over_file(tmp_path: Path) -> None:
    f = write(tmp_path, "[cluster]\nport = 9000\nnum_decode = 2\nnum_prefill = 2\n")
    env = {"SPLITMIND__CLUSTER__PORT": "9100", "SPLITMIND__CLUSTER__NUM_DECODE": "3"}
    cfg = load_cluster_config(f, env, port=9200, num_decode=None)
    assert (cfg.port, cfg.num_decode, cfg.num_prefill) == (9200, 3, 2)


@pytest.mark.parametrize("text, message", [
    ("[serve]\nprot = 1\n", r"unknown key\(s\) in \[serve\]: prot"),
    ("[node]\nrpc = 1\n", r"unknown key\(s\) in \[node\]: rpc"),
    ("[[workers]]\nid = 'x'\n", r"unknown key\(s\) in \[workers\[0\]\]: id"),
    ("[[discover]]\nrole = 'decode'\nname = 'x'\nport = 1\n", r"unknown key\(s\) in \[discover\[0\]\]: port"),
    ("[cluster]\nengine = {}\n", r"unknown key\(s\) in \[cluster\]: engine"),
    ("[reasoning]\nthink = 'x'\n", r"unknown key\(s\) in \[reasoning\]: think"),
    ("[workers]\nworker_id = 'x'\n", r"workers must be an array of tables"),
    ("[serve]\nport = '8000'\n", r"serve.port must be an integer, not '8000'"),
    ("[engine]\nenforce_eager = 1\n", r"engine.enforce_eager must be true or false, not 1"),
    ("[engine]\nkv_cache_gib = true\n", r"engine.kv_cache_gib must be an integer, not True"),
    ("[gateway]\ncors_origins = 'https://a.example'\n", r"gateway.cors_origins must be a list of strings"),
    ("[[workers]]\nworker_id = 'x'\nrole = 'both'\n", r"workers\[0\].role must be prefill or decode, not 'both'"),
    ("[serve]\nport = \n", r"is not valid TOML"),
])
def test_bad_files_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read(write(tmp_path, text))


@pytest.mark.parametrize("env, message", [
    ({"SPLITMIND__SEVRE__PORT": "1"}, r"SPLITMIND__SEVRE__PORT: no such setting"),
    ({"SPLITMIND__SERVE__PROT": "1"}, r"SPLITMIND__SERVE__PROT: \[serve\] has no key 'prot'"),
    ({"SPLITMIND__SERVE": "1"}, r"SPLITMIND__SERVE: no such setting"),
    ({"SPLITMIND__SERVE__PORT": "80a"}, r"SPLITMIND__SERVE__PORT: serve.port must be an integer, not '80a'"),
    ({"SPLITMIND__GATEWAY__DRAIN_S": "soon"}, r"SPLITMIND__GATEWAY__DRAIN_S: gateway.drain_s must be a number"),
    ({"SPLITMIND__ENGINE__ENFORCE_EAGER": "maybe"}, r"SPLITMIND__ENGINE__ENFORCE_EAGER: .* true or false"),
    ({"SPLITMIND__ENGINE__MTP_TOKENS": "one"}, r"engine.mtp_tokens must be an integer \(or unset\)"),
    ({"SPLITMIND__WORKERS__1__ROLE": "decode"}, r"SPLITMIND__WORKERS__1__ROLE: \[\[workers\]\] has 0 entries, "
                                                r"so the next one is WORKERS__0"),
    ({"SPLITMIND__WORKERS__0__ROLE": "x"}, r"SPLITMIND__WORKERS__0__ROLE: workers\[0\].role must be prefill or"),
    ({"SPLITMIND__REASONING__EFFORT_BUDGETS__HUGE": "1"}, r"effort_budgets has the levels"),
])
def test_bad_environment_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read(None, env)


def test_incomplete_entries_and_gateway_rules(tmp_path: Path) -> None:
    doc = read(None, {"SPLITMIND__WORKERS__0__ROLE": "decode"})
    with pytest.raises(ValueError, match=r"\[workers\[0\]\] needs worker_id, rpc_address, stats_address"):
        gateway_config(doc)
    with pytest.raises(ValueError, match="at least one decode worker"):
        gateway_config(read(None))
    twice = '[[workers]]\nworker_id = "d"\nrole = "decode"\nrpc_address = "tcp://a:1"\nstats_address = "tcp://a:2"\n'
    with pytest.raises(ValueError, match="worker_id used more than once: d"):
        gateway_config(read(write(tmp_path, twice * 2)))
    with pytest.raises(ValueError, match="rpc_address must be a ZMQ address"):
        WorkerAddress("d", Role.DECODE, "10.0.0.1:8100", "tcp://10.0.0.1:8101")
    with pytest.raises(ValueError, match=r"serve\.port out of range"):
        ServeConfig(port=70000)
