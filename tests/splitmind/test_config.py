from pathlib import Path

import pytest

from splitmind.config import ClusterConfig, EngineConfig, GatewayTuning
from splitmind.config_file import load_cluster_config


def test_file_and_overrides(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[cluster]\nport = 9000\nnum_decode = 2\n[engine]\nkv_cache_gib = 1\n'
                        '[gateway]\nprefill_timeout_s = 5\n')
    cfg = load_cluster_config(cfg_file, port=9100, num_prefill=None)
    assert (cfg.port, cfg.num_decode, cfg.num_prefill) == (9100, 2, 1)
    assert cfg.engine.kv_cache_gib == 1 and cfg.gateway.prefill_timeout_s == 5


@pytest.mark.parametrize("text, message", [
    ("[engine]\nkv_cache_gbi = 1\n", "unknown key"),
    ("[clutser]\n", "unknown table"),
    ("[cluster]\nnum_decode = 0\n", "num_decode"),
    ("[engine]\ndtype = 'fp8'\n", "dtype"),
    ("[gateway]\nreasoning = 'secret'\n", "visible or hidden"),
])
def test_bad_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_cluster_config(f)


def test_validation() -> None:
    with pytest.raises(ValueError):
        ClusterConfig(num_prefill=-1)
    with pytest.raises(ValueError):
        EngineConfig(max_num_seqs=0)
    with pytest.raises(ValueError):
        GatewayTuning(prefill_timeout_s=0)


def test_reasoning_visibility_and_profile_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[gateway]\nreasoning = "visible"\n[reasoning]\nanswer_reserve = 64\n')
    assert load_cluster_config(f).gateway.reasoning == "visible"
    cfg = load_cluster_config(f, reasoning="hidden")  # `splitmind up --reasoning hidden` wins over the file
    assert cfg.gateway.reasoning == "hidden" and cfg.reasoning == {"answer_reserve": 64}
