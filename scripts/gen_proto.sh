#!/usr/bin/env bash
# Generate the Python protobuf/gRPC modules from proto/splitinfer.proto, and our own stubs of the Open
# Inference Protocol (proto/grpc_predict_v2.proto, KServe v2) for the network process's OIP endpoint.
# Usage: scripts/gen_proto.sh [OUT_DIR [OIP_OUT_DIR]]
#   defaults: common/transport/proto and common/transport/oip_proto (the committed copies);
#   with OUT_DIR only, the OIP stubs go to OUT_DIR/oip_proto.
#        scripts/gen_proto.sh --check [own|oip]
#   generates into a temporary folder and compares with the committed copies (both sets by default); exit 1
#   with a diff when they differ. The generator's version banner is left out of the comparison (the
#   GRPC_GENERATED_VERSION line, the "Protobuf Python Version" comment and the minor/patch/suffix arguments
#   of ValidateProtobufRuntimeVersion), so an allowed patch release of grpcio-tools does not make the
#   committed stubs "stale"; every other line must be identical. The committed banner is the stubs'
#   runtime floor: tests/transport/test_proto_sync.py checks it against the declared grpcio/protobuf ranges.
#   The generator itself is pinned by the lock (grpcio-tools in locks/requirements.lock).
# The generated gRPC module imports its message module relatively, so it works inside
# the splitinfer.common.transport.proto package. tests/transport/test_proto_sync.py and
# tests/oip/test_oip_proto_sync.py run the --check.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3

# Without the generator's version banner (see the usage above); the protobuf major version is kept.
strip_banner() {
  awk '
    /^GRPC_GENERATED_VERSION = /      { print "GRPC_GENERATED_VERSION = <generator version>"; next }
    /^# Protobuf Python Version: /    { split($5, v, "."); print "# Protobuf Python Version: " v[1] ".<generator version>"; next }
    /ValidateProtobufRuntimeVersion\(/ { inv = 1; n = 0; print; next }
    inv && /^\)/                       { inv = 0 }
    inv                                { n++; if (n >= 3 && n <= 5) { print "    <generator version>,"; next } }
    { print }' "$1"
}

if [ "${1:-}" = "--check" ]; then
  which=${2:-both}
  case "$which" in own|oip|both) ;; *) echo "gen_proto.sh: --check takes own, oip or nothing (both)" >&2; exit 2 ;; esac
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  bash "$0" "$TMP/own" "$TMP/oip"
  stale=0
  check() {  # check FRESH_DIR COMMITTED_DIR FILE...
    local fresh=$1 committed=$2; shift 2
    for f in "$@"; do
      if ! diff -u --label "$committed/$f (committed)" --label "$committed/$f (generated now)" \
          <(strip_banner "$ROOT/$committed/$f") <(strip_banner "$fresh/$f"); then
        echo "gen_proto.sh: $committed/$f is stale (the generator's version banner aside): run scripts/gen_proto.sh" >&2
        stale=1
      fi
    done
  }
  [ "$which" = oip ] || check "$TMP/own" common/transport/proto splitinfer_pb2.py splitinfer_pb2_grpc.py
  [ "$which" = own ] || check "$TMP/oip" common/transport/oip_proto grpc_predict_v2_pb2.py grpc_predict_v2_pb2_grpc.py
  exit $stale
fi

OUT="${1:-$ROOT/common/transport/proto}"
if [ $# -ge 2 ]; then OIP_OUT="$2"; elif [ $# -ge 1 ]; then OIP_OUT="$1/oip_proto"; else OIP_OUT="$ROOT/common/transport/oip_proto"; fi
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
