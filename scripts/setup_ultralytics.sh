#!/usr/bin/env bash
# A third virtual environment, .venv-ultra, only for the tests that build YOLOv8n/YOLO11n from Ultralytics'
# model YAMLs (tests/families/test_ultralytics.py). Why apart: Ultralytics is AGPL-3.0 and wants numpy 2, while
# splitinfer stays on numpy 1.26 (nncodec); it is never a dependency of splitinfer, only a test-time exporter.
# Why a .pth into .venv: torch (several GB) is used from .venv instead of being installed a second time; the
# packages installed here (numpy 2, ultralytics) come first on sys.path. Needs .venv (scripts/setup.sh). Safe to
# run again. Its own packages are installed exactly as locks/requirements-ultra.lock pins them (sha256 of every
# wheel, --no-deps; re-lock with scripts/lock_ultralytics.sh). Usage: scripts/setup_ultralytics.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
LOCK=locks/requirements-ultra.lock
start=$(date +%s)
[ -x .venv-ultra/bin/python ] || "$PY" -m venv .venv-ultra
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
own=$(.venv-ultra/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$site" > "$own/zz_splitinfer_venv.pth"  # "zz": after this environment's own packages
.venv-ultra/bin/python -m pip install -q --require-hashes --no-deps -r "$LOCK" \
    2> >(grep -v -e "is ignored: it is neither" >&2)
.venv-ultra/bin/python -c "import torch, ultralytics"
echo "Ultralytics' test environment is set up in .venv-ultra ($(( $(date +%s) - start )) s)"
