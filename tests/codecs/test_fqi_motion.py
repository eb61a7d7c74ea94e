"""fqi option m (codecs/fqi_motion.py): the reference shifted with a panning camera before a predicted frame is
coded. A scene that slides by a known fraction of a sample a frame (an analytic field, sampled where the
camera looks, so the motion is exact and independent of the code under test) costs fewer bytes with m, within
the same error bound, with the shift the encoder chose near the true one; a still scene keeps shift 0;
hostile shifts are CodecErrors; a pan through the real network process detects as without m."""

from __future__ import annotations

import re

import numpy as np
import pytest

from splitinfer.common.codecs import CodecError, fqi, fqi_motion, get_codec
from splitinfer.common.codecs.sequence import HEADER

VY, VX = 0.375, -0.25  # samples a frame the scene slides by (3 and -2 eighths)


def panning(n=12, shape=(1, 16, 40, 48), vy=VY, vx=VX, seed=0):
    """Frame k: a smooth random field (sums of plane waves per channel) at (i - k*vy, j - k*vx), after a
    leaky ReLU: every value changes from frame to frame, as with a camera pan."""
    rng = np.random.default_rng(seed)
    _, c, h, w = shape
    waves = 4
    ky, kx = rng.uniform(-0.5, 0.5, (2, c, waves, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, (c, waves, 1, 1))
    amp = rng.uniform(0.3, 1.0, (c, waves, 1, 1))
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    frames = []
    for k in range(n):
        y, x = ii - k * vy, jj - k * vx
        f = (amp * np.sin(ky * y + kx * x + phase)).sum(axis=1)[None]
        frames.append(np.where(f > 0, f, 0.1 * f).astype(np.float32))
    return frames


def run(spec, frames):
    codec = get_codec(spec)
    enc, dec = codec.sequence_encoder(), codec.sequence_decoder()
    payloads, outs = [], []
    for f in frames:
        (p,) = enc.encode_frame(["a"], [f])
        payloads.append(p)
        outs.append(dec.decode("a", p, f.dtype, f.shape))
    return codec, payloads, outs


def shift_of(p: bytes) -> tuple[int, int]:
    return fqi_motion.unpack(memoryview(p), HEADER.size + fqi._PRED.size)


@pytest.mark.parametrize("spec, cid, canonical", [
    ("fqi:-14:m", 1100014, "fqi:-14:m"), ("fqi:-26:mhx", 1100326, "fqi:-26:xhm"),
    ("fqi:-14:xm:25", 1110114, "fqi:-14:xm:25"), (1199964, 1199964, "fqi:-64:xhm:249"),
])
def test_specs_and_ids(spec, cid, canonical):
    c = get_codec(spec)
    assert (c.codec_id, c.spec, c.motion) == (cid, canonical, True)
    assert get_codec(c.spec) == c and get_codec(c.codec_id) == c
    assert get_codec(canonical.replace("m", "")).motion is False


@pytest.mark.parametrize("opts, bound", [("h", 1.5 + 1 / 128), ("xh", 1.5 + 1 / 128), ("", 1 + 1 / 128)])
def test_a_pan_costs_fewer_bytes_within_the_same_bound(opts, bound):
    frames = panning()
    _, plain, _ = run(f"fqi:-14:{opts}" if opts else "fqi:-14", frames)
    codec, moved, outs = run(f"fqi:-14:{opts}m", frames)
    assert [p[HEADER.size:HEADER.size + 1] for p in moved] == [fqi.KEY] + [fqi.PRED] * (len(frames) - 1)
    for f, y in zip(frames, outs):
        assert float(np.abs(y - f).max()) <= bound * codec.step
    shifts = [shift_of(p) for p in moved[1:]]
    true = (round(VY * fqi_motion.EIGHTHS), round(VX * fqi_motion.EIGHTHS))
    assert all(abs(dy - true[0]) <= 1 and abs(dx - true[1]) <= 1 for dy, dx in shifts), shifts
    size = lambda ps: sum(len(p) for p in ps[1:])  # noqa: E731  (predicted frames)
    assert size(moved) < 0.75 * size(plain), (size(moved), size(plain))


def test_a_still_scene_keeps_shift_zero_and_its_bytes():
    """The same frames with small changes in place (no motion): every shift 0, each predicted frame 2 bytes
    longer than without m (the shift), nothing else changed."""
    rng = np.random.default_rng(1)
    base = panning(1)[0]
    frames = [base + 0.01 * k * rng.standard_normal(base.shape).astype(np.float32) for k in range(6)]
    _, plain, _ = run("fqi:-14:h", frames)
    _, moved, outs = run("fqi:-14:hm", frames)
    assert [shift_of(p) for p in moved[1:]] == [(0, 0)] * 5
    assert [len(m) - len(p) for m, p in zip(moved[1:], plain[1:])] == [fqi_motion.SHIFT.size] * 5


def _catmull_rom(p: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """p (1-D) sampled at real positions `pos`, Catmull-Rom, edges repeated: the textbook formula."""
    i = np.floor(pos).astype(int)
    t = pos - i
    at = lambda k: p[np.clip(i + k, 0, p.size - 1)]  # noqa: E731
    return 0.5 * (2 * at(0) + (-at(-1) + at(1)) * t + (2 * at(-1) - 5 * at(0) + 4 * at(1) - at(2)) * t ** 2
                  + (-at(-1) + 3 * at(0) - 3 * at(1) + at(2)) * t ** 3)


def test_shifted_reference_is_cubic_with_edges_repeated():
    """Against the textbook Catmull-Rom spline, rows then columns: a plane shifted 3/8 down and 10/8 left."""
    ref = (np.arange(2 * 7 * 9, dtype=np.float32).reshape(1, 2, 7, 9) % 11) ** 1.5
    got = fqi_motion.shifted(ref.reshape(14, 9), ref.shape, 3, -10).reshape(ref.shape)
    p = ref[0, 1].astype(np.float64)
    rows = np.stack([_catmull_rom(p[:, j], np.arange(7) - 3 / 8) for j in range(9)], axis=1)
    want = np.stack([_catmull_rom(rows[i], np.arange(9) + 10 / 8) for i in range(7)])
    assert np.allclose(got[0, 1], want, rtol=1e-5, atol=1e-4)
    assert np.array_equal(fqi_motion.shifted(ref, ref.shape, 16, 0)[0, 0, 2:], ref[0, 0, :-2])  # whole samples


def _set_shift(p: bytes, dy: int, dx: int) -> bytes:
    at = HEADER.size + fqi._PRED.size
    return p[:at] + fqi_motion.SHIFT.pack(dy, dx) + p[at + fqi_motion.SHIFT.size:]


def test_hostile_shifts_are_codec_errors():
    frames = panning(2)
    codec, payloads, _ = run("fqi:-14:hm", frames)
    flat = [np.ascontiguousarray(f.reshape(-1)) for f in frames]  # 1-D: never shifted
    _, flat_payloads, _ = run("fqi:-14:hm", flat)
    cases = {
        "beyond the bound": (payloads, _set_shift(payloads[1], 17, 0), frames[0].shape, "beyond"),
        "negative beyond": (payloads, _set_shift(payloads[1], 0, -128), frames[0].shape, "beyond"),
        "cut before the shift": (payloads, payloads[1][:HEADER.size + fqi._PRED.size + 1], frames[0].shape,
                                 "before its motion shift"),
        "a shift for a 1-D tensor": (flat_payloads, _set_shift(flat_payloads[1], 1, 0), flat[0].shape,
                                     "never shifted"),
    }
    for name, (good, bad, shape, needle) in cases.items():
        dec = codec.sequence_decoder()
        dec.decode("a", good[0], np.float32, shape)
        with pytest.raises(CodecError, match=needle):
            dec.decode("a", bad, np.float32, shape)
            pytest.fail(name)


@pytest.mark.timeout(300)
def test_a_pan_through_the_network_process_detects_as_without_motion(capsys):
    """The demo's pan over a photo (a real camera-like slide) at split 60 through the real network process:
    with m every frame's detections match the whole model's as without it, for fewer bytes."""
    from splitinfer.common.cli import main

    code = main(["demo", "--images", "1", "--splits", "120", "--codecs", "none", "--sequence-codecs",
                 "fqi:-14:h,fqi:-14:hm", "--pan-frames", "8"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = {line.split()[2]: line.split() for line in out.splitlines() if line.strip().startswith("60 ")}
    assert set(rows) == {"fqi:-14:h", "fqi:-14:hm"}, out
    encoded = {spec: int(r[r.index("key)") + 2]) for spec, r in rows.items()}
    assert encoded["fqi:-14:hm"] < 0.9 * encoded["fqi:-14:h"], encoded
    for r in rows.values():  # every anchor box found again, by both
        assert re.search(r"\((\d+)/\1 boxes match\)", " ".join(r)) or r[-1] == "yes", out


def test_flipped_bytes_of_a_shifted_frame_are_refused_or_finite_within_a_memory_bound():
    """Random 1-3 byte flips of a predicted frame with a shift (the shift bytes among them half the time):
    each is a CodecError or a finite float32 tensor, and decoding never holds more than a few frames."""
    import tracemalloc

    frames = panning(2, shape=(1, 8, 32, 32))
    codec, payloads, _ = run("fqi:-14:xhm", frames)
    assert shift_of(payloads[1]) != (0, 0)
    at = HEADER.size + fqi._PRED.size
    rng = np.random.default_rng(5)
    tracemalloc.start()
    try:
        for k in range(200):
            dec = codec.sequence_decoder()
            dec.decode("a", payloads[0], np.float32, frames[0].shape)
            b = bytearray(payloads[1])
            for _ in range(int(rng.integers(1, 4))):
                pos = at + int(rng.integers(0, 2)) if k % 2 else int(rng.integers(HEADER.size, len(b)))
                b[pos] ^= int(rng.integers(1, 256))
            try:
                y = dec.decode("a", bytes(b), np.float32, frames[0].shape)
            except CodecError:
                continue
            assert y.shape == frames[0].shape and y.dtype == np.float32 and np.isfinite(y).all()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 10 * frames[0].nbytes + (1 << 20)
