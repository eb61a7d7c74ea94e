#!/usr/bin/env bash
# GPU check in one go: Part II on CUDA, end to end, and the pipeline figures.
#   1. the network process with --device gpu --require-gpu (it refuses to start unless CUDA really runs
#      every model of its repository) and its ready line (providers);
#   2. end to end on the bundled photos: `splitinfer device` (Part I on the CPU) against that process, the
#      results CSV's Part II provider column must say cuda and the detections agree with the anchor;
#      then the Open Inference Protocol endpoint test with Part II on CUDA (tests/oip, SPLITINFER_TEST_DEVICE=gpu);
#   3. bench/bench_pipeline.py (whole model vs the two processes), printed as it reports.
# Without a GPU it stops at the first missing piece with one line and exit code 2:
#   no nvidia-smi / no GPU listed, onnxruntime without CUDAExecutionProvider (run scripts/setup.sh on the
#   GPU machine: it installs onnxruntime-gpu with its CUDA/cuDNN wheels when nvidia-smi answers), or
#   --require-gpu refusing. Usage: bash bench/gpu_check.sh [OUT_DIR]   (default: a temporary folder)
# The Python: PYTHON (a path or a command), else the checkout's .venv, else the python3 on PATH (an activated
# environment of another name); it needs splitinfer and onnxruntime-gpu installed.
set -euo pipefail
case "${PYTHON:-}" in /*|"") ;; */*) PYTHON="$PWD/$PYTHON" ;; esac  # relative paths: from where they were given
OUT=${1:-$(mktemp -d -t splitinfer-gpu-XXXX)}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=$(command -v python3 || true)
fi
mkdir -p "$OUT"
fail() { echo "gpu_check: $*" >&2; exit 2; }

command -v nvidia-smi >/dev/null 2>&1 || fail "no GPU: nvidia-smi is not installed (this check needs an NVIDIA GPU)"
gpus=$(nvidia-smi -L 2>/dev/null) || fail "no GPU: nvidia-smi does not answer"
[ -n "$gpus" ] || fail "no GPU: nvidia-smi lists no device"
echo "== GPUs"; echo "$gpus"
[ -n "$PY" ] && command -v "$PY" >/dev/null 2>&1 \
  || fail "no Python: set PYTHON to the interpreter of the environment with splitinfer (no .venv here, no python3 on PATH)"

# The CUDA/cuDNN libraries of onnxruntime-gpu[cuda,cudnn] live in the nvidia-* wheels: put them on the path.
nvlibs=$("$PY" - <<'PY'
import glob, os
try:
    import nvidia
    print(":".join(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "lib")))))
except ImportError:
    print("")
PY
)
[ -n "$nvlibs" ] && export LD_LIBRARY_PATH="$nvlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$PY" -c "import onnxruntime as o, sys; sys.exit(0 if 'CUDAExecutionProvider' in o.get_available_providers() else 1)" \
  || fail "onnxruntime has no CUDAExecutionProvider ($("$PY" -c 'import onnxruntime as o; print(o.__version__, o.get_available_providers())')): run scripts/setup.sh on this machine (installs onnxruntime-gpu when nvidia-smi answers)"

echo "== 1. network process, Part II on CUDA (--require-gpu)"
"$PY" -m splitinfer.server.main --host 127.0.0.1 --port 0 --metrics-port 0 --device gpu --require-gpu \
    > "$OUT/serve.log" 2> "$OUT/serve.err" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
  grep -q "listening on" "$OUT/serve.log" 2>/dev/null && break
  kill -0 $SERVER 2>/dev/null || fail "the network process refused to start on the GPU: $(tail -3 "$OUT/serve.err")"
  sleep 0.5
done
ready=$(grep "listening on" "$OUT/serve.log") || fail "the network process did not become ready in 120 s"
echo "$ready"
case "$ready" in *cuda*) ;; *) fail "the ready line names no cuda provider" ;; esac
addr=$(echo "$ready" | sed -E 's/.*listening on ([^ ]+).*/\1/')

echo "== 2. end to end: splitinfer device (Part I CPU) -> Part II CUDA, bundled photos, split 60"
"$PY" -m splitinfer.common.cli device --server "$addr" --split 60 -s common/assets/images -results_dir "$OUT/e2e" \
    -no_GPU_anchor || fail "splitinfer device failed against the GPU network process"
csv=$(ls "$OUT"/e2e/*.csv | grep -v _frames | head -1)
"$PY" - "$csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
prov = [k for k in rows[0] if "rovider" in k]
print({k: rows[0][k] for k in rows[0] if "rovider" in k or "nchor" in k or "greement" in k or "End_to_end" in k})
if not any("cuda" in rows[0][k].lower() for k in prov):
    sys.exit("gpu_check: the results CSV names no cuda provider for Part II")
PY
SPLITINFER_TEST_DEVICE=gpu "$PY" -m pytest -q -x tests/oip/test_oip_endpoint.py

echo "== 3. pipeline benchmark"
"$PY" bench/bench_pipeline.py --frames 40
echo "gpu_check: done (logs in $OUT)"
