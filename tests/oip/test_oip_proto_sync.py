"""Our Open Inference Protocol stubs are what scripts/gen_proto.sh makes from proto/grpc_predict_v2.proto
(the generator's version banner aside), import inside the package, and keep the protocol's wire shape."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_oip_stubs_match_proto():
    """Line for line but for the generator's version banner (tests/transport/test_proto_sync.py checks that
    the comparison leaves out nothing else, for these stubs too)."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gen_proto.sh"), "--check", "oip"],
                          env=dict(os.environ, PYTHON=sys.executable), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_oip_stubs_keep_the_protocol():
    from splitinfer.common.transport.oip_proto import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc

    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"} <= {
        m.name for m in service.methods}
    raw = pb.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"]
    assert (raw.number, raw.type) == (7, raw.TYPE_BYTES)
    assert pb.ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number == 6
    assert hasattr(grpc_predict_v2_pb2_grpc, "GRPCInferenceServiceStub")
    assert "Apache License" in (ROOT / "proto" / "grpc_predict_v2.proto").read_text()[:1000]
