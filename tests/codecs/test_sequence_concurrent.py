"""A frame's tensors coded at once (sequence.py, codecs with `concurrent_tensors`: dzstd, fqi, video): the
payloads are byte for byte those of coding the tensors one after the other, over keyframes, predicted frames
and a scene cut, and a decoder rebuilds them."""

import os

import numpy as np
import pytest

from splitinfer.common.codecs import get_codec

SHAPES = [(1, 32, 24, 24), (1, 64, 12, 12), (1, 128, 6, 6)]
NAMES = ["p3", "p4", "p5"]


def frames(n=5):
    """Three tensors per frame drifting slowly, with a scene cut at frame 3."""
    out = []
    for k in range(n):
        scene = 0 if k < 3 else 1
        row = []
        for i, shape in enumerate(SHAPES):
            base = np.random.default_rng(10 * scene + i).standard_normal(shape).astype(np.float32)
            drift = np.random.default_rng(100 + k * 7 + i).standard_normal(shape).astype(np.float32)
            row.append(np.maximum(4 * base + 0.05 * drift, 0).astype(np.float32))
        out.append(row)
    return out


def coded(spec: str, concurrent: bool, seq):
    codec = get_codec(spec)
    codec.concurrent_tensors = concurrent
    enc = codec.sequence_encoder()
    out = [(enc.encode_frame(NAMES, f), enc.last_keyframe) for f in seq]
    assert (enc._executor is not None) == (concurrent and (os.cpu_count() or 1) > 1)
    enc.close()
    assert enc._executor is None
    return out


@pytest.mark.parametrize("spec", ["dzstd", "fqi:-14:x", "fqi:-22:h", "video:10"])
def test_tensors_coded_at_once_give_the_bytes_coded_one_by_one(spec):
    assert get_codec(spec).concurrent_tensors
    seq = frames()
    together, apart = coded(spec, True, seq), coded(spec, False, seq)
    assert together == apart
    assert [key for _, key in together] == [True, False, False, True, False]
    dec = get_codec(spec).sequence_decoder()
    for (payloads, _), f in zip(together, seq):
        for name, p, x in zip(NAMES, payloads, f):
            y = dec.decode(name, p, x.dtype, x.shape)
            assert y.shape == x.shape and float(np.sqrt(np.mean((y - x) ** 2))) < 0.05 * float(x.std())
