#!/usr/bin/env bash
# Re-lock: resolve the declared ranges into exact versions with the sha256 of every file, one lock per
# environment, with pip-tools' pip-compile (the version in requirements-tools.txt, installed from
# locks/tools.lock into a throwaway environment). scripts/setup.sh and scripts/setup_oip.sh install the locks
# exactly (scripts/install_lock.sh); tests/test_lock.py fails when a lock and the declared ranges disagree.
#   requirements.txt + requirements-build.txt       -> locks/requirements.lock      (.venv, onnxruntime)
#   requirements-gpu.txt + requirements-build.txt   -> locks/requirements-gpu.lock  (.venv where nvidia-smi answers)
#       requirements-gpu.txt is written here: requirements.txt with onnxruntime-gpu[cuda,cudnn] in place of
#       onnxruntime; constrained by locks/requirements.lock, so both variants pin the same versions elsewhere
#   requirements-oip.txt + requirements-build.txt   -> locks/requirements-oip.lock  (.venv-oip)
#   requirements-tools.txt                          -> locks/tools.lock             (this script's pip-compile)
# The locks are for Linux x86_64 and CPython 3.11 (the project's machines). opencv-python, which nncodec
# declares, is left out of the .venv locks on purpose (scripts/setup.sh: one OpenCV, the headless build).
# Usage: scripts/lock.sh [pip-compile options]
#   no option: keep every pin the ranges still allow and resolve only what changed (pip-compile's default);
#   --upgrade: the newest releases the ranges allow; --upgrade-package NAME (-P NAME): that one package.
# Takes a few minutes (pip-compile reads the metadata of every candidate; nncodec's from its sdist).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || {
  echo "lock.sh: $PY is not Python 3.11 (the locks are resolved for the project's Python 3.11)" >&2; exit 2; }
start=$(date +%s)
TOOLS=$(mktemp -d -t splitinfer-lock-XXXX)
trap 'rm -rf "$TOOLS"' EXIT
quiet() { "$@" 2> >(grep -v -e "is ignored: it is neither a file nor a directory" >&2); }
"$PY" -m venv "$TOOLS/venv"
quiet "$TOOLS/venv/bin/python" -m pip install -q --require-hashes --no-deps -r locks/tools.lock
mkdir -p locks

# The GPU variant's input, made from requirements.txt (the one place its ranges are written).
{
  echo "# Written by scripts/lock.sh from requirements.txt: do not edit. The GPU variant of .venv: onnxruntime-gpu"
  echo "# with its CUDA/cuDNN wheels in place of onnxruntime (both install the onnxruntime module); locked in"
  echo "# locks/requirements-gpu.lock, which scripts/setup.sh installs where nvidia-smi answers."
  grep -v '^#' requirements.txt | sed -E 's/^onnxruntime([<>=!~ ])/onnxruntime-gpu[cuda,cudnn]\1/'
} > requirements-gpu.txt
grep -q '^onnxruntime-gpu\[cuda,cudnn\]' requirements-gpu.txt \
  || { echo "lock.sh: no onnxruntime line in requirements.txt to make the GPU variant from" >&2; exit 1; }

compile() {  # compile OUTPUT [pip-compile options and inputs]
  local out=$1; shift
  echo "== $out"
  if ! CUSTOM_COMPILE_COMMAND="scripts/lock.sh" "$TOOLS/venv/bin/pip-compile" -q --generate-hashes \
      --no-emit-index-url --no-emit-find-links --no-emit-trusted-host --strip-extras --resolver=backtracking \
      -o "$out" "$@" "${EXTRA[@]}" >"$TOOLS/log" 2>&1; then
    grep -v -e "is ignored: it is neither a file nor a directory" "$TOOLS/log" | tail -40 >&2
    echo "lock.sh: pip-compile failed for $out (above: its last lines)" >&2
    exit 1
  fi
}
EXTRA=("$@")
# --unsafe-package replaces pip-compile's default list (pip, setuptools): those are pinned like the rest.
compile locks/requirements.lock --unsafe-package opencv-python --no-allow-unsafe requirements.txt requirements-build.txt
compile locks/requirements-gpu.lock --unsafe-package opencv-python --no-allow-unsafe -c locks/requirements.lock \
    requirements-gpu.txt requirements-build.txt
# pip-compile's note on what it left out suggests --allow-unsafe: say instead why opencv-python is left out.
for f in locks/requirements.lock locks/requirements-gpu.lock; do
  sed -i -e '/^# WARNING: The following packages were not pinned, but pip requires them to be$/,/^# satisfied by a package already installed\. Consider using the --allow-unsafe flag\.$/c\
# Left out on purpose: nncodec declares opencv-python, and scripts/setup.sh keeps one OpenCV, the headless build\
# (its cv2 is the same module); locks/pip-check-allowed.txt says why pip check names it:' "$f"
done
compile locks/requirements-oip.lock --allow-unsafe requirements-oip.txt requirements-build.txt
compile locks/tools.lock --allow-unsafe requirements-tools.txt
echo "lock.sh: locks/ written in $(( $(date +%s) - start )) s; install them with scripts/setup.sh"
