"""Sequential codecs through the real network process (an OS process, real gRPC): a stream's frames decode in
order against the session's references, and a predicted frame whose reference the session does not hold
(first frame of a stream, a lost frame, a unary call) is refused FAILED_PRECONDITION with a message naming
the reference, never decoded; the server counts keyframes and predicted frames in Prometheus."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from grpc_helpers import RealFrame, Stubs, infer_status, real_frame, scrape, setup_msg, stream_status
from splitinfer.common.codecs import get_codec
from splitinfer.common.transport import wire

pytestmark = pytest.mark.timeout(300)

RANK = 95
SPEC = "dzstd"


@pytest.fixture(scope="module")
def server():
    from splitinfer.experiments.server_process import ServerProcess

    srv = ServerProcess(threads=1, device="cpu", env={"OMP_NUM_THREADS": "1"})
    yield srv
    assert srv.stop() == 0, "\n".join(srv.stderr_tail)


@pytest.fixture(scope="module")
def stubs(server):
    s = Stubs(server.address)
    yield s
    s.close()


@pytest.fixture(scope="module")
def frames():
    """Part I outputs of a photo as three consecutive frames of one stream: the same frame twice, then with a
    band of rows changed (something moving; another photo would be a scene cut, coded as a keyframe)."""
    dog = real_frame(RANK, "dog.jpg")
    moved = {n: a.copy() for n, a in dog.arrays.items()}
    for a in moved.values():
        if a.ndim == 4:
            a[..., 2:5, :] *= np.float32(1.25)
    return [dog, dog, RealFrame(RANK, moved, dog.meta_json)]


def coded(frames, codec=SPEC, setup=None):
    """Each frame's messages, coded in order by one sequence encoder (frame ids 1, 2, ...); `setup`: as unary
    Infer requests."""
    codec = get_codec(codec)
    enc = codec.sequence_encoder()
    out = []
    for k, f in enumerate(frames):
        names = list(f.arrays)
        tensors = wire.encode_tensors(names, [f.arrays[n] for n in names], codec, enc)
        kw = {"setup": setup} if setup is not None else {}
        out.append(wire.frame_messages(k + 1, tensors, meta_json=f.meta_json, **kw))
    return out


def predicted_frames(port: int, kind: str) -> float:
    labels = frozenset({"model": "nanodet", "split": str(RANK), "codec": get_codec(SPEC).spec, "kind": kind}.items())
    return scrape(port).get(("splitinfer_coded_frames_total", labels), 0.0)


def test_a_stream_of_keyframe_and_predicted_frames_decodes_as_the_lossless_frames(stubs, frames, server):
    before = {kind: predicted_frames(server.metrics_port, kind) for kind in ("key", "predicted")}
    msgs = coded(frames)
    code, details, replies = stream_status(stubs, [setup_msg(RANK, codec=SPEC)] + [m for f in msgs for m in f])
    assert code == grpc.StatusCode.OK, details
    got = [r.result for r in replies[1:]]
    code, details, plain = stream_status(stubs, [setup_msg(RANK, codec="none")]
                                         + [m for k, f in enumerate(frames) for m in f.messages(k + 1, get_codec("none"))])
    assert code == grpc.StatusCode.OK, details
    assert len(got) == len(frames) == len(plain) - 1
    for a, b in zip(got, [r.result for r in plain[1:]]):
        assert [(d.label, d.x1, d.y1, d.score) for d in a.detections] == \
               [(d.label, d.x1, d.y1, d.score) for d in b.detections]
    assert got[1].encoded_bytes < got[0].encoded_bytes / 100  # frame 2 repeats frame 1: its XOR is all zeros
    assert predicted_frames(server.metrics_port, "predicted") - before["predicted"] == 2
    assert predicted_frames(server.metrics_port, "key") - before["key"] == 1


def test_a_stream_that_starts_with_a_predicted_frame_is_refused(stubs, frames):
    msgs = coded(frames)
    code, details, replies = stream_status(stubs, [setup_msg(RANK, codec=SPEC)] + msgs[1])
    assert code == grpc.StatusCode.FAILED_PRECONDITION, (code, details)
    assert "needs frame 0 as its reference" in details and "restart at a keyframe" in details, details
    assert [r.WhichOneof("kind") for r in replies] == []  # stream_status keeps no replies of a failed call


def test_a_lost_frame_is_refused_at_the_next_predicted_frame(stubs, frames):
    msgs = coded(frames)
    code, details, _ = stream_status(stubs, [setup_msg(RANK, codec=SPEC)] + msgs[0] + msgs[2])
    assert code == grpc.StatusCode.FAILED_PRECONDITION, (code, details)
    assert "needs frame 1" in details and "holds frame 0" in details, details


def test_a_unary_call_decodes_a_keyframe_and_refuses_a_predicted_frame(stubs, frames):
    setup = wire.parse_stream_request(setup_msg(RANK, codec=SPEC))[1]
    msgs = coded(frames, setup=setup)
    code, details, _ = infer_status(stubs, msgs[0][0])
    assert code == grpc.StatusCode.OK, details
    code, details, _ = infer_status(stubs, msgs[1][0])
    assert code == grpc.StatusCode.FAILED_PRECONDITION, (code, details)
    assert "a per-frame decode holds none" in details or "holds no frame" in details, details
