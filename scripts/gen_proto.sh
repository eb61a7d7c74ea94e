#!/usr/bin/env bash
# Generate the Python protobuf/gRPC modules from proto/splitinfer.proto.
# Usage: scripts/gen_proto.sh [OUT_DIR]   (default: common/transport/proto, the committed copy)
# The generated gRPC module imports its message module relatively, so it works inside
# the splitinfer.common.transport.proto package. tests/test_proto_sync.py runs this into a temp dir
# and compares with the committed files.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/common/transport/proto}"
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
