"""The network process's Open Inference Protocol endpoint, reached by our OIP client and by the real
tritonclient (in .venv-oip, as its own process): health, metadata, detections equal to our own protocol's
and to the anchor's for a lossless split, FP16 raw inputs, and refusals with proper statuses."""

from __future__ import annotations

import json
import os

import grpc
import numpy as np
import pytest

from oip_helpers import anchor_detections, as_rows, equal_to_rounding, frame_files, same_objects, tritonclient_infer
from grpc_helpers import Stubs, real_frame, setup_msg, stream_status
from splitinfer.common.codecs import get_codec
from splitinfer.common.transport.oip_proto import grpc_predict_v2_pb2 as pb
from splitinfer.experiments.server_process import ServerProcess
from splitinfer.device.oip_client import OIPClient, build_request

RANK = 60
NAME = f"nanodet.r{RANK}"
# bench/gpu_check.sh runs this module with Part II on CUDA (SPLITINFER_TEST_DEVICE=gpu)
DEVICE = os.environ.get("SPLITINFER_TEST_DEVICE", "cpu")
PROVIDER = "cuda" if DEVICE == "gpu" else "cpu"


@pytest.fixture(scope="module")
def server():
    with ServerProcess(threads=1, device=DEVICE) as srv:
        yield srv


@pytest.fixture(scope="module")
def frame():
    return real_frame(RANK)


@pytest.fixture(scope="module")
def client(server):
    with OIPClient(server.address, timeout=60) as c:
        c.wait_ready()
        yield c


@pytest.fixture(scope="module")
def anchor(frame):
    """The whole model's detections on the same photo (family post-processing, same meta)."""
    return anchor_detections("dog.jpg")


@pytest.fixture(scope="module")
def own_protocol(server, frame):
    """Detections of the same frame over our own stream (codec none)."""
    stubs = Stubs(server.address)
    try:
        code, details, replies = stream_status(stubs, [setup_msg(rank=RANK), *frame.messages(1, get_codec("none"))])
    finally:
        stubs.close()
    assert code == grpc.StatusCode.OK, details
    return [[d.label, d.x1, d.y1, d.x2, d.y2, d.score] for d in replies[1].result.detections]


def test_health_and_metadata(client, frame):
    assert client.server_live()
    assert client.model_ready(NAME)
    assert not client.model_ready("nanodet.r999999")
    assert not client.model_ready("no-such-model.r1")
    md = client.model_metadata(NAME)
    assert [i.name for i in md.inputs] == list(frame.arrays)
    assert [list(i.shape) for i in md.inputs] == [list(a.shape) for a in frame.arrays.values()]
    assert {o.name for o in md.outputs} >= {"detections", "labels"}


def test_lossless_split_equals_own_protocol_and_anchor(client, frame, own_protocol, anchor):
    res = client.infer_frame(NAME, frame.arrays, json.loads(frame.meta_json))
    assert as_rows(res.detections) == own_protocol  # bit for bit: the same Part II on the same bytes
    assert res.detections, "the photo has objects"
    # the anchor runs on the CPU: equal to float rounding there, the same objects from CUDA's arithmetic
    assert equal_to_rounding(anchor, res.detections) if PROVIDER == "cpu" else same_objects(anchor, res.detections)
    assert res.encoded_bytes == res.raw_bytes == sum(a.nbytes for a in frame.arrays.values())
    assert res.provider == PROVIDER and res.server_ms["part2_ms"] > 0


def test_fp16_raw_inputs_and_raw_outputs(client, frame, anchor):
    res = client.infer_frame(NAME, frame.arrays, json.loads(frame.meta_json), half=True,
                             outputs=["detections", "labels", "Identity:0"])
    assert res.encoded_bytes * 2 == res.raw_bytes
    assert same_objects(anchor, res.detections)
    assert res.outputs["Identity:0"].shape == (1, 2704, 80)


def _status(client, request: bytes):
    call = client.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=None,
                                      response_deserializer=pb.ModelInferResponse.FromString)
    try:
        call(request, timeout=60)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        return exc.code(), exc.details()


def test_refusals_name_the_problem(client, frame):
    meta = json.loads(frame.meta_json)
    good, _, _ = build_request(NAME, frame.arrays, meta)
    cases = []
    r = pb.ModelInferRequest(); r.CopyFrom(good); r.model_name = "nope.r60"
    cases.append((grpc.StatusCode.NOT_FOUND, "no model 'nope'", r))
    r = pb.ModelInferRequest(); r.CopyFrom(good); r.model_name = "nanodet"
    cases.append((grpc.StatusCode.NOT_FOUND, "<model id>.r<split rank>", r))
    r = pb.ModelInferRequest(); r.CopyFrom(good); r.raw_input_contents[0] = r.raw_input_contents[0][:-4]
    cases.append((grpc.StatusCode.INVALID_ARGUMENT, "bytes of raw contents", r))
    r = pb.ModelInferRequest(); r.CopyFrom(good); del r.inputs[1]; del r.raw_input_contents[1]
    cases.append((grpc.StatusCode.INVALID_ARGUMENT, "missing", r))
    r = pb.ModelInferRequest(); r.CopyFrom(good); r.inputs[0].shape[1] = 1 << 40
    cases.append((grpc.StatusCode.INVALID_ARGUMENT, "Part II expects", r))
    r = pb.ModelInferRequest(); r.CopyFrom(good); r.inputs[0].datatype = "INT64"
    cases.append((grpc.StatusCode.INVALID_ARGUMENT, "datatype INT64", r))
    r = pb.ModelInferRequest(); r.CopyFrom(good); r.parameters["meta"].string_param = "{not json"
    cases.append((grpc.StatusCode.INVALID_ARGUMENT, "not JSON", r))
    for code, words, req in cases:
        got, details = _status(client, req.SerializeToString())
        assert (got, words in details) == (code, True), (code, words, got, details)
    got, details = _status(client, b"\xff\xff\xff")
    assert got == grpc.StatusCode.INVALID_ARGUMENT and "ModelInferRequest" in details
    assert client.infer_frame(NAME, frame.arrays, meta).detections  # still serving


def test_tritonclient_against_the_endpoint(server, frame, own_protocol, tmp_path):
    npz, meta = frame_files(frame, tmp_path)
    got = tritonclient_infer(server.address, NAME, npz, meta, tmp_path / "out.json")
    assert got["live"] and got["ready"] and got["model_ready"]
    assert got["server"]["name"] == "splitinfer"
    assert [i["name"] for i in got["metadata"]["inputs"]] == list(frame.arrays)
    assert got["detections"] == own_protocol
    half = tritonclient_infer(server.address, NAME, npz, meta, tmp_path / "half.json", half=True)
    assert [d[0] for d in half["detections"]] == [d[0] for d in own_protocol]
    assert np.allclose([d[1:5] for d in half["detections"]], [d[1:5] for d in own_protocol], atol=1.0)


REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED}


def test_mutated_requests_get_refusals_never_a_crash(client, frame):
    """Random bytes, truncations and field edits of a valid request: OK or a refusal status, never
    INTERNAL/UNKNOWN, and the server still answers afterwards."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    good, _, _ = build_request(NAME, frame.arrays, json.loads(frame.meta_json))
    small = pb.ModelInferRequest(); small.CopyFrom(good)
    for k in range(len(small.raw_input_contents)):
        small.raw_input_contents[k] = small.raw_input_contents[k][:64]  # keep the fuzzing light
    blob = small.SerializeToString()

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data):
        kind = data.draw(st.sampled_from(["random", "truncate", "flip", "shape", "datatype", "name"]))
        if kind == "random":
            raw = data.draw(st.binary(max_size=300))
        elif kind == "truncate":
            raw = blob[: data.draw(st.integers(0, len(blob) - 1))]
        elif kind == "flip":
            b = bytearray(blob)
            b[data.draw(st.integers(0, len(b) - 1))] ^= data.draw(st.integers(1, 255))
            raw = bytes(b)
        else:
            r = pb.ModelInferRequest(); r.CopyFrom(small)
            i = data.draw(st.integers(0, len(r.inputs) - 1))
            if kind == "shape":
                r.inputs[i].shape[data.draw(st.integers(0, 3))] = data.draw(st.integers(-(1 << 62), 1 << 62))
            elif kind == "datatype":
                r.inputs[i].datatype = data.draw(st.sampled_from(["FP16", "FP64", "BF16", "BYTES", "INT8", "", "x"]))
            else:
                r.inputs[i].name = data.draw(st.text(max_size=40))
            raw = r.SerializeToString()
        code, details = _status(client, raw)
        assert code in REFUSALS, (kind, code, details)

    check()
    assert client.server_live() and client.infer_frame(NAME, frame.arrays, json.loads(frame.meta_json)).detections


def test_oip_frames_are_counted_in_the_servers_metrics(server, client, frame):
    from grpc_helpers import scrape

    client.infer_frame(NAME, frame.arrays, json.loads(frame.meta_json))
    samples = scrape(server.metrics_port)
    frames = sum(v for (name, labels), v in samples.items()
                 if name == "splitinfer_frames_total" and dict(labels).get("codec") == "oip")
    part2 = sum(v for (name, labels), v in samples.items()
                if name == "splitinfer_part2_seconds_count" and dict(labels).get("split") == str(RANK)
                and dict(labels).get("codec") == "oip")
    assert frames >= 1 and part2 == frames
