#!/usr/bin/env bash
# Creates the project's virtual environment at .venv and installs the pinned stack into it.
#
# Idempotent: a stamp in .venv records the hash of everything that decides what gets installed
# (constraints.txt, setup.py, this script); when it matches, the script returns at once.
# First run on a fresh machine: ~3 min for torch (CUDA build, ~4.8 GB) and 13-21 min to
# compile mmcv 2.1.0 with its ops on 2 cores; afterwards pip's wheel cache makes a rebuild
# of the environment take a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP="$VENV/.convmlp_mm-stamp"
want=$(cat constraints.txt setup.py tools/setup_env.sh | sha256sum | cut -d' ' -f1)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    exit 0
fi

PYTHON=$(command -v python3.11 || command -v python3)
echo "[setup_env] creating $VENV with $($PYTHON --version)"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -c constraints.txt)

"${PIP[@]}" setuptools wheel ninja packaging
# torch first: mmcv compiles against it.
"${PIP[@]}" torch torchvision numpy
# mmcv's ops are needed by mmdet.models and mmseg.models; there is no usable binary wheel,
# so it is compiled here (CPU ops; the CUDA ops are built only where a GPU is visible).
if ! "$VENV/bin/python" -c "import mmcv.ops" 2>/dev/null; then
    echo "[setup_env] building mmcv with ops (first time: 13-21 minutes on 2 cores)"
    MMCV_WITH_OPS=1 MAX_JOBS=$(nproc) "${PIP[@]}" --no-build-isolation mmcv
fi
"${PIP[@]}" --no-build-isolation -e ".[all]"
"$VENV/bin/python" -c "import convmlp_mm, mmdet.models, mmseg.models, mmpretrain.models, timm"
echo "$want" > "$STAMP"
echo "[setup_env] environment ready: $VENV"
