"""Scene cuts in sequential codecs (sequence.py's `encode_choosing`): where the scene changes, a frame the
previous one cannot predict is coded as a keyframe by itself: flagged a keyframe in its sequence header (a
fresh decoder starts there), no larger than the keyframe it replaces would have been, and prediction resumes
on the next frame. Without this the cut cost 1.4-1.5x a keyframe as a predicted frame (fqi on a camera jump)
and the stream had no random access point after it."""

import numpy as np
import pytest

from splitinfer.common.codecs import get_codec
from splitinfer.common.codecs.sequence import read_header

SHAPE = (1, 16, 24, 32)


def scene(seed: int, n: int, shape=SHAPE):
    """A static camera's features: a smooth field per channel, drifting a little from frame to frame."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(shape).astype(np.float32)
    for axis in (2, 3):
        base = (base + np.roll(base, 1, axis) + np.roll(base, -1, axis)) / 3
    frames, walk = [], np.zeros(shape, np.float32)
    for _ in range(n):
        walk += 0.01 * rng.standard_normal(shape).astype(np.float32)
        frames.append(np.maximum(4 * (base + walk), 0).astype(np.float32))
    return frames


@pytest.mark.parametrize("spec, lossless", [("dzstd", True), ("fqi:-14", False), ("video:10", False)])
def test_the_frame_at_a_cut_is_a_keyframe_no_larger_than_one_and_prediction_resumes(spec, lossless):
    first, second = scene(1, 4), scene(2, 3)
    frames = first + second  # the cut is at frame 4
    codec = get_codec(spec)
    enc, dec = codec.sequence_encoder(), codec.sequence_decoder()
    payloads, keys, outs = [], [], []
    for f in frames:
        (p,) = enc.encode_frame(["t"], [f])
        payloads.append(p)
        keys.append(read_header(p)[0])
        assert enc.last_keyframe == keys[-1]
        outs.append(dec.decode("t", p, f.dtype, f.shape))
    assert keys == [True, False, False, False, True, False, False], keys
    alone = codec.encode(frames[4])  # the same frame coded as a lone keyframe
    assert len(payloads[4]) <= len(alone) * 1.02, (len(payloads[4]), len(alone))
    # predicted again, from the new scene (lossless XOR of noisy floats saves less: their low bits change)
    assert max(len(p) for p in payloads[5:]) < (0.97 if lossless else 0.8) * len(payloads[4])
    fresh = codec.sequence_decoder()  # a random access point: a new session starts at the cut
    for p, f, y in zip(payloads[4:], frames[4:], outs[4:]):
        z = fresh.decode("t", p, f.dtype, f.shape)
        assert np.array_equal(z, y)
        if lossless:
            assert np.array_equal(z, f)
    for f, y in zip(frames, outs):
        assert np.sqrt(np.mean((y - f) ** 2)) < 0.05 * float(f.std()) or lossless


def test_a_keyframe_every_frame_is_not_what_a_static_scene_gets():
    frames = scene(3, 8)
    for spec in ("dzstd", "fqi:-14", "video:10"):
        enc = get_codec(spec).sequence_encoder()
        keys = [read_header(enc.encode_frame(["t"], [f])[0])[0] for f in frames]
        assert keys == [True] + [False] * 7, (spec, keys)
