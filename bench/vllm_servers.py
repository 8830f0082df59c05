"""vLLM's own servers as benchmark baselines: one OpenAI server, and vllm-router's PD over two.

    with vllm_openai_server(model, core=0, max_model_len=4096, log=path) as url: ...
    with vllm_router_pd(model, max_model_len=4096, logs=dir) as url: ...  # or ToolUnavailable(reason)

The OpenAI server runs as `python -m vllm.entrypoints.openai.api_server` (the `vllm` command of
the CPU wheel fails before it parses anything: bench/vllm_bench_serve.py). vllm-router is a
separate PyPI package with its own dependencies, so it goes into its own virtual environment
(bench/tool_venv.py: bench/out/vllm-router-venv, made on first use from PyPI); where it cannot
be installed or started the caller gets `ToolUnavailable` with the reason, and prints it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.tool_venv import ToolUnavailable, ensure_tool  # noqa: E402
from splitmind.launcher import free_port  # noqa: E402

ROUTER_VERSION = "0.1.17"  # the version the issue measured (#16)
START_TIMEOUT_S = 600.0


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode} while starting:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{url} not healthy after {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def vllm_openai_server(model: Path, *, core: int, max_model_len: int, log: Path,
                       kv_transfer_config: dict[str, object] | None = None) -> Iterator[str]:
    """One vLLM OpenAI server on `model`, its compute threads on `core` (the rest of its
    processes float, as the bare-engine baseline's do). Yields its base URL."""
    port = free_port("127.0.0.1")
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": str(core), "VLLM_CPU_KVCACHE_SPACE": "2",
           "VLLM_NIXL_SIDE_CHANNEL_PORT": str(free_port("127.0.0.1"))}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--served-model-name", "model", "--dtype", "float32", "--max-model-len", str(max_model_len),
           "--enforce-eager", "--no-enable-prefix-caching", "--host", "127.0.0.1", "--port", str(port),
           "--disable-uvicorn-access-log"]
    if kv_transfer_config:
        cmd += ["--kv-transfer-config", json.dumps(kv_transfer_config)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        _stop(proc)


NIXL_CONFIG: dict[str, object] = {"kv_connector": "NixlConnector", "kv_role": "kv_both", "kv_buffer_device": "cpu"}


@contextlib.contextmanager
def vllm_router_pd(model: Path, *, max_model_len: int, logs: Path) -> Iterator[str]:
    """vllm-router's PD mode over two vLLM OpenAI servers with vLLM's NixlConnector: prefill's
    compute threads on core 0, decode's on core 1, as `splitmind up` places its nodes."""
    exe = ensure_tool("vllm-router", f"vllm-router=={ROUTER_VERSION}")
    with contextlib.ExitStack() as stack:
        prefill, decode = (stack.enter_context(vllm_openai_server(
            model, core=core, max_model_len=max_model_len, log=logs / f"router-{role}.log",
            kv_transfer_config=NIXL_CONFIG)) for core, role in ((0, "prefill"), (1, "decode")))
        port = free_port("127.0.0.1")
        log = logs / "router.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([str(exe), "--host", "127.0.0.1", "--port", str(port), "--vllm-pd-disaggregation",
                                     "--prefill", prefill, "--decode", decode, "--kv-connector", "nixl",
                                     "--policy", "round_robin"],
                                    stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": ""})
        stack.callback(_stop, proc)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, proc, log, timeout_s=120)
        except RuntimeError as e:
            raise ToolUnavailable(f"vllm-router did not start: {e}") from e
        yield url
