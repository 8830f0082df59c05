"""How a node decides on MTP (no engine is built here)."""

from pathlib import Path

import pytest

from models.test_checkpoints import CheckpointSpec, build_checkpoint
from splitmind.config import EngineConfig, NodeSpec
from splitmind.node.engine import speculative_config
from splitmind.protocol import Role


def node(model: Path, mtp_tokens: int | None) -> NodeSpec:
    return NodeSpec("decode-0", Role.DECODE, str(model), EngineConfig(mtp_tokens=mtp_tokens),
                    "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "127.0.0.1", 3)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("models")
    return (build_checkpoint(tmp / "mtp", CheckpointSpec(mtp_layers=1)),
            build_checkpoint(tmp / "plain", CheckpointSpec()))


def test_mtp_on_by_default_when_the_model_has_mtp_layers(models: tuple[Path, Path]) -> None:
    mtp, plain = models
    assert speculative_config(node(mtp, None)) == {"method": "mtp", "num_speculative_tokens": 1}
    assert speculative_config(node(plain, None)) is None


def test_mtp_tokens_configurable_and_off(models: tuple[Path, Path]) -> None:
    mtp, _ = models
    assert speculative_config(node(mtp, 2)) == {"method": "mtp", "num_speculative_tokens": 2}
    assert speculative_config(node(mtp, 0)) is None


def test_asking_for_mtp_on_a_model_without_it_is_an_error(models: tuple[Path, Path]) -> None:
    _, plain = models
    with pytest.raises(ValueError, match="no MTP layers"):
        speculative_config(node(plain, 1))
    with pytest.raises(ValueError):
        EngineConfig(mtp_tokens=-1)


def test_the_kv_transport_picks_the_connector_and_where_decode_receives(models: tuple[Path, Path]) -> None:
    from splitmind.node.engine import engine_kwargs

    _, plain = models
    for role, bind in ((Role.DECODE, "tcp://127.0.0.1:3"), (Role.PREFILL, "")):
        spec = NodeSpec("n", role, str(plain), EngineConfig(kv_transport="zmq"), "tcp://127.0.0.1:1",
                        "tcp://127.0.0.1:2", "127.0.0.1", 3)
        kv = engine_kwargs(spec)["kv_transfer_config"]
        assert kv["kv_connector"] == "ZmqPushConnector" and kv["kv_connector_extra_config"]["bind"] == bind
        assert kv["kv_load_failure_policy"] == "recompute"
    nixl = NodeSpec("n", Role.DECODE, str(plain), EngineConfig(), "tcp://127.0.0.1:1", "tcp://127.0.0.1:2",
                    "127.0.0.1", 3)
    assert engine_kwargs(nixl)["kv_transfer_config"]["kv_connector"] == "SeededNixlConnector"
    with pytest.raises(ValueError, match="kv_transport"):
        EngineConfig(kv_transport="rdma")
