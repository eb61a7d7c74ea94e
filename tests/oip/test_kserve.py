"""Part II on a real KServe ModelServer (kserve SDK 0.21, in .venv-oip, as its own process), reached by the real
tritonclient (its own process) and by the UE's OIP client: health, metadata, detections equal bit for bit to
Part II run here and to the anchor to float rounding, refusals; and the KServe path never loads our
protobuf-7 stubs."""

from __future__ import annotations

import json
import subprocess

import grpc
import pytest

from oip_helpers import (ROOT, KServeProcess, anchor_detections, as_rows, equal_to_rounding, frame_files,
                         require_oip_venv, tritonclient_infer)
from grpc_helpers import real_frame

RANKS = (60, 9)


@pytest.fixture(scope="module")
def kserve_server():
    """(grpc address, http port) of a KServe ModelServer serving nanodet.r60 and nanodet.r9."""
    with KServeProcess([f"nanodet.r{r}" for r in RANKS]) as ks:
        yield ks.address, ks.http_port


@pytest.fixture(scope="module")
def frames():
    return {r: real_frame(r) for r in RANKS}


@pytest.fixture(scope="module")
def local_part2(frames):
    """Detections of Part II run here, in this process, on the same frames (the bit-for-bit reference)."""
    from splitinfer.common.assets import MODELS_DIR
    from splitinfer.server import oip_core as core
    from splitinfer.server.model_repository import ModelRepository

    repo = ModelRepository(MODELS_DIR, device="cpu", threads=1)
    return {r: as_rows(core.run_part2(repo.part2("nanodet", rank=r), f.arrays, json.loads(f.meta_json)).detections)
            for r, f in frames.items()}


def test_tritonclient_against_kserve(kserve_server, frames, local_part2, tmp_path):
    address, _ = kserve_server
    for r, frame in frames.items():
        npz, meta = frame_files(frame, tmp_path)
        got = tritonclient_infer(address, f"nanodet.r{r}", npz, meta, tmp_path / f"out{r}.json")
        assert got["live"] and got["ready"] and got["model_ready"]
        assert got["server"]["name"] == "kserve"
        assert [i["name"] for i in got["metadata"]["inputs"]] == list(frame.arrays)
        assert got["detections"] == local_part2[r], f"split {r}"


def test_ue_oip_client_against_kserve(kserve_server, frames, local_part2):
    from splitinfer.device.oip_client import OIPClient

    anchor = anchor_detections("dog.jpg")
    with OIPClient(kserve_server[0], timeout=60) as c:
        assert c.server_live() and c.model_ready("nanodet.r60") and not c.model_ready("nanodet.r61")
        md = c.model_metadata("nanodet.r60")
        assert {o.name for o in md.outputs} >= {"detections", "labels", "Identity:0"}
        for r, frame in frames.items():
            res = c.infer_frame(f"nanodet.r{r}", frame.arrays, json.loads(frame.meta_json))
            assert as_rows(res.detections) == local_part2[r]
            assert equal_to_rounding(anchor, res.detections)
        res = c.infer_frame("nanodet.r60", frames[60].arrays, json.loads(frames[60].meta_json), half=True)
        assert [d.label for d in res.detections] == [d.label for d in anchor]


def test_kserve_refusals(kserve_server, frames):
    from splitinfer.common.transport.oip_proto import grpc_predict_v2_pb2 as pb
    from splitinfer.device.oip_client import build_request

    channel = grpc.insecure_channel(kserve_server[0], options=[("grpc.max_send_message_length", 64 << 20)])
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=None,
                               response_deserializer=pb.ModelInferResponse.FromString)
    good, _, _ = build_request("nanodet.r60", frames[60].arrays, json.loads(frames[60].meta_json))

    def status(req):
        try:
            call(req.SerializeToString(), timeout=60)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            return exc.code(), exc.details()

    r = pb.ModelInferRequest(); r.CopyFrom(good); r.model_name = "nanodet.r61"
    assert status(r)[0] == grpc.StatusCode.NOT_FOUND
    r = pb.ModelInferRequest(); r.CopyFrom(good); r.inputs[0].shape[1] = 64
    code, details = status(r)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Part II expects" in details
    r = pb.ModelInferRequest(); r.CopyFrom(good); del r.inputs[1]; del r.raw_input_contents[1]
    code, details = status(r)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "missing" in details
    assert status(good)[0] == grpc.StatusCode.OK
    channel.close()


def test_kserve_path_never_loads_our_protobuf7_stubs():
    python = require_oip_venv()
    code = ("import sys, splitinfer.server.oip_kserve as k; from splitinfer.common.assets import MODELS_DIR;"
            "k.build_models(MODELS_DIR, ['nanodet.r60'], threads=1);"
            "bad = [m for m in sys.modules if m.startswith(('splitinfer.common.transport', 'splitinfer.device'))];"
            "import google.protobuf as p; print(p.__version__, bad)")
    proc = subprocess.run([str(python), "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    version, bad = proc.stdout.split(" ", 1)
    assert int(version.split(".")[0]) < 7 and bad.strip() == "[]"


def test_kserve_rest_health_and_metadata(kserve_server):
    import urllib.request

    _, http = kserve_server
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=30) as r:
        assert json.loads(r.read())["ready"] is True
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/nanodet.r9", timeout=30) as r:
        md = json.loads(r.read())
    assert md["name"] == "nanodet.r9" and [o["name"] for o in md["outputs"]][:2] == ["detections", "labels"]
