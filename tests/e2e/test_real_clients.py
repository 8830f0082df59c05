"""Real clients, unchanged: `vllm bench serve`, vLLM's own benchmark client, against the bundled
reasoner's PD cluster, through both OpenAI endpoints, streamed as it always streams. Every
request must succeed and every token arrive: its SSE parser splits events on `\\n\\n` as OpenAI and
vLLM frame them (splitmind once framed with `\\r\\n\\r\\n` and lost 7 of 48 requests to it, issue #16)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from models import BUNDLED_MODEL
from tests.e2e.cluster import ROOT, RunningCluster

VLLM = Path(sys.executable).parent / "vllm"
BENCH_SERVE = ROOT / "bench" / "vllm_bench_serve.py"  # `vllm bench serve` without the broken `vllm` command
PROMPTS, OUTPUT_LEN = 12, 24


@pytest.mark.parametrize(("backend", "endpoint"), [("openai", "/v1/completions"),
                                                   ("openai-chat", "/v1/chat/completions")])
def test_vllm_bench_serve_finishes_every_request(reasoner_cluster: RunningCluster, tmp_path: Path, backend: str,
                                                 endpoint: str) -> None:
    cmd = [sys.executable, str(BENCH_SERVE), "--backend", backend, "--base-url", reasoner_cluster.url,
           "--endpoint", endpoint, "--tokenizer", str(BUNDLED_MODEL), "--dataset-name", "random",
           "--random-input-len", "48", "--random-output-len", str(OUTPUT_LEN), "--num-prompts", str(PROMPTS),
           "--max-concurrency", "6", "--ignore-eos", "--seed", "0", "--disable-tqdm", "--save-result",
           "--result-dir", str(tmp_path), "--result-filename", "result.json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["failed"] == 0 and result["completed"] == PROMPTS, (done.stdout + done.stderr)[-4000:]
    assert result["total_output_tokens"] == PROMPTS * OUTPUT_LEN  # every token of every stream arrived


def test_the_installed_vllm_command_still_cannot_start() -> None:
    """Notices the day the CPU wheel's `vllm` command works: then bench/vllm_bench_serve.py can go
    and the test above can run `vllm bench serve` itself."""
    done = subprocess.run([str(VLLM), "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "No package metadata was found for vllm" in done.stderr, \
        "the installed `vllm` command works: run `vllm bench serve` directly, remove bench/vllm_bench_serve.py"
