"""The committed protobuf/gRPC modules are exactly what scripts/gen_proto.sh makes from proto/."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("splitinfer_pb2.py", "splitinfer_pb2_grpc.py")


def test_generated_code_matches_proto(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in GENERATED:
        fresh = (tmp_path / name).read_text()
        committed = (ROOT / "common" / "transport" / "proto" / name).read_text()
        assert fresh == committed, f"common/transport/proto/{name} is stale: run scripts/gen_proto.sh"


def test_generated_code_imports_inside_the_package():
    from splitinfer.common.transport.proto import splitinfer_pb2, splitinfer_pb2_grpc

    service = splitinfer_pb2.DESCRIPTOR.services_by_name["SplitInference"]
    assert {m.name for m in service.methods} == {"Infer", "Stream", "ListModels"}
    stream = service.methods_by_name["Stream"]
    assert stream.client_streaming and stream.server_streaming
    assert hasattr(splitinfer_pb2_grpc, "SplitInferenceStub")
    # payloads are bytes, never repeated floats
    data = splitinfer_pb2.TensorChunk.DESCRIPTOR.fields_by_name["data"]
    assert data.type == data.TYPE_BYTES
