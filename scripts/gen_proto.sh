#!/usr/bin/env bash
# Generate the Python protobuf/gRPC modules from proto/splitinfer.proto, and our own stubs of the Open
# Inference Protocol (proto/grpc_predict_v2.proto, KServe v2) for the network process's OIP endpoint.
# Usage: scripts/gen_proto.sh [OUT_DIR [OIP_OUT_DIR]]
#   defaults: common/transport/proto and common/transport/oip_proto (the committed copies);
#   with OUT_DIR only, the OIP stubs go to OUT_DIR/oip_proto.
# The generated gRPC module imports its message module relatively, so it works inside
# the splitinfer.common.transport.proto package. tests/test_proto_sync.py runs this into a temp dir
# and compares with the committed files.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/common/transport/proto}"
if [ $# -ge 2 ]; then OIP_OUT="$2"; elif [ $# -ge 1 ]; then OIP_OUT="$1/oip_proto"; else OIP_OUT="$ROOT/common/transport/oip_proto"; fi
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
"$PY" -m grpc_tools.protoc -I "$ROOT/proto" --python_out="$OUT" --grpc_python_out="$OUT" \
    "$ROOT/proto/splitinfer.proto"
# 'import splitinfer_pb2' only works with common/transport/proto on sys.path; make it package-relative.
sed -i 's/^import splitinfer_pb2 as splitinfer__pb2$/from . import splitinfer_pb2 as splitinfer__pb2/' \
    "$OUT/splitinfer_pb2_grpc.py"
grep -q '^from \. import splitinfer_pb2 as splitinfer__pb2$' "$OUT/splitinfer_pb2_grpc.py" \
    || { echo "gen_proto.sh: could not rewrite the import in splitinfer_pb2_grpc.py" >&2; exit 1; }

# The Open Inference Protocol stubs, made package-relative the same way.
mkdir -p "$OIP_OUT"
"$PY" -m grpc_tools.protoc -I "$ROOT/proto" --python_out="$OIP_OUT" --grpc_python_out="$OIP_OUT" \
    "$ROOT/proto/grpc_predict_v2.proto"
sed -i 's/^import grpc_predict_v2_pb2 as grpc__predict__v2__pb2$/from . import grpc_predict_v2_pb2 as grpc__predict__v2__pb2/' \
    "$OIP_OUT/grpc_predict_v2_pb2_grpc.py"
grep -q '^from \. import grpc_predict_v2_pb2 as grpc__predict__v2__pb2$' "$OIP_OUT/grpc_predict_v2_pb2_grpc.py" \
    || { echo "gen_proto.sh: could not rewrite the import in grpc_predict_v2_pb2_grpc.py" >&2; exit 1; }
