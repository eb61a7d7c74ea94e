"""NNC in parallel: large tensors cut into slabs, each a standard NNR bitstream coded by a helper process;
the container is checked against the announced shape; the helpers' memory cap follows the announced
shape, not what a stream claims."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from splitinfer.common.codecs import CodecError, get_codec
from splitinfer.common.codecs import nnc, nnc_pool

from codec_samples import relu_activation as relu


@pytest.fixture
def two_helpers(monkeypatch):
    """A fresh pool of 2 helpers (the parallel path), closed afterwards."""
    monkeypatch.setenv("SPLITINFER_NNC_WORKERS", "2")
    monkeypatch.setattr(nnc_pool, "_the_pool", None)
    yield nnc_pool.helper_pool()
    nnc_pool.helper_pool().close()
    monkeypatch.setattr(nnc_pool, "_the_pool", None)


def _blocks(payload: bytes):
    body = payload[8:]
    axis, k = nnc._BLOCKS_HEAD.unpack_from(body)
    index = [nnc._BLOCK.unpack_from(body, nnc._BLOCKS_HEAD.size + i * nnc._BLOCK.size) for i in range(k)]
    pos = nnc._BLOCKS_HEAD.size + k * nnc._BLOCK.size
    streams = []
    for _, length in index:
        streams.append(body[pos:pos + length])
        pos += length
    return axis, index, streams


def test_large_tensors_are_coded_as_standard_nnr_slabs(two_helpers):
    x = relu((1, 64, 40, 40))
    c = get_codec("nnc:-30")
    p = c.encode(x)
    assert p[3:4] == b"P"
    axis, index, streams = _blocks(p)
    assert axis == 1 and [e for e, _ in index] == [32, 32]
    # each slab is a plain one-tensor NNR bitstream: nncodec's own decoder reads it (in-process here)
    slabs = [nnc.decode_nnr(s, 32 * 40 * 40).reshape(1, 32, 40, 40) for s in streams]
    y = c.decode(p, x.dtype, x.shape)
    assert np.array_equal(np.concatenate(slabs, axis=1), y)
    assert np.array_equal(c.decode(p, x.dtype, x.shape, trusted=True), y)
    # the same quantisation as one bitstream: errors of the same size
    whole = nnc.decode_nnr(nnc.encode_nnr(x, -30), x.size).reshape(x.shape)
    e_par, e_one = (float(np.linalg.norm(v - x) / np.linalg.norm(x)) for v in (y, whole))
    assert abs(e_par - e_one) < 0.1 * e_one


def test_small_tensors_and_one_helper_stay_one_bitstream(two_helpers, monkeypatch):
    small = relu((1, 8, 20, 20))
    assert get_codec("nnc").encode(small)[3:4] == b"N"
    big = relu((1, 64, 40, 40))
    monkeypatch.setattr(nnc_pool.helper_pool(), "size", 1)
    assert get_codec("nnc").encode(big)[3:4] == b"N"


def _with_crc(body: bytes, mode: bytes = b"P") -> bytes:
    return struct.pack("<3scI", b"NNC", mode, zlib.crc32(body)) + body


def test_lying_containers_are_refused_before_decoding(two_helpers):
    x = relu((1, 64, 40, 40), seed=1)
    p = get_codec("nnc:-30").encode(x)
    body = p[8:]
    axis, index, streams = _blocks(p)
    head = nnc._BLOCKS_HEAD.size + len(index) * nnc._BLOCK.size

    def container(axis=axis, index=index, streams=streams, k=None):
        k = len(index) if k is None else k
        return (nnc._BLOCKS_HEAD.pack(axis, k) + b"".join(nnc._BLOCK.pack(e, n) for e, n in index)
                + b"".join(streams))

    cases = {
        "slabs cover more channels": container(index=[(40, index[0][1]), (32, index[1][1])]),
        "slabs cover fewer": container(index=[(16, index[0][1]), (32, index[1][1])]),
        "empty slab": container(index=[(0, index[0][1]), (64, index[1][1])]),
        "axis 3": container(axis=3),
        "too many slabs": container(k=300),
        "index cut": body[:head - 3],
        "lengths lie": container(index=[(32, index[0][1] + 5), (32, index[1][1])]),
        "no header": body[:1],
        "slab stream swapped for another shape": container(streams=[nnc.encode_nnr(relu((1, 32, 41, 40)), -30),
                                                                    streams[1]],
                                                           index=[(32, len(nnc.encode_nnr(relu((1, 32, 41, 40)), -30))),
                                                                  index[1]]),
    }
    c = get_codec("nnc")
    for name, bad in cases.items():
        with pytest.raises(CodecError):
            c.decode(_with_crc(bad), "float32", x.shape)
    assert np.array_equal(c.decode(p, "float32", x.shape), c.decode(p, "float32", x.shape, trusted=True))


def test_helper_memory_cap_follows_the_announced_shape(two_helpers):
    """A bitstream of a big tensor announced as a small one: the helper refuses it (value count or
    memory cap sized by the small announced shape), and the pool keeps working."""
    big = relu((1, 16, 128, 128), seed=2)
    stream = nnc.encode_nnr(big, -20)
    c = get_codec("nnc")
    with pytest.raises(CodecError, match="never sent"):  # longer than the raw tensor: refused in this process
        c.decode(_with_crc(stream, b"N"), "float32", (1, 16, 8, 8))
    with pytest.raises(CodecError, match="claims 262144 values"):  # refused by the helper before decoding
        c.decode(_with_crc(stream, b"N"), "float32", (1, 16, 128, 129))
    small = relu((1, 8, 20, 20))
    assert c.decode(c.encode(small), "float32", small.shape).shape == small.shape


def _frame(seed=3):
    """A multi-branch frame like NanoDet's split 74: two tensors cut into slabs, three small ones, and the
    tensors NNC sends raw (integers, non-finite values, empty)."""
    rng = np.random.default_rng(seed)
    inf = relu((1, 4, 10, 10), seed + 5)
    inf[0, 1, 2, 3] = np.inf
    return [relu((1, 64, 40, 40), seed), relu((1, 48, 40, 40), seed + 1), relu((1, 16, 20, 20), seed + 2),
            relu((1, 8, 15, 15), seed + 3), rng.integers(0, 9, (3, 5)).astype(np.int64), inf,
            np.zeros((0, 4), np.float32), relu((300,), seed + 4).astype(np.float16)]


def test_encode_many_makes_what_encode_makes_and_decodes_alike(two_helpers):
    from splitinfer.common.codecs import encode_many

    frame = _frame()
    c = get_codec("nnc:-24")
    many = encode_many(c, frame)
    one_by_one = [c.encode(a) for a in frame]
    assert [p[3:4] for p in many] == [b"P", b"P", b"N", b"N", b"R", b"R", b"R", b"N"]
    assert many == one_by_one  # byte for byte: the same standard NNR bitstreams, only coded at once
    for a, p in zip(frame, many):
        y = c.decode(p, a.dtype, a.shape)  # through the helpers, as the network process decodes
        assert y.dtype == a.dtype and y.shape == a.shape
        assert np.array_equal(y, c.decode(p, a.dtype, a.shape, trusted=True))
        if a.dtype.kind != "f" or not a.size or not np.isfinite(a).all():
            assert np.array_equal(y, a)  # sent raw: exact
        else:
            assert 0 < np.abs(y.astype(np.float32) - a).max() < 0.5  # lossy, yet the same tensor
    # the slabs of each large tensor are plain NNR bitstreams nncodec's decoder reads
    _, index, streams = _blocks(many[0])
    slabs = [nnc.decode_nnr(s, e * 40 * 40) for (e, _), s in zip(index, streams)]
    assert np.array_equal(np.concatenate(slabs), c.decode(many[0], "float32", frame[0].shape).reshape(-1))


def test_encode_many_with_one_helper_is_the_in_process_loop(two_helpers, monkeypatch):
    from splitinfer.common.codecs import encode_many

    frame = _frame(seed=4)[:4]
    monkeypatch.setattr(nnc_pool.helper_pool(), "size", 1)
    monkeypatch.setattr(nnc_pool.HelperPool, "encode", lambda *a: pytest.fail("a helper was used"))
    many = encode_many("nnc:-24", frame)
    assert [p[3:4] for p in many] == [b"N"] * 4
    assert many == [nnc._pack(b"N", nnc.encode_nnr(a, -24)) for a in frame]


def test_other_codecs_encode_many_is_their_encode():
    from splitinfer.common.codecs import encode_many

    frame = _frame(seed=5)
    for spec in ("none", "float16+zstd:3", "fq:4"):
        assert encode_many(spec, frame) == [get_codec(spec).encode(a) for a in frame]


def test_helper_exits_quietly_when_its_parent_went_away():
    """A helper whose reply pipe is closed (the parent died or gave up on it) exits 0 without a traceback."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "from splitinfer.common.codecs.nnc_pool import worker_main; "
                             "worker_main()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.read(1) == nnc_pool.READY
        proc.stdout.close()  # nobody reads the reply any more
        x = relu((1, 8, 20, 20))
        proc.stdin.write(nnc_pool.REQUEST.pack(1, x.nbytes, 1, x.size, -30) + struct.pack("<B4Q", 4, *x.shape) + x.tobytes())
        proc.stdin.flush()
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and b"Traceback" not in err and b"BrokenPipe" not in err, err
