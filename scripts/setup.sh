#!/usr/bin/env bash
# One-step set-up: a virtual environment in .venv with every runtime and test dependency at the exact versions
# of locks/requirements.lock (hashes checked; locks/requirements-gpu.lock on a GPU machine), splitinfer
# installed in editable mode, .venv-oip (scripts/setup_oip.sh) and .venv-ultra (scripts/setup_ultralytics.sh).
# Safe to run again: it brings an existing .venv to the lock. The ranges live in requirements.txt; scripts/lock.sh re-locks.
# Environment: PYTHON (the interpreter for the venvs, default python3.11);
#              SPLITINFER_VARIANT=cpu|gpu (default: gpu where nvidia-smi lists a GPU, else cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
start=$(date +%s)
VENV_PY=.venv/bin/python
[ -x "$VENV_PY" ] || "$PY" -m venv .venv

# A GPU machine (nvidia-smi answers): onnxruntime-gpu with its CUDA/cuDNN wheels in place of the CPU build
# (both install the `onnxruntime` module; keep one). Check it with bench/gpu_check.sh.
variant=${SPLITINFER_VARIANT:-auto}
if [ "$variant" = auto ]; then
  variant=cpu
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then variant=gpu; fi
fi
case "$variant" in
  cpu) LOCK=locks/requirements.lock; other_ort=onnxruntime-gpu; ort=onnxruntime ;;
  gpu) LOCK=locks/requirements-gpu.lock; other_ort=onnxruntime; ort=onnxruntime-gpu ;;
  *) echo "setup.sh: SPLITINFER_VARIANT is cpu or gpu, not $variant" >&2; exit 2 ;;
esac

# What the lock leaves out on purpose, removed from an existing .venv together with the locked package that
# installs the same files (the lock puts that one back whole):
#   opencv-python: nncodec declares it (the Qt GUI build), though only one of its application helpers imports
#     cv2; it and opencv-python-headless install the same cv2 package, so keep the headless build only
#     (`visualize --show` then asks for opencv-python in its place, on a desktop);
#   the other onnxruntime build, after a switch between the CPU and GPU variants.
drop() {  # drop NAME SHARES_FILES_WITH
  if "$VENV_PY" -m pip show -q "$1" >/dev/null 2>&1; then
    "$VENV_PY" -m pip uninstall -q -y "$1" "$2" 2>&1 | grep -v -e "Skipping .* as it is not installed" >&2 || true
  fi
}
drop opencv-python opencv-python-headless
drop "$other_ort" "$ort"

# Every package at its locked version, torch and torchvision included (pip takes them from the local wheels
# where pip's configuration names some, and checks their hashes against the lock like any other); nncodec is
# built from its sdist by the lock's setuptools/pybind11. Then splitinfer itself (editable, no dependencies:
# the lock has them) and pip check (scripts/install_lock.sh).
bash scripts/install_lock.sh "$VENV_PY" "$LOCK" .
.venv/bin/splitinfer --help >/dev/null
echo ".venv: $LOCK installed ($variant) in $(( $(date +%s) - start )) s"
bash scripts/setup_oip.sh  # .venv-oip: KServe SDK + tritonclient (protobuf < 7), see the script
bash scripts/setup_ultralytics.sh  # .venv-ultra: the YOLOv8n/YOLO11n tests' exporter (AGPL, test-time only)
echo "splitinfer is set up in .venv, .venv-oip and .venv-ultra ($(( $(date +%s) - start )) s)"
