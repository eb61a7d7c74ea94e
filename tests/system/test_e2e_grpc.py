"""The two-process system end to end: `splitinfer serve` as a separate OS process, the UE over real gRPC.

NanoDet on real photos at three splits: rank 10 (one 5.6 MB tensor, sent in chunks under the 4 MiB
limit), rank 60 (four crossing tensors) and rank 120 (Part I already yields two of the model's outputs),
with the lossless `none` and the lossy `float16` and NNC codecs. Lossless splits must return exactly the
anchor's detections, lossy ones the same objects. Both metrics endpoints are scraped and parsed; the
device command's CSV must hold every column the field's script writes.
"""

import csv
import sys
import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from splitinfer.common.transport import wire
from splitinfer.common.assets import DEFAULT_MODEL_ID, bundled_images, default_model_path
from splitinfer.common.core.images import read_image
from splitinfer.common.transport.proto import splitinfer_pb2 as pb

SPLITS = (10, 60, 120)
CODECS = ("none", "float16", "nnc:-38")
IMAGES = ("dog.jpg", "horses.jpg")
ISSUE_COLUMNS = (
    "Source", "Nodes", "Inference_loop", "UE_inference_time_CPU", "UE_inference_time_GPU",
    "Server_inference_time_CPU", "Server_inference_time_GPU", "Total_inference_time_steady_state",
    "Encoding_time", "Decoding_time", "nb_inference", "intermediate_data_size", "encoded_intermediate_data_size",
    "encoding_algo", "predictions_size", "predictions",
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def server():
    from splitinfer.experiments.server_process import ServerProcess

    srv = ServerProcess(threads=1, device="cpu")
    assert srv.proc.pid and srv.proc.poll() is None
    yield srv
    code = srv.stop()
    assert code == 0, "\n".join(srv.stderr_tail)  # graceful shutdown on SIGTERM


@pytest.fixture(scope="module")
def frames():
    paths = {p.name: p for p in bundled_images()}
    return [(name, 0, read_image(paths[name])) for name in IMAGES]


@pytest.fixture(scope="module")
def anchor_detections(frames):
    from splitinfer.common.families import get_family
    from splitinfer.device.part1 import Anchor

    family = get_family("nanodet")
    anchor = Anchor(default_model_path(), "cpu", threads=1)
    out = {}
    for name, _, img in frames:
        feeds, meta = family.preprocess(img)
        out[name] = family.postprocess(anchor.run(feeds), meta)
        assert out[name], f"the anchor finds nothing on {name}: a useless reference"
    return out


def local_split_detections(part1, family, frames):
    """The same split run in this process (no codec, no network): what a lossless transport must equal."""
    from splitinfer.common.split.graph import consolidate
    from splitinfer.common.core.runtime import make_session

    plan = part1.plan
    part2 = make_session(part1.graph.extract(plan)[1], "cpu", threads=1)
    out = {}
    for name, _, img in frames:
        feeds, meta = family.preprocess(img)
        o1 = part1.run(feeds)
        o2 = {} if plan.part2_identity else dict(zip(part2.output_names,
                                                       part2.run({n: o1[n] for n in plan.part2_inputs})))
        outs = dict(zip([n for n, _ in plan.consolidation], consolidate(plan, o1, o2)))
        out[name] = family.postprocess(outs, meta)
    return out


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return list(text_string_to_metric_families(r.read().decode()))


def sample(families, name, **labels):
    hits = [s.value for f in families for s in f.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0]


def test_splits_and_codecs_over_grpc(server, frames, anchor_detections):
    from splitinfer.common.codecs import get_codec
    from splitinfer.common.families import get_family
    from splitinfer.common.transport.metrics import Metrics
    from splitinfer.device.agreement import compare_detections
    from splitinfer.device.client import UEClient
    from splitinfer.device.part1 import Part1
    from splitinfer.device.pipeline import FramePipeline

    family = get_family("nanodet")
    metrics = Metrics("device")
    device_port = metrics.serve(0, "127.0.0.1")
    client = UEClient(server.address)
    client.wait_ready(60)
    seen = {}
    try:
        for rank in SPLITS:
            part1 = Part1(default_model_path(), rank=rank, threads=1)
            local = local_split_detections(part1, family, frames)
            for spec in CODECS:
                codec = get_codec(spec)
                ue = FramePipeline(client, part1, family, codec, DEFAULT_MODEL_ID, metrics=metrics, in_flight=2)
                try:
                    records = list(ue.run(frames))
                finally:
                    ue.close()
                assert [r.source for r in records] == list(IMAGES)
                info = ue.info
                assert info.provider == "cpu" and info.split_rank == rank
                assert list(info.crossing) == part1.plan.part1_outputs
                for r in records:
                    agree = compare_detections(anchor_detections[r.source], r.detections)
                    where = f"split {rank}, {spec}, {r.source}"
                    if codec.lossless:  # bit for bit, or within onnxruntime's float rounding (see device/agreement.py)
                        assert agree.rounding, f"{where}: lossless split differs from the anchor: {agree}"
                        assert r.detections == local[r.source], f"{where}: transport changed the tensors"
                        assert r.encoded_bytes >= r.raw_bytes * 0.5
                    elif spec == "nnc:-38" and rank == 10:
                        # PadV2's -inf padding: NNC cannot code non-finite values and sends raw bytes
                        assert r.encoded_bytes == r.raw_bytes + 8 and agree.rounding, f"{where}: {agree}"
                    else:
                        assert agree.close, f"{where}: {agree}"
                        assert agree.max_score_diff < 0.05 and agree.min_iou > 0.9, f"{where}: {agree}"
                        ratio = r.raw_bytes / r.encoded_bytes
                        assert ratio == 2.0 if spec == "float16" else ratio > 2.5, f"{where}: ratio {ratio}"
                    assert r.server_provider == "cpu"
                    assert r.server["part2"] > 0 and r.end_to_end_s > r.part1_s
                    if rank == 10 and spec == "none":
                        assert r.messages == 2  # 5.6 MB under a 4 MiB limit: chunked and reassembled
                seen[(rank, str(codec.spec))] = records
    finally:
        client.close()
        device_fams = scrape(device_port)
        metrics.close()
    server_fams = scrape(server.metrics_port)

    for (rank, label), records in seen.items():
        lab = {"model": DEFAULT_MODEL_ID, "split": str(rank), "codec": label}
        n = len(records)
        assert sample(server_fams, "splitinfer_frames_total", **lab) == n
        assert sample(device_fams, "splitinfer_frames_total", **lab) == n
        enc = sum(r.encoded_bytes for r in records)
        assert sample(server_fams, "splitinfer_encoded_bytes_total", **lab) == enc
        assert sample(device_fams, "splitinfer_encoded_bytes_total", **lab) == enc
        assert sample(server_fams, "splitinfer_raw_bytes_total", **lab) == sum(r.raw_bytes for r in records)
        assert sample(server_fams, "splitinfer_part2_seconds_count", **lab) == n
        assert sample(server_fams, "splitinfer_decode_seconds_count", **lab) == n
        assert sample(device_fams, "splitinfer_part1_seconds_count", **lab) == n
        assert sample(device_fams, "splitinfer_transfer_seconds_count", **lab) == n
        assert sample(device_fams, "splitinfer_end_to_end_seconds_count", **lab) == n
        part1_sum = sample(device_fams, "splitinfer_part1_seconds_sum", **lab)
        assert abs(part1_sum - sum(r.part1_s for r in records)) < 1e-6


def test_several_devices_at_once(server, frames, anchor_detections):
    """Three UEs, each its own connection and split, stream at the same time; every frame is answered right."""
    import threading

    from splitinfer.common.codecs import get_codec
    from splitinfer.common.families import get_family
    from splitinfer.device.agreement import compare_detections
    from splitinfer.device.client import UEClient
    from splitinfer.device.part1 import Part1
    from splitinfer.device.pipeline import FramePipeline

    family = get_family("nanodet")
    results, errors = {}, []

    def device(rank):
        client = UEClient(server.address)
        try:
            client.wait_ready(60)
            ue = FramePipeline(client, Part1(default_model_path(), rank=rank, threads=1), family, get_codec("zstd"),
                    DEFAULT_MODEL_ID, in_flight=2)
            try:
                results[rank] = list(ue.run(frames * 2))
            finally:
                ue.close()
        except Exception as exc:  # reported below
            errors.append(f"split {rank}: {exc}")
        finally:
            client.close()

    threads = [threading.Thread(target=device, args=(r,)) for r in (40, 90, 125)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    for rank, records in results.items():
        assert [r.frame_id for r in records] == [1, 2, 3, 4]
        for r in records:
            assert compare_detections(anchor_detections[r.source], r.detections).rounding, f"split {rank}, {r.source}"


def test_device_command_writes_csv_predictions_and_overlays(server, tmp_path, anchor_detections):
    from splitinfer.common.cli import main
    from splitinfer.common.core.detections import read_predictions
    from splitinfer.common.split.graph import SplitGraph
    from splitinfer.common.core.onnx_io import load_model

    src = tmp_path / "images"
    src.mkdir()
    paths = {p.name: p for p in bundled_images()}
    for name in IMAGES:
        (src / name).write_bytes(paths[name].read_bytes())
    node = SplitGraph(load_model(default_model_path())).node_names[60]  # split by node name this time
    out = tmp_path / "results"
    code = main(["device", "--server", server.address, "-s", str(src), "--split", node, "-loop", "2",
                 "-encode_algo", "none", "-results_dir", str(out), "-results_filename", str(out / "r.csv"),
                 "--threads", "1", "-ref_split", "--in-flight", "3"])
    assert code == 0
    with (out / "r.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    header = list(rows[0])
    missing = [c for c in ISSUE_COLUMNS if c not in header]
    assert not missing, f"CSV lacks columns {missing}"
    for ours in ("Serialization_time", "Transfer_time", "End_to_end_latency", "Crossing_tensors",
                 "UE_provider", "Server_provider"):
        assert ours in header
    assert [r["Source"] for r in rows] == [n.rsplit(".", 1)[0] for n in IMAGES]
    for r in rows:
        assert r["Split_rank"] == "60" and r["Crossing_tensors"] == "4" and r["nb_inference"] == "2"
        assert r["Equal_to_anchor"] in ("yes", "rounding")
        assert r["Equal_to_ref_split"] == "yes"  # the server's Part II gives bit for bit what Part II gives here
        assert r["Server_provider"] == "cpu" and r["Server_inference_time_CPU"] and not r["Server_inference_time_GPU"]
        avg, std = (float(x) for x in r["UE_inference_time_CPU"].split(";"))
        assert avg > 0 and std >= 0
        lo, mid, hi = (float(x) for x in r["encoded_intermediate_data_size"].split(","))
        assert lo == mid == hi == 2104320  # 4 float32 tensors, lossless: raw size
        # bytes of each inference's predictions (min,avg,max), as in its predictions file (TR 26.847 B.3)
        lines = r["predictions"].split(";")
        assert [int(x) for x in r["predictions_size"].split(",")] == [sum(len(x) + 1 for x in lines)] * 3
    for name in IMAGES:
        stem = name.rsplit(".", 1)[0]
        got = read_predictions(out / "predictions" / f"{stem}.txt")
        want = anchor_detections[name]
        assert [d.label for d in got] == [d.label for d in want]
        assert np.allclose([d.box + (d.score,) for d in got], [d.box + (d.score,) for d in want], atol=0.006)
        assert read_image(out / "overlays" / f"{stem}.jpg").shape == read_image(paths[name]).shape


def _setup(**kw):
    base = dict(model_id=DEFAULT_MODEL_ID, split=pb.SplitPoint(rank=60), codec=pb.CodecProfile(spec="none"))
    base.update(kw)
    return pb.SessionSetup(**base)


def test_bad_requests_get_proper_status_and_the_server_keeps_serving(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    from splitinfer.common.codecs import get_codec

    channel = grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 64 << 20)])
    infer = channel.unary_unary("/splitinfer.v1.SplitInference/Infer", request_serializer=None,
                                response_deserializer=pb.InferReply.FromString)
    stream = channel.stream_stream("/splitinfer.v1.SplitInference/Stream", request_serializer=None,
                                   response_deserializer=pb.StreamReply.FromString)
    rng = np.random.default_rng(0)
    crossing = {"PartitionedCall/onnx_tf_prefix_Concat_27:0": (1, 128, 52, 52),
                "PartitionedCall/onnx_tf_prefix_LeakyRelu_29:0": (1, 128, 26, 26),
                "PartitionedCall/onnx_tf_prefix_LeakyRelu_36:0": (1, 64, 26, 26),
                "PartitionedCall/Pad_15:0": (1, 64, 28, 28)}
    none = get_codec("none")
    good = [wire.encode_tensor(n, rng.standard_normal(s).astype(np.float32), none) for n, s in crossing.items()]
    meta = '{"width": 640, "height": 480, "input_width": 416, "input_height": 416}'

    def unary(setup, tensors, frame_id=1):
        (msg,) = wire.frame_messages(frame_id, tensors, setup=setup, meta_json=meta, max_message_bytes=16 << 20)
        return infer(msg, timeout=60)

    def expect(code, text, call):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == code, info.value.details()
        assert text in info.value.details(), info.value.details()

    expect(grpc.StatusCode.NOT_FOUND, "no model 'nope'", lambda: unary(_setup(model_id="nope"), good))
    expect(grpc.StatusCode.NOT_FOUND, "no model '../../etc/passwd'",
           lambda: unary(_setup(model_id="../../etc/passwd"), good))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "out of range", lambda: unary(_setup(split=pb.SplitPoint(rank=10**6)), good))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "no node named",
           lambda: unary(_setup(split=pb.SplitPoint(node="no-such-node")), good))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "unknown codec", lambda: unary(_setup(codec=pb.CodecProfile(spec="rot13")), good))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "missing ['PartitionedCall/Pad_15:0']", lambda: unary(_setup(), good[:3]))
    bad_shape = good[:3] + [wire.encode_tensor(good[3].name, np.zeros((1, 64, 27, 28), np.float32), none)]
    expect(grpc.StatusCode.INVALID_ARGUMENT, "has shape [1, 64, 27, 28]", lambda: unary(_setup(), bad_shape))
    lying = good[:3] + [wire.EncodedTensor(good[3].name, "float32", (1, 64, 28, 28), 0, {}, b"\0" * 100, 100)]
    expect(grpc.StatusCode.INVALID_ARGUMENT, "needs 200704", lambda: unary(_setup(), lying))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "truncated message", lambda: infer(b"\x12\x05abc", timeout=30))
    too_big = good + [wire.encode_tensor("big", np.zeros(2 << 20, np.float32), none)]  # 8 MB > 4 MiB limit
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED, "", lambda: unary(_setup(), too_big))
    frame_first = wire.frame_messages(1, good, meta_json=meta)
    expect(grpc.StatusCode.FAILED_PRECONDITION, "before the session set-up", lambda: list(stream(iter(frame_first))))
    setup_msg = pb.StreamRequest(setup=_setup()).SerializeToString()
    chunked = wire.frame_messages(1, good, meta_json=meta, max_message_bytes=1 << 20)
    assert len(chunked) >= 3
    expect(grpc.StatusCode.INVALID_ARGUMENT, "duplicated",
           lambda: list(stream(iter([setup_msg, chunked[0], chunked[0]] + chunked[1:]))))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "incomplete", lambda: list(stream(iter([setup_msg] + chunked[:-1]))))

    # ... and it still serves: a good frame on the stream and on the unary call
    replies = list(stream(iter([setup_msg] + chunked)))
    assert [r.WhichOneof("kind") for r in replies] == ["session", "result"]
    assert replies[1].result.frame_id == 1 and replies[1].result.timings.part2_ms > 0
    assert unary(_setup(), good).result.provider == "cpu"

    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "splitinfer.v1.SplitInference"):
        assert health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    (answer,) = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                               timeout=10))
    names = {s.name for s in answer.list_services_response.service}
    assert {"splitinfer.v1.SplitInference", "grpc.health.v1.Health"} <= names
    errors = [s for f in scrape(server.metrics_port) for s in f.samples if s.name == "splitinfer_errors_total"]
    assert {s.labels["code"] for s in errors} >= {"NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION"}
    channel.close()


def test_serve_refuses_a_missing_gpu_loudly(tmp_path):
    import subprocess

    from splitinfer.common.core.runtime import CUDA, available_providers

    if CUDA in available_providers():
        pytest.skip("CUDA present: --require-gpu would start")  # the refusal needs a machine without CUDA
    proc = subprocess.run([sys.executable, "-m", "splitinfer.server.main", "--port", "0", "--metrics-port", "0",
                           "--require-gpu"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "GPU requested but CUDA is not used" in proc.stderr and "Traceback" not in proc.stderr
