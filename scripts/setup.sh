#!/usr/bin/env bash
# One-step set-up: a virtual environment in .venv with every runtime and test dependency,
# and splitinfer installed in editable mode. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
# torch/torchvision first: nncodec's build needs them present.
.venv/bin/python -m pip install -q "numpy>=1.26,<2" torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
.venv/bin/splitinfer --help >/dev/null
echo "splitinfer is set up in .venv"
