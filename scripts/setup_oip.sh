#!/usr/bin/env bash
# A second virtual environment, .venv-oip, for the serving engines of the field: the KServe SDK (ModelServer,
# kserve.Model) and Triton's client (tritonclient[grpc]). Why a second one: both pin protobuf < 7, while
# splitinfer's own generated gRPC code (common/transport/proto) needs protobuf >= 7.35. The Part II path the
# KServe model uses (common/split, families, core, server/oip_model.py) never imports those stubs, so
# splitinfer is installed here with --no-deps and only what that path needs beside it: requirements-oip.txt,
# installed exactly from locks/requirements-oip.lock (hashes checked; scripts/lock.sh re-locks). Safe to run
# again.
# Usage: scripts/setup_oip.sh            (prints the seconds it took)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
start=$(date +%s)
[ -x .venv-oip/bin/python ] || "$PY" -m venv .venv-oip
bash scripts/install_lock.sh .venv-oip/bin/python locks/requirements-oip.lock .
# kserve and tritonclient each register protobuf package `inference` (duplicate symbols when both load in
# one process): the KServe server and the Triton client always run as separate processes, so check apart.
.venv-oip/bin/python -c "import kserve, google.protobuf as p; assert int(p.__version__.split('.')[0]) < 7"
.venv-oip/bin/python -c "import tritonclient.grpc, tritonclient.grpc.model_config_pb2"
echo "splitinfer's OIP environment is set up in .venv-oip ($(( $(date +%s) - start )) s)"
