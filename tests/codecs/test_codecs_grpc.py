"""The fast codec and chains through the real network process: `python -m splitinfer.server.main` as its
own OS process, real gRPC, NanoDet's Part I outputs on a real photo at split 46 (one tensor) and 95
(three). The server resolves `fq:...` and chained specs from the set-up, finds the same objects as with
the lossless `none`, and answers a hostile fq payload with INVALID_ARGUMENT while it keeps serving."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from grpc_helpers import Stubs, real_frame, setup_msg, stream_status
from splitinfer.common.codecs import fq, get_codec
from splitinfer.common.transport import wire

pytestmark = pytest.mark.timeout(300)

SPLITS = (46, 95)
CODECS = ("fq:6", "fq:4", "float16+zstd", "fq:6+blosc2:lz4")


@pytest.fixture(scope="module")
def server():
    from splitinfer.experiments.server_process import ServerProcess

    srv = ServerProcess(threads=1, device="cpu", env={"SPLITINFER_NNC_WORKERS": "1", "OMP_NUM_THREADS": "1"})
    yield srv
    assert srv.stop() == 0, "\n".join(srv.stderr_tail)


@pytest.fixture(scope="module")
def stubs(server):
    s = Stubs(server.address)
    yield s
    s.close()


@pytest.fixture(scope="module")
def frames():
    return {r: real_frame(r) for r in SPLITS}


def _run(stubs, rank, frame, spec):
    codec = get_codec(spec)
    code, details, replies = stream_status(stubs, [setup_msg(rank, codec=spec), *frame.messages(1, codec)])
    assert code == grpc.StatusCode.OK, f"{rank} {spec}: {code} {details}"
    assert [r.WhichOneof("kind") for r in replies] == ["session", "result"]
    return replies[1].result


def _iou(a, b) -> float:
    ix = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    iy = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = ix * iy
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.parametrize("rank", SPLITS)
def test_fast_codec_and_chains_over_grpc(stubs, frames, rank):
    ref = _run(stubs, rank, frames[rank], "none")
    strong = [d for d in ref.detections if d.score >= 0.5]
    assert strong, "the reference finds nothing: a useless check"
    for spec in CODECS:
        res = _run(stubs, rank, frames[rank], spec)
        assert res.raw_bytes == ref.raw_bytes
        assert res.encoded_bytes < ref.encoded_bytes / (2.05 if spec.startswith("float16") else 6), spec
        for d in strong:  # every confident object of the lossless run is found again
            assert any(e.label == d.label and _iou(d, e) > 0.8 for e in res.detections), (spec, d)


def _fq_tensors(frame, spec="fq:6"):
    return frame.tensors(get_codec(spec))


def _replace_payload(tensors, payload):
    t = tensors[0]
    tensors[0] = wire.EncodedTensor(t.name, t.dtype, t.shape, t.codec_id, t.codec_params, payload, t.raw_nbytes)
    return tensors


def test_hostile_fq_payloads_get_invalid_argument(stubs, frames):
    import zstandard

    frame = frames[95]
    good = bytes(_fq_tensors(frame)[0].payload)
    magic, mode, levels, layout, channels = fq._HEAD.unpack_from(good)
    side = fq._HEAD.size + (channels + 7) // 8 + 2 * (2 if layout & fq.HALF_SIDE else 4) * channels
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (256 << 20))
    cases = {
        "lying channels": fq._HEAD.pack(magic, mode, levels, layout, channels + 1) + good[fq._HEAD.size:],
        "levels 9999": fq._HEAD.pack(magic, mode, 9999, layout, channels) + good[fq._HEAD.size:],
        "truncated": good[: len(good) // 2],
        "zstd bomb": good[:side] + bomb,
        "random": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    }
    for name, payload in cases.items():
        msgs = [setup_msg(95, codec="fq:6"), *wire.frame_messages(
            1, _replace_payload(_fq_tensors(frame), payload), meta_json=frame.meta_json)]
        code, details, _ = stream_status(stubs, msgs)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, code, details)
        assert "fq" in details, (name, details)
    # a chain id on a tensor of a non-chain session is refused as an unknown codec, not guessed
    t = _fq_tensors(frame)
    t[0] = wire.EncodedTensor(t[0].name, t[0].dtype, t[0].shape, 9, {}, t[0].payload, t[0].raw_nbytes)
    code, details, _ = stream_status(stubs, [setup_msg(95, codec="fq:6"),
                                             *wire.frame_messages(1, t, meta_json=frame.meta_json)])
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    # and the server still answers good frames
    assert _run(stubs, 95, frame, "fq:6").detections
