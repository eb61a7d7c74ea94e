"""blosc2 and codec chains (`float16+zstd:3`): ids and specs, bit-exact lossless paths, chains equal to
their head alone, and frames claiming more than the announced size refused before allocation."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from splitinfer.common.codecs import CodecError, codecs_help, get_codec
from splitinfer.common.core.errors import UserError

from codec_samples import DTYPES, relu_activation, sample

def relu(shape=(1, 32, 26, 26), seed: int = 0) -> np.ndarray:
    return relu_activation(shape, seed)


# -- specs and ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, cid, canonical", [
    ("blosc2", 5311, "blosc2:zstd:1:shuffle"), (5311, 5311, "blosc2:zstd:1:shuffle"),
    ("blosc2:lz4", 5111, "blosc2:lz4:1:shuffle"), ("blosc2:lz4:5:bitshuffle", 5125, "blosc2:lz4:5:bitshuffle"),
    ("blosc2:zstd:9:noshuffle", 5309, "blosc2:zstd:9:noshuffle"), ("blosc2:blosclz:0", 5010, "blosc2:blosclz:0:shuffle"),
    ("blosc2:lz4hc:3:bitshuffle", 5223, "blosc2:lz4hc:3:bitshuffle"),
])
def test_blosc2_specs_and_ids(spec, cid, canonical):
    c = get_codec(spec)
    assert (c.name, c.codec_id, c.spec, c.lossless) == ("blosc2", cid, canonical, True)
    assert get_codec(c.spec) == c and get_codec(c.codec_id) == c


@pytest.mark.parametrize("spec, canonical, lossless", [
    ("float16+zstd", "float16+zstd:3", False), ("FLOAT16 + zstd:3", "float16+zstd:3", False),
    ("float16+blosc2", "float16+blosc2:zstd:1:shuffle", False), ("fq:6+zstd:5", "fq:6+zstd:5", False),
    ("none+blosc2:lz4:5:bitshuffle", "none+blosc2:lz4:5:bitshuffle", True),
    ("none+blosc2+zstd:1", "none+blosc2:zstd:1:shuffle+zstd:1", True),
])
def test_chain_specs(spec, canonical, lossless):
    c = get_codec(spec)
    assert (c.spec, c.codec_id, c.lossless) == (canonical, 9, lossless)
    assert get_codec(c.spec) == c
    assert c.params == {"chain": canonical}  # what the wire's tensor header repeats


@pytest.mark.parametrize("spec", ["zstd+float16", "float16+fq:6", "nnc+zstd", "float16+nnc", "blosc2+zstd",
                                  "float16+", "+zstd", "float16++zstd", "a+b", "float16+zstd+zstd+zstd+zstd",
                                  9, "9", "blosc2:gzip", "blosc2:zstd:10", "blosc2:zstd:1:rot", "blosc2:a:b:c:d",
                                  5400, 5031])
def test_bad_chain_and_blosc2_specs(spec):
    with pytest.raises(UserError):
        get_codec(spec)


def test_help_names_every_codec_and_chains():
    text = codecs_help()
    for word in ("none", "float16", "zstd", "blosc2", "fq", "nnc", "chain"):
        assert word in text


# -- bit-exact lossless paths -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["none", "zstd", "zstd:1", "zstd:19", "blosc2", "blosc2:lz4:5:bitshuffle", "blosc2:blosclz:9:noshuffle",
                                  "none+zstd", "none+blosc2", "none+blosc2:lz4+zstd:1"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_lossless_bit_exact(spec, dtype):
    c = get_codec(spec)
    for shape in [(2, 3, 17, 5), (1000,), (), (0, 4)]:
        x = sample(dtype, shape)
        payload = c.encode(x)
        assert isinstance(payload, bytes)
        y = c.decode(payload, dtype, shape)
        assert y.dtype == x.dtype and y.shape == x.shape and y.tobytes() == x.tobytes()
        assert c.decode(memoryview(bytearray(payload)), np.dtype(dtype), list(shape)).tobytes() == x.tobytes()


def test_blosc2_compresses_activations_and_layouts():
    x = relu()
    c = get_codec("blosc2")
    assert len(c.encode(x)) < 0.75 * x.nbytes
    t = np.arange(24 * 31, dtype=np.int64).reshape(24, 31).T  # non-contiguous
    assert np.array_equal(c.decode(c.encode(t), t.dtype, t.shape), t)
    big = (np.arange(100, dtype=">f4") / 7).reshape(4, 25)
    assert c.encode(big) == c.encode(big.astype("<f4"))


@pytest.mark.parametrize("head, tails", [("float16", ["zstd", "blosc2", "blosc2:lz4:5:bitshuffle+zstd:1"]),
                                         ("fq:6", ["zstd:3", "blosc2"]), ("fq:4:t", ["blosc2:lz4"])])
def test_chains_give_their_head_values_and_compress_further(head, tails):
    x = relu(seed=3)
    h = get_codec(head)
    alone = h.decode(h.encode(x), x.dtype, x.shape)
    for tail in tails:
        c = get_codec(f"{head}+{tail}")
        p = c.encode(x)
        y = c.decode(p, x.dtype, x.shape)
        assert y.tobytes() == alone.tobytes()
        if head == "float16":
            assert len(p) < x.nbytes / 2  # beyond float16's own 2x


def test_float16_chain_keeps_integers_exact():
    x = sample("int64", (7, 9))
    c = get_codec("float16+zstd")
    assert c.decode(c.encode(x), x.dtype, x.shape).tobytes() == x.tobytes()


# -- bounded decoding ------------------------------------------------------------------------------------


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _refused(codec, payload, dtype, shape):
    def run():
        with pytest.raises(CodecError):
            codec.decode(payload, dtype, shape)
    return _peak(run)


def test_frames_claiming_more_than_announced_are_refused_before_allocation():
    import blosc2
    import zstandard

    shape = (1, 4, 16, 16)  # 4 kB of float32 announced
    big = np.zeros(16 << 20, np.uint8)  # 16 MB claimed
    zbomb = zstandard.ZstdCompressor(write_content_size=True).compress(big.tobytes())
    bbomb = blosc2.compress2(big, typesize=1, codec=blosc2.Codec.ZSTD, clevel=1)
    assert len(zbomb) < 4096 and len(bbomb) < 1 << 20
    for spec, bomb in [("zstd", zbomb), ("blosc2", bbomb), ("float16+zstd", zbomb), ("float16+blosc2", bbomb),
                       ("none+blosc2+zstd", zbomb), ("fq:6+zstd", zbomb), ("fq:6+blosc2:lz4", bbomb)]:
        peak = _refused(get_codec(spec), bomb, "float32", shape)
        assert peak < 1 << 20, f"{spec}: {peak} bytes allocated before refusing"
    # a zstd frame without a content size is refused too (nothing to check it against)
    nosize = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * 4096)
    for spec in ("zstd", "float16+zstd"):
        _refused(get_codec(spec), nosize, "float32", shape)


@pytest.mark.parametrize("spec", ["blosc2", "float16+blosc2", "float16+zstd", "none+blosc2:lz4+zstd:1", "fq:4+zstd"])
def test_damaged_chain_and_blosc2_payloads(spec):
    c = get_codec(spec)
    x = relu((1, 8, 16, 16), seed=2)
    p = c.encode(x)
    rng = np.random.default_rng(1)
    bad = [b"", p[:10], p[:-1], p + b"\0", b"\0" * 64, rng.integers(0, 256, 300, dtype=np.uint8).tobytes()]
    for b in bad:
        with pytest.raises(CodecError):
            c.decode(b, x.dtype, x.shape)
    for dtype, shape in [("float32", (1, 8, 16, 17)), ("float32", (2, 8, 16, 16))]:
        with pytest.raises(CodecError):
            c.decode(p, dtype, shape)
    flips = 0
    for _ in range(40):  # a flipped byte is refused or still yields a well-formed tensor, never a crash
        b = bytearray(p)
        b[int(rng.integers(len(b)))] ^= int(rng.integers(1, 256))
        try:
            y = c.decode(bytes(b), x.dtype, x.shape)
            assert y.shape == x.shape
        except CodecError:
            flips += 1
    assert flips > 0
