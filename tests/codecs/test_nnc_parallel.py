"""NNC in parallel: large tensors cut into slabs, each a standard NNR bitstream coded by a helper process;
the container is checked against the announced shape; the helpers' memory cap follows the announced
shape, not what a stream claims."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from splitinfer.common.codecs import CodecError, get_codec
from splitinfer.common.codecs import nnc


def relu(shape, seed=0):
    return np.maximum(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), 0)


@pytest.fixture
def two_helpers(monkeypatch):
    """A fresh pool of 2 helpers (the parallel path), closed afterwards."""
    monkeypatch.setenv("SPLITINFER_NNC_WORKERS", "2")
    monkeypatch.setattr(nnc, "_the_pool", None)
    yield nnc._pool()
    nnc._pool().close()
    monkeypatch.setattr(nnc, "_the_pool", None)


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
    monkeypatch.setattr(nnc._pool(), "size", 1)
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
