#!/usr/bin/env bash
# One-step set-up: a virtual environment in .venv with every runtime and test dependency,
# and splitinfer installed in editable mode. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
# pip: quiet, and without the machine-wide index's "Location ... is ignored" noise.
pip_install() {
  .venv/bin/python -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install --upgrade pip setuptools wheel
# torch/torchvision first: nncodec's build needs them present.
pip_install "numpy>=1.26,<2" torch==2.14.1 torchvision==0.29.1
pip_install -r requirements.txt
# nncodec declares opencv-python (the Qt GUI build) though only one of its application helpers imports cv2;
# both wheels install the same cv2 package, so the one installed last wins. Keep the headless build only
# (`visualize --show` then asks for opencv-python in its place, on a desktop).
if .venv/bin/python -m pip show opencv-python >/dev/null 2>&1; then
  .venv/bin/python -m pip uninstall -q -y opencv-python
  pip_install --force-reinstall --no-deps "$(grep -E '^opencv-python-headless' requirements.txt | cut -d' ' -f1)"
fi
# A GPU machine (nvidia-smi answers): onnxruntime-gpu with its CUDA/cuDNN wheels in place of the CPU build
# (both install the `onnxruntime` module; keep one). Check it with bench/gpu_check.sh.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  .venv/bin/python -m pip uninstall -q -y onnxruntime || true
  pip_install "onnxruntime-gpu[cuda,cudnn]>=1.31,<1.33"
fi
pip_install --no-deps --no-build-isolation -e .
.venv/bin/splitinfer --help >/dev/null
bash scripts/setup_oip.sh  # .venv-oip: KServe SDK + tritonclient (protobuf < 7), see the script
echo "splitinfer is set up in .venv"
