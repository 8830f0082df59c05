"""Real clusters for end-to-end tests: each starts once per session, on first use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from models import BUNDLED_MODEL
from models.test_checkpoints import CheckpointSpec, build_checkpoint
from tests.e2e.cluster import RunningCluster, make_keys

BASE_CONFIG = """
[engine]
kv_cache_gib = 1
max_model_len = 2048
max_num_seqs = 32
[gateway]
allow_route_override = true
"""


# Prefix caching off on both nodes, so that a colocated baseline is computed from scratch, never
# from KV that arrived by transfer.
NO_PREFIX_CACHING_CONFIG = BASE_CONFIG.replace("[engine]\n", "[engine]\nenable_prefix_caching = false\n")


def running(model: Path, workdir: Path, *, prefill: int, config: str, decode: int = 1,
            keys_dir: Path | None = None, killed: bool = False) -> Iterator[RunningCluster]:
    """`killed`: end it by SIGKILL to the launcher, and check that nothing it started outlives it."""
    cluster = RunningCluster(model, workdir, prefill=prefill, decode=decode, config=config, keys_dir=keys_dir)
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        if killed and cluster.proc.poll() is None:
            cluster.kill_launcher()
        else:
            cluster.stop()


def _cluster(tmp: Path, name: str, spec: CheckpointSpec, *, prefill: int, config: str = BASE_CONFIG,
             curve: bool = False, killed: bool = False) -> Iterator[RunningCluster]:
    keys_dir = make_keys(tmp / name / "keys") if curve else None
    yield from running(build_checkpoint(tmp / name / "model", spec), tmp / name, prefill=prefill, config=config,
                        keys_dir=keys_dir, killed=killed)


@pytest.fixture(scope="session")
def scripted_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    """PD cluster (1 prefill + 1 decode) on the scripted think-in-prompt model, its internal plane
    on CURVE (`splitmind keys`, `splitmind up --keys-dir`): every test on it runs through keyed nodes."""
    yield from _cluster(tmp_path_factory.mktemp("clusters"), "scripted", CheckpointSpec(weights="scripted"),
                        prefill=1, curve=True)


@pytest.fixture(scope="session")
def random_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    """PD cluster on random weights (KV-sensitive), prefix caching off. It ends as a launcher
    killed outright ends (SIGKILL): every process it started must exit by itself."""
    yield from _cluster(tmp_path_factory.mktemp("clusters"), "random", CheckpointSpec(weights="random"),
                        prefill=1, config=NO_PREFIX_CACHING_CONFIG, killed=True)


@pytest.fixture(scope="session")
def reasoner_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    """PD cluster on the bundled tiny reasoner, the model `splitmind up` serves by default: MTP
    on by itself (it has an MTP layer). Prefix caching off."""
    workdir = tmp_path_factory.mktemp("clusters") / "reasoner"
    yield from running(BUNDLED_MODEL, workdir, prefill=1, config=NO_PREFIX_CACHING_CONFIG)


def client(cluster: RunningCluster) -> OpenAI:
    return OpenAI(base_url=cluster.url + "/v1", api_key="unused", max_retries=0, timeout=120)
