"""fq with inter prediction (`fqi`, codecs/fqi.py): specs and ids, a 30-frame sequence whose every frame stays
within the step's bound (closed loop: no drift), predicted frames far smaller than keyframes, skipped units,
fall-backs to intra coding, MissingReference without the reference, and hostile payloads refused with a
CodecError within a memory bound."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from splitinfer.common.codecs import CodecError, fq, fqi, get_codec
from splitinfer.common.codecs.sequence import HEADER, MissingReference, pack_header
from splitinfer.common.core.errors import UserError


def drifting(n=30, shape=(1, 16, 24, 24), seed=0, speed=0.02):
    """Slowly changing LeakyReLU features: a smooth field, a small random walk everywhere and a moving blob
    (a static camera's features with something walking through)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(shape).astype(np.float32)
    for axis in (2, 3):
        base = (base + np.roll(base, 1, axis) + np.roll(base, -1, axis)) / 3
    walk = np.zeros(shape, np.float32)
    frames = []
    for k in range(n):
        walk += speed * rng.standard_normal(shape).astype(np.float32)
        f = base + walk
        f[..., k % shape[2]:k % shape[2] + 3, 4:9] += 1.5
        frames.append(np.where(f > 0, f, 0.1 * f).astype(np.float32))
    return frames


def run(spec, frames, name="a"):
    codec = get_codec(spec)
    enc, dec = codec.sequence_encoder(), codec.sequence_decoder()
    payloads, outs = [], []
    for f in frames:
        (p,) = enc.encode_frame([name], [f])
        payloads.append(p)
        outs.append(dec.decode(name, p, f.dtype, f.shape))
    return codec, payloads, outs, dec


def kind(p: bytes) -> bytes:
    return p[HEADER.size:HEADER.size + 1]


@pytest.mark.parametrize("spec, cid, canonical", [
    ("fqi", 900014, "fqi:-14"), ("fqi:-14:x:25", 910114, "fqi:-14:x:25"), ("fqi:-18:hx", 900318, "fqi:-18:xh"),
    ("fqi:-10:h:0", 900210, "fqi:-10:h"), ("fqi:-6:30", 912006, "fqi:-6:30"), ("fqi:0", 900000, "fqi:0"),
    (999964, 999964, "fqi:-64:xh:249"),
])
def test_specs_and_ids(spec, cid, canonical):
    c = get_codec(spec)
    assert (c.name, c.codec_id, c.spec, c.lossless, c.sequential) == ("fqi", cid, canonical, False, True)
    assert get_codec(c.spec) == c and get_codec(c.codec_id) == c


@pytest.mark.parametrize("spec", ["fqi:1", "fqi:-65", "fqi:-14:z", "fqi:-14:xx", "fqi:-14:250", "fqi:-14:30:x",
                                  "fqi:-14:x:h", "fqi:-1_4", "fqi:-14:x:2:3", 900065, 999999])
def test_bad_specs(spec):
    with pytest.raises(UserError):
        get_codec(spec)


@pytest.mark.parametrize("spec, bound", [("fqi:-14", 1 + 1 / 128), ("fqi:-10:x", 1 + 1 / 128),
                                         ("fqi:-14:h", 1.5 + 1 / 128)])
def test_thirty_frames_stay_within_the_step_bound_and_predicted_frames_are_small(spec, bound):
    """Closed loop: the error of the 30th frame is bounded like the 2nd's (no drift), every channel comes back
    unbiased, and predicted frames are a fraction of the keyframe."""
    frames = drifting()
    codec, payloads, outs, dec = run(spec, frames)
    step = codec.step
    assert 2 ** (codec.qp / 4) <= step <= 2 ** (codec.qp / 4) * 1.001
    assert [kind(p) for p in payloads] == [fqi.KEY] + [fqi.PRED] * 29
    assert dec.keyframes == 1 and dec.predicted == 29
    for k, (f, y) in enumerate(zip(frames, outs)):
        assert y.shape == f.shape and y.dtype == np.float32
        assert np.abs(y - f).max() <= bound * step * 1.0001, k
        assert np.abs((y - f).mean(axis=(0, 2, 3))).max() <= step / 64 + 1e-6, k
    key, pred = len(payloads[0]), max(len(p) for p in payloads[1:])
    assert pred < key / 2, (key, [len(p) for p in payloads])


def test_closed_loop_is_what_bounds_the_error():
    """Against an open loop (each frame's residual taken against the previous *input*), whose errors add up
    over 30 frames, the closed loop's last frame is as close to its input as its second."""
    frames = drifting(speed=0.01)
    codec, _, outs, _ = run("fqi:-10", frames)
    step = codec.step
    open_ref = np.rint(frames[0] / step) * step
    for a, b in zip(frames, frames[1:]):
        open_ref = open_ref + np.rint((b - a) / step) * step  # open loop: the decoder's error drifts
    assert np.abs(open_ref - frames[-1]).max() > 1.5 * step
    assert np.abs(outs[-1] - frames[-1]).max() <= (1 + 1 / 128) * step * 1.0001


def test_unchanged_units_are_skipped_and_an_unchanged_frame_costs_a_few_bytes():
    frames = drifting(3, speed=0.0)
    still = [frames[0], frames[0].copy(), frames[0].copy()]
    one = frames[0].copy()
    one[0, 5, 10:12] += 1.0  # one channel, two rows: one unit of that channel's plane changes
    codec, payloads, outs, _ = run("fqi:-14", still + [one])
    units, per_unit, band, _ = fqi.units_of(one.shape)
    assert (units, per_unit, band) == (16 * 4, 6 * 24, 6)
    # frame 1 still corrects the keyframe where its error exceeded half a step; frame 2 sends nothing
    assert len(payloads[1]) < len(payloads[0]) / 4 and len(payloads[2]) < 100, [len(p) for p in payloads]
    body = memoryview(payloads[-1])[HEADER.size:]
    head = fqi._PRED.unpack_from(body)
    import zstandard

    bitmap = np.unpackbits(np.frombuffer(zstandard.ZstdDecompressor().decompress(
        body[fqi._PRED.size:fqi._PRED.size + head[6]]), np.uint8))[:units]
    assert np.flatnonzero(bitmap).tolist() == [5 * 4 + 1]  # channel 5, band of rows 6..11
    assert np.abs(outs[3] - one).max() <= codec.step * (1 + 1 / 128) * 1.0001
    assert np.abs(outs[1] - frames[0]).max() <= codec.step * (1 + 1 / 128)


def test_outputs_are_not_changed_by_later_frames():
    frames = drifting(4)
    _, _, outs, _ = run("fqi:-14", frames)
    again = run("fqi:-14", frames[:2])[2]
    assert np.array_equal(outs[1], again[1])


def test_what_cannot_be_predicted_is_coded_alone_and_prediction_resumes():
    frames = drifting(7)
    frames[2] = frames[2].copy()
    frames[2][0, 0, 0, 0] = np.nan  # coded exactly (fq's raw mode), as a keyframe body
    frames[4] = frames[4] * 2000  # a scene cut: residuals beyond fq's alphabet
    codec, payloads, outs, _ = run("fqi:-14", frames)
    # 2: NaN (exact); 3: after an exact frame; 4: the cut; 5: back from the cut; 6: predicted again
    assert [kind(p) for p in payloads] == [fqi.KEY, fqi.PRED] + [fqi.KEY] * 4 + [fqi.PRED]
    assert np.array_equal(outs[2], frames[2], equal_nan=True)
    ints = [np.arange(60, dtype=np.int64).reshape(3, 4, 5) + k for k in range(3)]
    for p, y, x in zip(*run("fqi:-14", ints)[1:3], ints):
        assert kind(p) == fqi.KEY and y.dtype == np.int64 and np.array_equal(y, x)
    rng = np.random.default_rng(1)
    half = rng.random((2, 8, 16))
    halves = [(half + k / 100).astype(np.float16) for k in range(3)]
    _, payloads, outs, _ = run("fqi:-14", halves)
    assert [kind(p) for p in payloads] == [fqi.KEY, fqi.PRED, fqi.PRED]
    for y, x in zip(outs, halves):
        assert y.dtype == np.float16 and np.abs(y.astype(np.float32) - x).max() <= 1.1 * codec.step


def test_gop_and_restart_make_keyframes():
    frames = drifting(7)
    _, payloads, _, _ = run("fqi:-14:3", frames)
    assert [kind(p) for p in payloads] == [fqi.KEY, fqi.PRED, fqi.PRED] * 2 + [fqi.KEY]
    enc = get_codec("fqi").sequence_encoder()
    enc.encode_frame(["a"], [frames[0]])
    enc.encode_frame(["a"], [frames[1]])
    enc.restart()
    assert kind(enc.encode_frame(["a"], [frames[2]])[0]) == fqi.KEY and enc.last_keyframe


def test_a_predicted_frame_without_its_reference_is_refused():
    frames = drifting(4)
    codec, payloads, _, _ = run("fqi:-14", frames)
    with pytest.raises(MissingReference, match="needs frame 0"):
        codec.sequence_decoder().decode("a", payloads[1], np.float32, frames[1].shape)
    dec = codec.sequence_decoder()
    dec.decode("a", payloads[0], np.float32, frames[0].shape)
    with pytest.raises(MissingReference):
        dec.decode("a", payloads[2], np.float32, frames[2].shape)
    y = dec.decode("a", payloads[1], np.float32, frames[1].shape)  # in order again: nothing was spoiled
    assert np.abs(y - frames[1]).max() <= codec.step * 1.01
    with pytest.raises(MissingReference):
        codec.decode(payloads[1], np.float32, frames[1].shape)  # the per-frame path: keyframes only
    y0 = codec.decode(payloads[0], np.float32, frames[0].shape)
    assert np.abs(y0 - frames[0]).max() <= codec.step * 1.0001


# -- hostile payloads --------------------------------------------------------------------------------------


def _pred_parts(p: bytes):
    body = p[HEADER.size:]
    return p[:HEADER.size], list(fqi._PRED.unpack_from(body)), body[fqi._PRED.size:]


def _with(p: bytes, **changes) -> bytes:
    names = ("kind", "step", "vmin", "levels", "mode", "units", "bitmap", "sig", "offs")
    head, fields, rest = _pred_parts(p)
    for k, v in changes.items():
        fields[names.index(k)] = v
    return head + fqi._PRED.pack(*fields) + rest


def hostile_cases(p1: bytes):
    import zstandard

    head, fields, rest = _pred_parts(p1)
    bitmap_len, sig_len = fields[6], fields[7]
    bomb = zstandard.ZstdCompressor().compress(b"\xff" * (64 << 20))
    rng = np.random.default_rng(0)
    return {
        "truncated header": p1[:HEADER.size + 10],
        "truncated body": p1[:-3],
        "extra bytes": p1 + b"\0" * 5,
        "unknown body kind": head + b"Q" + p1[HEADER.size + 1:],
        "units lie": _with(p1, units=fields[5] + 1),
        "levels 3": _with(p1, levels=3),
        "levels 65535": _with(p1, levels=65535),
        "nan step": _with(p1, step=float("nan")),
        "negative step": _with(p1, step=-1.0),
        "huge step": _with(p1, step=3e38),
        "huge vmin": _with(p1, vmin=-(2 ** 31)),
        "bitmap length lies": _with(p1, bitmap=10 ** 9),
        "map length lies": _with(p1, sig=bitmap_len + 1),
        "unknown entropy mode": _with(p1, mode=b"Q"),
        "bomb as the map": head + fqi._PRED.pack(*fields[:7], len(bomb), fields[8]) + rest[:bitmap_len] + bomb
        + rest[bitmap_len + sig_len:],
        "garbage after the maps": p1[:len(p1) - 40] + rng.integers(0, 256, 40, dtype=np.uint8).tobytes(),
        "predicted body in a keyframe": pack_header(True, 1, 1) + p1[HEADER.size:],
        "random": pack_header(False, 1, 0) + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(),
    }


def test_hostile_predicted_frames_are_codec_errors_within_a_memory_bound():
    frames = drifting(2, shape=(1, 16, 32, 32))
    codec, payloads, _, _ = run("fqi:-14", frames)
    assert kind(payloads[1]) == fqi.PRED
    shape = frames[0].shape
    for name, bad in hostile_cases(payloads[1]).items():
        dec = codec.sequence_decoder()
        dec.decode("a", payloads[0], np.float32, shape)
        with pytest.raises(CodecError):
            dec.decode("a", bad, np.float32, shape)
            pytest.fail(name)
        with pytest.raises(MissingReference):  # the failure dropped the reference
            dec.decode("a", payloads[1], np.float32, shape)
    peak = flipped_peak(codec, payloads[:1], payloads[1], shape, rounds=200, seed=3)
    assert peak <= 10 * frames[0].nbytes + (1 << 20)


def flipped_peak(codec, before: list, target: bytes, shape: tuple, rounds: int, seed: int) -> int:
    """The peak memory (tracemalloc) of decoding `target` with 1..3 random bytes flipped, after the payloads
    `before`, `rounds` times: each is a CodecError or a finite float32 tensor of the shape."""
    rng = np.random.default_rng(seed)
    tracemalloc.start()
    try:
        for _ in range(rounds):
            dec = codec.sequence_decoder()
            for p in before:
                dec.decode("a", p, np.float32, shape)
            b = bytearray(target)
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(HEADER.size, len(b)))] ^= int(rng.integers(1, 256))
            try:
                y = dec.decode("a", bytes(b), np.float32, shape)
            except CodecError:
                continue
            assert y.shape == shape and y.dtype == np.float32 and np.isfinite(y).all()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_keyframe_body_is_an_fq_payload_checked_like_fq():
    frames = drifting(1)
    p = get_codec("fqi:-14").encode(frames[0])
    assert kind(p) == fqi.KEY and p[HEADER.size + 1:HEADER.size + 3] == b"FQ"
    other = b"FQZ" if p[HEADER.size + 3:HEADER.size + 4] != b"Z" else b"FQP"
    for bad in (p[:-5], p + b"\0", p[:HEADER.size + 1] + other + p[HEADER.size + 4:]):
        with pytest.raises(CodecError):
            get_codec("fqi:-14").decode(bad, np.float32, frames[0].shape)
    with pytest.raises(CodecError):
        get_codec("fqi:-14").decode(p, np.float32, (1, 16, 24, 25))
    assert fq.NAME == "fq"


# -- through the real network process ------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_a_stream_through_the_network_process_decodes_in_order_near_the_lossless_detections():
    """fqi frames (a keyframe, a repeat, another photo) through real gRPC to the network process: every frame
    answered, the repeat sent as a small predicted frame, detections as the lossless stream's; a stream
    starting with a predicted frame is refused FAILED_PRECONDITION."""
    import grpc

    from grpc_helpers import Stubs, real_frame, setup_msg, stream_status
    from splitinfer.common.transport import wire
    from splitinfer.experiments.server_process import ServerProcess

    spec, rank = "fqi:-14", 95
    frames = [real_frame(rank, image) for image in ("dog.jpg", "dog.jpg", "horses.jpg")]
    enc = get_codec(spec).sequence_encoder()
    msgs = []
    for k, f in enumerate(frames):
        names = list(f.arrays)
        tensors = wire.encode_tensors(names, [f.arrays[n] for n in names], get_codec(spec), enc)
        msgs.append(wire.frame_messages(k + 1, tensors, meta_json=f.meta_json))
    srv = ServerProcess(threads=1, device="cpu", env={"OMP_NUM_THREADS": "1"})
    try:
        stubs = Stubs(srv.address)
        code, details, replies = stream_status(stubs, [setup_msg(rank, codec=spec)] + [m for f in msgs for m in f])
        assert code == grpc.StatusCode.OK, details
        code, details, plain = stream_status(stubs, [setup_msg(rank, codec="none")] + [
            m for k, f in enumerate(frames) for m in f.messages(k + 1, get_codec("none"))])
        assert code == grpc.StatusCode.OK, details
        code, details, _ = stream_status(stubs, [setup_msg(rank, codec=spec)] + msgs[1])
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "restart at a keyframe" in details, details
        stubs.close()
    finally:
        assert srv.stop() == 0, "\n".join(srv.stderr_tail)
    got, want = [r.result for r in replies[1:]], [r.result for r in plain[1:]]
    assert len(got) == len(want) == 3
    assert got[1].encoded_bytes < got[0].encoded_bytes / 4, [g.encoded_bytes for g in got]
    for a, b in zip(got, want):
        strong = lambda r: sorted(d.label for d in r.detections if d.score >= 0.5)  # noqa: E731
        assert strong(a) == strong(b) and strong(b)
        top = lambda r: sorted(r.detections, key=lambda d: -d.score)[:3]  # noqa: E731
        for da, db in zip(top(a), top(b)):
            assert da.label == db.label and _iou(da, db) > 0.75 and abs(da.score - db.score) < 0.1


def _iou(a, b) -> float:
    w = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    h = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    area = lambda d: (d.x2 - d.x1) * (d.y2 - d.y1)  # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


@pytest.mark.parametrize("shape", [(2, 8, 10, 12), (1, 300, 80), (4000,), (1, 3, 1, 200), (1, 4, 7, 7)])
def test_every_layout_stays_within_the_bound_through_predicted_frames(shape):
    """Batches, 3-D and 1-D tensors (one unit, per-channel or per-tensor offsets), planes of one row or of
    odd sizes: every frame within the bound, predicted after the first."""
    rng = np.random.default_rng(len(shape))
    base = rng.standard_normal(shape).astype(np.float32)
    frames = [base + 0.01 * k * rng.standard_normal(shape).astype(np.float32) for k in range(5)]
    codec, payloads, outs, _ = run("fqi:-12", frames)
    assert [kind(p) for p in payloads] == [fqi.KEY] + [fqi.PRED] * 4
    for f, y in zip(frames, outs):
        assert y.shape == f.shape and np.abs(y - f).max() <= (1 + 1 / 128) * codec.step * 1.0001


# -- option x: temporal contexts (fqi_context) --------------------------------------------------------------


def _mode(p: bytes) -> bytes:
    return _pred_parts(p)[1][4] if kind(p) == fqi.PRED else b""


def test_temporal_contexts_code_the_same_residuals_in_fewer_bytes():
    """Option x codes predicted frames under the previous frame's activity (mode T) where that is smaller: the
    decoded frames are bit for bit those of the same stream without it, and the predicted frames smaller."""
    from splitinfer.common.codecs import fqi_context

    frames = drifting(12, shape=(1, 16, 32, 32), speed=0.05)
    codec, with_t, outs, _ = run("fqi:-22:x", frames)
    plain = fqi.FqiCodec(-22, "x")  # its own instance (get_codec's are shared)
    plain.temporal = False
    enc, dec = plain.sequence_encoder(), plain.sequence_decoder()
    without = [enc.encode_frame(["a"], [f])[0] for f in frames]
    plain_outs = [dec.decode("a", p, np.float32, frames[0].shape) for p in without]
    modes = [_mode(p) for p in with_t]
    assert modes[0] == b"" and modes[1:].count(fqi_context.MODE) >= 9, modes  # after the keyframe: sign classes
    assert all(_mode(p) != fqi_context.MODE for p in without)
    for a, b in zip(outs, plain_outs):
        assert np.array_equal(a, b)
    assert sum(map(len, with_t[1:])) < 0.95 * sum(map(len, without[1:]))


def test_held_tables_are_reused_where_smaller_and_decode_the_same():
    """After a T frame that sent its tables, later T frames of a steady stream code under the held ones (no
    tables sent) and decode exactly as the encoder's reference says (within the step bound)."""
    from splitinfer.common.codecs import fqi_context

    frames = drifting(16, shape=(1, 16, 32, 32), speed=0.05)
    codec, payloads, outs, _ = run("fqi:-22:xh", frames)
    sent = []
    for p in payloads:
        if _mode(p) == fqi_context.MODE:
            head, fields, rest = _pred_parts(p)
            (packed_len,) = fqi_context._HEAD.unpack_from(rest, fields[6] + fields[7] + fields[8])
            sent.append(packed_len > 0)
    assert sent and sent[0] and not all(sent), sent
    for f, y in zip(frames, outs):
        assert float(np.abs(f - y).max()) <= codec.step * (1.5 + 1 / 128) + 1e-6


def test_temporal_context_state_restarts_at_keyframes():
    """The activity is dropped at every keyframe on both sides: a GOP of 4 decodes exactly, each frame within the
    step bound, and a decoder that joins at the second keyframe decodes the rest as the first one does."""
    frames = drifting(12, shape=(1, 16, 32, 32), speed=0.05)
    codec, payloads, outs, _ = run("fqi:-22:x:4", frames)
    step = codec.step
    assert [kind(p) == fqi.KEY for p in payloads][::4] == [True, True, True]
    for f, y in zip(frames, outs):
        assert float(np.abs(f - y).max()) <= step * (1 + 1 / 128) + 1e-6
    late = codec.sequence_decoder()
    for p, y in zip(payloads[4:], outs[4:]):
        assert np.array_equal(late.decode("a", p, np.float32, frames[0].shape), y)


def _t_payloads():
    """A stream up to its first frame in mode T (that frame last)."""
    frames = drifting(12, shape=(1, 16, 32, 32), speed=0.05)
    codec, payloads, _, _ = run("fqi:-22:x", frames)
    first = next(i for i, p in enumerate(payloads) if _mode(p) == b"T")
    return codec, payloads[:first + 1], frames[0].shape


def test_hostile_temporal_context_bodies_are_codec_errors_within_a_memory_bound():
    import zstandard

    from splitinfer.common.codecs import fqi_context

    codec, payloads, shape = _t_payloads()
    head, fields, rest = _pred_parts(payloads[-1])
    tail = fields[6] + fields[7] + fields[8]  # the T body starts after bitmap, map and offsets
    t_body = rest[tail:]
    (packed_len,) = fqi_context._HEAD.unpack_from(t_body)
    tables = np.frombuffer(zstandard.ZstdDecompressor().decompress(t_body[4:4 + packed_len]), "<u4").copy()
    tables[np.flatnonzero(tables)[0]] += 1
    lying = zstandard.ZstdCompressor().compress(tables.tobytes())
    short = zstandard.ZstdCompressor().compress(tables[:-1].tobytes())
    cases = {
        "tables count one residual too many": rest[:tail] + fqi_context._HEAD.pack(len(lying)) + lying
        + t_body[4 + packed_len:],
        "tables one entry short": rest[:tail] + fqi_context._HEAD.pack(len(short)) + short + t_body[4 + packed_len:],
        "table length lies": rest[:tail] + fqi_context._HEAD.pack(10 ** 9) + t_body[4:],
        "held tables claimed, none held": rest[:tail] + fqi_context._HEAD.pack(0) + t_body[4 + packed_len:],
        "words cut": rest[:-4],
        "words not whole": rest[:-1],
        "no body": rest[:tail],
        "a significance map beside": None,
    }
    for name, body in cases.items():
        dec = codec.sequence_decoder()
        for p in payloads[:-1]:
            dec.decode("a", p, np.float32, shape)
        bad = _with(payloads[-1], sig=4) if body is None else head + fqi._PRED.pack(*fields) + body
        with pytest.raises(CodecError):
            dec.decode("a", bad, np.float32, shape)
            pytest.fail(name)
    plain = get_codec("fqi:-22")  # a decoder without option x does not take mode T
    dec = plain.sequence_decoder()
    for p in payloads[:-1]:
        dec.decode("a", p, np.float32, shape)
    with pytest.raises(CodecError, match="temporal-context"):
        dec.decode("a", payloads[-1], np.float32, shape)
    peak = flipped_peak(codec, payloads[:-1], payloads[-1], shape, rounds=100, seed=5)
    assert peak <= 10 * 4 * int(np.prod(shape)) + (1 << 20)


@pytest.mark.timeout(300)
def test_temporal_context_frames_through_the_network_process_detect_as_the_same_stream_without_them():
    """fqi:-22:xh on consecutive frames of the bundled clip through real gRPC: predicted frames in mode T
    (smaller), and the network process answers every frame with exactly the detections of the same stream
    coded without temporal contexts (the same reconstruction, decoded by the same codec)."""
    from itertools import islice
    from pathlib import Path

    import grpc

    from grpc_helpers import Stubs, real_frame, setup_msg, stream_status
    from splitinfer.common.core.images import iter_frames
    from splitinfer.common.transport import wire
    from splitinfer.experiments.server_process import ServerProcess

    spec, rank = "fqi:-22:xh", 46
    clip = Path(__file__).resolve().parents[2] / "docs" / "study" / "vtest_clip.avi"
    frames = [real_frame(rank, img=img) for _, img in islice(iter_frames(clip), 6)]
    plain = fqi.FqiCodec(-22, "xh")
    plain.temporal = False

    def messages(codec):
        enc, out, sizes = codec.sequence_encoder(), [], []
        for k, f in enumerate(frames):
            names = list(f.arrays)
            tensors = wire.encode_tensors(names, [f.arrays[n] for n in names], get_codec(spec), enc)
            out += wire.frame_messages(k + 1, tensors, meta_json=f.meta_json)
            sizes.append(sum(len(t.payload) for t in tensors))
        return out, sizes

    with_t, t_sizes = messages(get_codec(spec))
    without, plain_sizes = messages(plain)
    assert sum(t_sizes[2:]) < sum(plain_sizes[2:]), (t_sizes, plain_sizes)
    srv = ServerProcess(threads=1, device="cpu", env={"OMP_NUM_THREADS": "1"})
    try:
        stubs = Stubs(srv.address)
        code, details, got = stream_status(stubs, [setup_msg(rank, codec=spec)] + with_t)
        assert code == grpc.StatusCode.OK, details
        code, details, want = stream_status(stubs, [setup_msg(rank, codec=spec)] + without)
        assert code == grpc.StatusCode.OK, details
        stubs.close()
    finally:
        assert srv.stop() == 0, "\n".join(srv.stderr_tail)
    got, want = [r.result for r in got[1:]], [r.result for r in want[1:]]
    assert len(got) == len(want) == 6
    def box(d):
        return d.label, round(d.score, 5), round(d.x1, 2), round(d.y1, 2), round(d.x2, 2), round(d.y2, 2)

    for a, b in zip(got, want):
        assert [box(d) for d in a.detections] == [box(d) for d in b.detections] and b.detections
