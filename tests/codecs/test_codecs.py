"""Codec registry and codecs: ids, exactness, NNC quality, corrupt payloads, concurrency."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import struct
import zlib

import numpy as np
import pytest

from splitinfer.common.codecs import CodecError, codec_names, get_codec
from splitinfer.common.core.errors import UserError

from codec_samples import DTYPES, bits, relu_activation, sample

def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# -- registry ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, name, cid, params", [
    ("none", "none", 0, {}), (0, "none", 0, {}), ("0", "none", 0, {}),
    ("float16", "float16", 1, {}), (1, "float16", 1, {}), (" FLOAT16 ", "float16", 1, {}),
    ("zstd", "zstd", 2, {"level": 3}), ("2", "zstd", 2, {"level": 3}), ("zstd:3", "zstd", 2, {"level": 3}),
    ("zstd:5", "zstd", 205, {"level": 5}), (205, "zstd", 205, {"level": 5}), ("zstd:22", "zstd", 222, {"level": 22}),
    ("nnc", "nnc", 838, {"qp": -38}), ("nnc:-38", "nnc", 838, {"qp": -38}), ("838", "nnc", 838, {"qp": -38}),
    (np.int64(838), "nnc", 838, {"qp": -38}), ("800", "nnc", 800, {"qp": 0}), ("nnc:-20", "nnc", 820, {"qp": -20}),
    ("nnc:-99", "nnc", 899, {"qp": -99}),
])
def test_specs_and_ids(spec, name, cid, params):
    c = get_codec(spec)
    assert (c.name, c.codec_id, c.params) == (name, cid, params)
    assert c.lossless == (name in ("none", "zstd"))
    # the canonical spec and the id both name the same codec again
    assert get_codec(c.spec) == c and get_codec(c.codec_id) == c and get_codec(str(c.codec_id)) == c
    assert c.spec == (name if not params else f"{name}:{next(iter(params.values()))}")


def test_names():
    assert codec_names() == ("none", "float16", "zstd", "blosc2", "fq", "nnc", "dzstd", "fqi", "video")


@pytest.mark.parametrize("spec", ["gzip", "3", 7, 900, "nnc:5", "nnc:-100", "nnc:abc", "zstd:0", "zstd:23",
                                  "zstd:x", "none:1", "float16:2", "", None, True, 3.5, "8xx",
                                  "\u00b2", "8\u00b2", "zstd:\u00b3", "nnc:\x00"])
def test_unknown_specs_are_user_errors(spec):
    with pytest.raises(UserError) as info:
        get_codec(spec)
    msg = str(info.value)
    assert repr(spec) in msg
    for name in ("none", "float16", "zstd", "nnc"):
        assert name in msg


# -- lossless codecs: bit-exact for every dtype and layout ---------------------------------------------


@pytest.mark.parametrize("spec", ["none", "zstd", "float16", "nnc"])
def test_layout_and_byte_order(spec):
    """Non-contiguous and big-endian inputs come back with their values (payloads are little-endian)."""
    c = get_codec(spec)
    x = np.arange(24 * 31, dtype=np.int64).reshape(24, 31).T  # non-contiguous view
    assert np.array_equal(c.decode(c.encode(x), x.dtype, x.shape), x)
    big = np.arange(100, dtype=">f4").reshape(4, 25) / 7
    y = c.decode(c.encode(big), big.dtype, big.shape, trusted=True)
    assert y.dtype == big.dtype and np.allclose(y, big, rtol=1e-2, atol=3e-3)
    if c.lossless:
        assert np.array_equal(y, big)
    little = c.encode(big.astype("<f4"))
    assert c.encode(big) == little


def test_zstd_compresses_sparse_activations():
    x = relu_activation()
    z = get_codec("zstd").encode(x)
    assert len(z) < 0.7 * x.nbytes
    assert len(get_codec("zstd:19").encode(x)) <= len(z)


# -- float16 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_float16(dtype):
    c = get_codec("float16")
    shape = (3, 5, 7)
    if np.dtype(dtype).kind == "f":
        x = (np.random.default_rng(1).standard_normal(shape) * 10).astype(dtype)
    else:
        x = sample(dtype, shape)
    payload = c.encode(x)
    y = c.decode(payload, dtype, shape)
    assert y.dtype == x.dtype and y.shape == x.shape
    if np.dtype(dtype).kind == "f":
        assert len(payload) == x.size * 2
        assert np.allclose(y, x, rtol=1e-3, atol=1e-3)
        if dtype != "float16":
            assert not np.array_equal(y, x)  # it really was narrowed
    else:  # integers and bools pass through exactly
        assert len(payload) == x.nbytes and bits(y) == bits(x)


# -- nnc -----------------------------------------------------------------------------------------------


def test_nnc_quality_and_ratio_follow_qp():
    x = relu_activation()
    fine, coarse = get_codec("nnc:-38"), get_codec("nnc:0")
    p_fine, p_coarse = fine.encode(x), coarse.encode(x)
    y_fine = fine.decode(p_fine, "float32", x.shape)
    y_coarse = coarse.decode(p_coarse, "float32", x.shape)
    assert y_fine.dtype == np.float32 and y_fine.shape == x.shape
    e_fine, e_coarse = rel_err(y_fine, x), rel_err(y_coarse, x)
    assert 0 < e_fine < 5e-3, e_fine  # lossy but close
    assert e_coarse > 20 * e_fine, (e_fine, e_coarse)
    assert len(p_fine) < x.nbytes / 3  # compresses well beyond zstd's ~1.8x
    assert len(p_coarse) < len(p_fine) / 3
    # the trusted in-process path gives exactly what the helper processes give
    assert np.array_equal(fine.decode(p_fine, "float32", x.shape, trusted=True), y_fine)


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_nnc_restores_float_dtypes(dtype):
    x = relu_activation((2, 16, 9, 9), seed=2).astype(dtype)
    c = get_codec("nnc")
    y = c.decode(c.encode(x), dtype, x.shape)
    assert y.dtype == np.dtype(dtype) and y.shape == x.shape
    assert rel_err(y, x) < 5e-3


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "bool", "int8", "uint64"])
def test_nnc_integer_tensors_are_exact(dtype):
    x = sample(dtype, (4, 33))
    if dtype == "int64":
        x[0, 0] = 2**40 + 3  # beyond int32, where nncodec itself would wrap
    c = get_codec("nnc")
    y = c.decode(c.encode(x), dtype, x.shape)
    assert y.dtype == x.dtype and bits(y) == bits(x)


def test_nnc_edge_tensors():
    c = get_codec("nnc:-38")
    # 1-D tensors honour the QP (nncodec alone would code them at its fixed non-weight QP)
    v = np.linspace(-3, 3, 4000, dtype=np.float32)
    e_fine = rel_err(c.decode(c.encode(v), "float32", v.shape), v)
    e_coarse = rel_err(get_codec("nnc:0").decode(get_codec("nnc:0").encode(v), "float32", v.shape), v)
    assert e_fine < 5e-3 < e_coarse
    # tiny tensors never grow beyond raw + the 8-byte header; scalars and empty tensors work
    for x in [np.float32(1.5).reshape(()), np.array([0.25], np.float32), np.zeros((0, 3), np.float32)]:
        p = c.encode(x)
        assert len(p) <= x.nbytes + 8
        y = c.decode(p, x.dtype, x.shape)
        assert y.shape == x.shape and np.array_equal(y, x)
    # non-finite values are sent exactly rather than quantised to garbage
    x = relu_activation((1, 4, 8, 8))
    x[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    assert bits(c.decode(c.encode(x), x.dtype, x.shape)) == bits(x)
    # all-zero tensors, and the input is never modified
    z = np.zeros((1, 8, 16, 16), np.float32)
    assert np.array_equal(c.decode(c.encode(z), z.dtype, z.shape), z)
    x = relu_activation((1, 8, 16, 16), seed=3)
    before = x.copy()
    c.encode(x)
    assert np.array_equal(x, before)


def test_nnc_bitstream_is_nncodecs_own(tmp_path):
    """Our body is byte-identical to what `nncodec.tensor.encode` makes, and decodes with it."""
    import nncodec.tensor as reference  # imports torch: slow, done once here

    x = relu_activation((1, 8, 20, 20), seed=4)
    payload = get_codec("nnc:-32").encode(x)
    ref = reference.encode(x, args={"qp": -32, "results": str(tmp_path)})
    assert payload[8:] == bytes(ref)
    assert np.array_equal(reference.decode(bytearray(payload[8:])), get_codec("nnc:-32").decode(payload, "float32", x.shape))


# -- bad payloads: CodecError, never a crash -------------------------------------------------------------


@pytest.mark.parametrize("spec", ["none", "float16", "zstd", "nnc"])
def test_size_mismatch(spec):
    c = get_codec(spec)
    x = relu_activation((1, 4, 8, 8))
    payload = c.encode(x)
    wrong = [("float32", (1, 4, 8, 9)), ("float32", (1, 4, 8, 7)), ("float32", (0,))]
    if c.lossless:  # float16 and NNC payloads do not tell float32 from float64 (both decode fine)
        wrong.append(("float64", x.shape))
    for dtype, shape in wrong:
        with pytest.raises(CodecError):
            c.decode(payload, dtype, shape)
    for dtype, shape in [("object", x.shape), ("nonsense", x.shape), ("float32", (1, -4, 8, 8)), ("float32", "ab")]:
        with pytest.raises(CodecError):
            c.decode(payload, dtype, shape)
    with pytest.raises(CodecError):
        c.decode(payload[:-1], "float32", x.shape)
    assert issubclass(CodecError, ValueError)


def test_corrupt_zstd():
    c = get_codec("zstd")
    x = relu_activation((1, 8, 16, 16))
    payload = bytearray(c.encode(x))
    payload[len(payload) // 2] ^= 0x5A
    for bad in [bytes(payload), c.encode(x)[:-7], c.encode(x) + b"junk", b"\x00" * 64]:
        with pytest.raises(CodecError):
            c.decode(bad, "float32", x.shape)


def _with_crc(body: bytes, mode: bytes = b"N") -> bytes:
    return struct.pack("<3scI", b"NNC", mode, zlib.crc32(body)) + body


def test_corrupt_nnc():
    c = get_codec("nnc")
    x = relu_activation((1, 8, 24, 24), seed=5)
    payload = c.encode(x)
    flipped = bytearray(payload)
    flipped[len(flipped) // 2] ^= 0x01
    with pytest.raises(CodecError, match="checksum"):
        c.decode(bytes(flipped), "float32", x.shape)
    body = payload[8:]
    rng = np.random.default_rng(0)
    damaged = [body[: len(body) // 2], body[:20], b"\xff" * 300, rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()]
    for i in range(12):
        b = bytearray(body)
        b[int(rng.integers(len(b)))] ^= int(rng.integers(1, 256))
        damaged.append(bytes(b))
    failures = 0
    for bad in damaged:  # a valid checksum over a damaged stream reaches nncodec itself (in a helper)
        try:
            y = c.decode(_with_crc(bad), "float32", x.shape)
        except CodecError:
            failures += 1
        else:
            assert y.shape == x.shape  # a flip nncodec cannot notice still yields a well-formed tensor
    assert failures >= len(damaged) - 4
    for bad in [b"", b"NNC", b"XYZN" + b"\0" * 20, _with_crc(body, b"Q")]:
        with pytest.raises(CodecError):
            c.decode(bad, "float32", x.shape)
    with pytest.raises(CodecError, match="int64"):  # a bitstream announced as an integer tensor
        c.decode(payload, "int64", x.shape)
    with pytest.raises(CodecError, match="values"):  # the stream's own value count is checked
        c.decode(payload, "float32", (2, 8, 24, 24))
    # after all that, the helpers still decode good payloads
    assert rel_err(c.decode(payload, "float32", x.shape), x) < 5e-3


def test_nnc_helper_crash_is_a_codec_error():
    """A helper that dies mid-way (as a segfault in deepCABAC would) costs one frame, not the server."""
    from splitinfer.common.codecs import nnc_pool

    c = get_codec("nnc")
    x = relu_activation((1, 8, 24, 24), seed=6)
    payload = c.encode(x)
    c.warm_up()
    pool = nnc_pool.helper_pool()
    with pool.cv:
        victims = list(pool.idle)
    assert victims
    for w in victims:
        os.kill(w.proc.pid, signal.SIGKILL)
        w.proc.wait()
    errors = 0
    for _ in victims:
        try:
            c.decode(payload, "float32", x.shape)
        except CodecError as exc:
            assert "signal 9" in str(exc) or "closed" in str(exc)
            errors += 1
    assert errors == len(victims)
    assert rel_err(c.decode(payload, "float32", x.shape), x) < 5e-3  # replaced


# -- concurrency: threads (server) and processes (sweep) -------------------------------------------------


def _roundtrip(seed: int):
    x = relu_activation((1, 16, 20, 20), seed=seed)
    out = []
    for spec in ("nnc:-38", "zstd", "float16"):
        c = get_codec(spec)
        p = c.encode(x)
        out.append((p, c.decode(p, "float32", x.shape)))
    return out


def test_threads_and_processes_agree():
    expected = {s: _roundtrip(s) for s in range(4)}
    with cf.ThreadPoolExecutor(4) as ex:
        threaded = dict(zip(range(4), ex.map(_roundtrip, range(4))))
    with cf.ProcessPoolExecutor(2) as ex:  # forked children get their own lock and helper pool
        forked = dict(zip(range(4), ex.map(_roundtrip, range(4))))
    for s in range(4):
        for got in (threaded[s], forked[s]):
            for (p, y), (p0, y0) in zip(got, expected[s]):
                assert p == p0 and np.array_equal(y, y0)
