"""Benchmark-only tools (vllm-router, guidellm) in virtual environments of their own.

    exe = ensure_tool("vllm-router", "vllm-router==0.1.17")          # bench/out/vllm-router-venv/bin/vllm-router

They stay out of splitmind's requirements: the benchmarks that compare against them install them
from PyPI on first use, into bench/out/<name>-venv. `reuse_main=True` lets the tool's venv see
.venv's packages (a .pth file) so that pip installs only what .venv lacks: guidellm asks for
torch, and a plain venv would pull CUDA's torch (several GB) beside the CPU torch .venv has.
Where the tool cannot be installed, `ToolUnavailable` says why, for the bench to print.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALL_TIMEOUT_S = 900


class ToolUnavailable(RuntimeError):
    """A benchmark tool could not be installed here; the message says why."""


def ensure_tool(exe_name: str, requirement: str, *, reuse_main: bool = False) -> Path:
    """The path of `exe_name` from `requirement`, installed into its own venv on first use."""
    venv = ROOT / "bench" / "out" / f"{exe_name}-venv"
    exe = venv / "bin" / exe_name
    if exe.exists():
        return exe
    print(f"[bench] installing {requirement} into {venv} (once)", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        if reuse_main:
            site = sysconfig.get_path("purelib")  # .venv's site-packages: this interpreter's
            (next(venv.glob("lib/python*/site-packages")) / "splitmind_main_venv.pth").write_text(site + "\n")
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", requirement], check=True, capture_output=True,
                       text=True, timeout=INSTALL_TIMEOUT_S)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError, StopIteration) as e:
        detail = getattr(e, "stderr", None) or str(e)
        raise ToolUnavailable(f"pip could not install {requirement}: {str(detail)[-500:]}") from e
    if not exe.exists():
        raise ToolUnavailable(f"{requirement} installed no {exe}")
    return exe
