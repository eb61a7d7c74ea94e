#!/usr/bin/env bash
# A second virtual environment, .venv-oip, for the serving engines of the field: the KServe SDK (ModelServer,
# kserve.Model) and Triton's client (tritonclient[grpc]). Why a second one: both pin protobuf < 7, while
# splitinfer's own generated gRPC code (common/transport/proto) needs protobuf >= 7.35. The Part II path the
# KServe model uses (common/split, families, core, server/oip_model.py) never imports those stubs, so
# splitinfer is installed here with --no-deps and only what that path needs beside it. Safe to run again.
# Usage: scripts/setup_oip.sh            (prints the seconds pip took)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
pip_install() {
  .venv-oip/bin/python -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
start=$(date +%s)
[ -x .venv-oip/bin/python ] || "$PY" -m venv .venv-oip
pip_install --upgrade pip setuptools wheel
pip_install "kserve==0.21.*" "tritonclient[grpc]==2.73.*" "onnxruntime>=1.20,<1.33" "numpy>=1.26,<2" \
    "onnx>=1.17,<1.24" "opencv-python-headless>=4.9,<4.12" "tqdm>=4.66" "zstandard>=0.22" "pyyaml>=6"
pip_install --no-deps --no-build-isolation -e .
# kserve and tritonclient each register protobuf package `inference` (duplicate symbols when both load in
# one process): the KServe server and the Triton client always run as separate processes, so check apart.
.venv-oip/bin/python -c "import kserve, google.protobuf as p; assert int(p.__version__.split('.')[0]) < 7"
.venv-oip/bin/python -c "import tritonclient.grpc, tritonclient.grpc.model_config_pb2"
echo "splitinfer's OIP environment is set up in .venv-oip ($(( $(date +%s) - start )) s)"
