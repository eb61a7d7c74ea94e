#!/usr/bin/env bash
# Fill deploy/wheelhouse/ with every wheel the container images need (splitinfer's runtime
# dependencies, read from pyproject.toml; splitinfer's own wheel goes to deploy/app-wheel/), so that images install offline with
# `pip install --no-index --find-links`. Why: no registry is reachable from inside image builds
# on every machine, and a wheelhouse pins what an image contains. Safe to run again (pip reuses
# what is there). Lean by default: no torch/nncodec (the NNC codec is then unavailable in the
# images); --nnc adds them, --gpu uses onnxruntime-gpu (with CUDA/cuDNN wheels)
# instead of onnxruntime, into deploy/wheelhouse-gpu/.
# Usage: build_wheelhouse.sh [--nnc] [--gpu] [--python PY]
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)        # deploy/
REPO=$(cd "$HERE/.." && pwd)
PY=${PYTHON:-}
EXTRAS=cpu
while [ $# -gt 0 ]; do
  case "$1" in
    --nnc) EXTRAS="$EXTRAS,nnc" ;;
    --gpu) EXTRAS="${EXTRAS/cpu/gpu}" ;;
    --python) PY=$2; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "build_wheelhouse.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
case "$EXTRAS" in *gpu*) OUT=${SPLITINFER_WHEELHOUSE:-$HERE/wheelhouse-gpu} ;; *) OUT=${SPLITINFER_WHEELHOUSE:-$HERE/wheelhouse} ;; esac
if [ -z "$PY" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
fi
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || {
  echo "build_wheelhouse.sh: $PY is not Python 3.11 (the images run Debian bookworm's python3.11)" >&2; exit 2; }
mkdir -p "$OUT"
REQ="$OUT/requirements.txt"
# One source of truth: the runtime dependencies and the chosen extras from pyproject.toml.
"$PY" - "$REPO/pyproject.toml" "$EXTRAS" >"$REQ" <<'PYEOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = list(project["dependencies"])
for extra in sys.argv[2].split(","):
    for req in project.get("optional-dependencies", {}).get(extra, []):
        # CUDA and cuDNN from their pip wheels, so the GPU image needs no CUDA base image.
        reqs.append(req.replace("onnxruntime-gpu", "onnxruntime-gpu[cuda,cudnn]", 1) if extra == "gpu" else req)
print("\n".join(dict.fromkeys(reqs)))
PYEOF
# Same versions as the environment the tests ran in: pin to what $PY has installed.
SRC=$(mktemp -d)
trap 'rm -rf "$SRC"' EXIT
rm -f "$OUT/constraints.txt"
"$PY" -m pip freeze --exclude-editable 2>/dev/null | grep -v -E '^(splitinfer|-e )' >"$SRC/constraints.txt" || true
echo "wheelhouse: $OUT (extras: $EXTRAS, $(wc -l <"$SRC/constraints.txt") pins from $PY)"
# splitinfer itself goes to deploy/app-wheel/ (its own image layer: code changes rebuild fast).
# Built from a clean copy of the sources: no stale build/ folder can leak old modules into it.
APP="$HERE/app-wheel"
mkdir -p "$SRC/src"
tar -C "$REPO" --exclude=./.git --exclude=./.venv --exclude=./.venv-oip --exclude=./build --exclude=./dist --exclude=./deploy \
    --exclude=./tests --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -C "$SRC/src" -xf -
rm -rf "$APP"; mkdir -p "$APP"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$APP" "$SRC/src" >"$SRC/build.log" 2>&1 \
  || { tail -30 "$SRC/build.log" >&2; echo "build_wheelhouse.sh: building the splitinfer wheel failed" >&2; exit 1; }
rm -f "$OUT"/splitinfer-*.whl
"$PY" -m pip wheel -q --prefer-binary -w "$OUT" -r "$REQ" -c "$SRC/constraints.txt"
# Drop wheels a previous run left that the pins no longer want (keeps the image to one version each).
"$PY" - "$OUT" <<'PYEOF'
import pathlib, re, sys, collections
out = pathlib.Path(sys.argv[1])
by_name = collections.defaultdict(list)
for whl in out.glob("*.whl"):
    by_name[re.sub(r"[-_.]+", "-", whl.name.split("-")[0]).lower()].append(whl)
for files in by_name.values():
    for old in sorted(files, key=lambda p: p.stat().st_mtime)[:-1]:
        old.unlink()
PYEOF
echo "$(ls "$OUT"/*.whl | wc -l) wheels, $(du -sh "$OUT" | cut -f1); $(ls "$APP")"
