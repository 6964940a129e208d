#!/usr/bin/env bash
# Creates the PyTorch + CompressAI reference environment of the parity tests
# (tests/test_torch_import.py) and experiments/, separate from the JAX one: CompressAI 1.2.8
# pins numpy < 2 and imports torchvision / torch_geometric, of which no CPU-only
# build is to be had here, and a plain `pip install compressai` pulls GBs of
# CUDA packages. So: the CPU torch first, then CompressAI without its
# dependencies plus the few it really uses, and stubs for the two imports that
# only its point-cloud and dataset registries need (stubs/, next to this script).
#
# Usage: setup_env.sh [VENV_DIR]   (default $MSCM_JAX_TORCH_VENV or ~/.cache/mscm-jax/torch-venv)
# Re-running on a complete environment does nothing.
set -euo pipefail
VENV="${1:-${MSCM_JAX_TORCH_VENV:-$HOME/.cache/mscm-jax/torch-venv}}"
HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${PYTHON:-python3}"
if [ -f "$VENV/.complete" ]; then
  exit 0
fi
if [ -e "$VENV" ] && [ ! -f "$VENV/.mscm-jax-torch-venv" ]; then
  echo "$VENV exists but was not made by this script; remove it or choose another MSCM_JAX_TORCH_VENV" >&2
  exit 1
fi
rm -rf "$VENV"  # an unfinished earlier attempt of this script
"$PY" -m venv "$VENV"
touch "$VENV/.mscm-jax-torch-venv"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
# The CPU build (a local wheel on this machine kind; a plain range would pull CUDA).
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" --no-deps "compressai==1.2.8"
"${PIP[@]}" "numpy<2" "scipy<1.16" "pandas<2.3" einops tqdm requests Pillow typing-extensions
"${PIP[@]}" --no-deps pytorch-msssim
# torchvision / torch_geometric: import-time stubs (see stubs/README.txt).
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp -r "$HERE/stubs/torchvision" "$HERE/stubs/torch_geometric" "$SITE/"
"$VENV/bin/python" -c "import compressai, compressai.models, torch; print('compressai', compressai.__version__, 'torch', torch.__version__)"
touch "$VENV/.complete"
