"""The fast feature codec `fq`: specs and ids, the quantiser's error bound, side information inside the
payload, exact passthrough, and hostile payloads refused with CodecError within a memory bound."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest

from splitinfer.common.codecs import CodecError, get_codec
from splitinfer.common.codecs import fq, fq_context
from splitinfer.common.core.errors import UserError


def leaky(shape=(1, 32, 24, 24), seed: int = 0) -> np.ndarray:
    """LeakyReLU-like activations with sparse large values, as at NanoDet's splits."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32) * 0.3
    x = np.where(x > 0, x, 0.1 * x)
    hot = rng.random(shape) < 0.01
    return np.where(hot, x + 3 * rng.random(shape).astype(np.float32), x).astype(np.float32)


# -- specs and ids --------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, cid, canonical", [
    ("fq", 30040, "fq:4"), ("fq:6", 30060, "fq:6"), ("fq:4", 30040, "fq:4"), ("fq:12", 30120, "fq:12"),
    ("fq:6:t", 31060, "fq:6:t"), ("fq:5:c", 32050, "fq:5:c"), ("fq:3:k", 34030, "fq:3:k"),
    ("fq:8:kct", 37080, "fq:8:tck"), ("fq:4:x", 38040, "fq:4:x"), ("fq:5:xtkc", 45050, "fq:5:tckx"),
    (31060, 31060, "fq:6:t"), ("30020", 30020, "fq:2"), ("fq:3.5", 30035, "fq:3.5"), ("fq:4.0", 30040, "fq:4"),
    ("fq:3.3:x", 38033, "fq:3.3:x"),
])
def test_specs_and_ids(spec, cid, canonical):
    c = get_codec(spec)
    assert (c.name, c.codec_id, c.spec, c.lossless) == ("fq", cid, canonical, False)
    assert get_codec(c.spec) == c and get_codec(c.codec_id) == c


@pytest.mark.parametrize("spec", ["fq:1", "fq:13", "fq:x", "fq:6:z", "fq:6:tt", "fq:3.55", "fq:1.9", 30010, 30121,
                                  46060, 29999, 3004])
def test_bad_specs(spec):
    with pytest.raises(UserError):
        get_codec(spec)


# -- quantiser --------------------------------------------------------------------------------------------


def _side(payload: bytes, channels: int):
    """(lo, step) from a payload's side information (float16 or float32, as its layout flag says)."""
    pos = fq._HEAD.size + (channels + 7) // 8
    item = _item(payload)
    dt = "<f2" if item == 2 else "<f4"
    lo = np.frombuffer(payload, dt, channels, pos).astype(np.float32)
    one = bool(fq._HEAD.unpack_from(payload)[3] & fq.ONE_STEP)
    step = np.frombuffer(payload, dt, 1 if one else channels, pos + item * channels).astype(np.float32)
    return lo, np.broadcast_to(step, (channels,))


@pytest.mark.parametrize("spec", ["fq:2", "fq:3.5", "fq:4", "fq:6", "fq:8", "fq:12", "fq:4:t", "fq:6:c", "fq:6:tc"])
def test_error_within_half_a_step_inside_the_clip_range(spec):
    c = get_codec(spec)
    x = leaky()
    payload = c.encode(x)
    y = c.decode(payload, x.dtype, x.shape)
    assert y.dtype == np.float32 and y.shape == x.shape
    channels = 1 if c.per_tensor else x.shape[1]
    lo, step = _side(payload, channels)
    hi = lo + step * (c.levels - 1)
    shape = (1, channels, 1, 1) if channels > 1 else ()
    lo_b, hi_b, step_b = (np.reshape(v, shape) for v in (lo, hi, step))
    inside = (x >= lo_b) & (x <= hi_b)
    err = np.abs(y - x)
    bound = step_b / 2 * (1 + 1e-5) + 1e-6 * np.abs(x) + 1e-7
    assert np.all(err[inside] <= np.broadcast_to(bound, x.shape)[inside])
    if "c" not in c.opts:  # min/max range: nothing is clipped
        assert inside.all()
        # the range is [min, max], widened only by the side information's rounding (float16: ~1e-3)
        assert lo.min() <= x.min() and hi.max() >= x.max()
        width = x.max() - x.min()
        assert x.min() - lo.min() < 2e-3 * width and hi.max() - x.max() < 2e-3 * width
    else:  # clipped values come back at the nearest end of the range
        out = ~inside
        assert np.all(np.abs(y[out] - np.clip(x, lo_b, hi_b)[out]) <= np.broadcast_to(bound, x.shape)[out])


def test_more_bits_less_error_more_bytes():
    x = leaky()
    errs, sizes = [], []
    for bits in (2, 4, 6, 8):
        c = get_codec(f"fq:{bits}")
        p = c.encode(x)
        errs.append(float(np.abs(c.decode(p, x.dtype, x.shape) - x).max()))
        sizes.append(len(p))
    assert errs == sorted(errs, reverse=True) and sizes == sorted(sizes)
    assert sizes[1] < x.nbytes / 8  # 4 bits, entropy coded: well under 4 bits per value


def test_clip_search_minimises_error():
    """On values with a few far outliers, the searched range has a smaller mean squared error than min/max."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 4, 64, 64)).astype(np.float32)
    x[0, :, 0, 0] = 40  # one far outlier per channel
    mse = {}
    for spec in ("fq:4", "fq:4:c"):
        c = get_codec(spec)
        mse[spec] = float(np.mean((c.decode(c.encode(x), x.dtype, x.shape) - x) ** 2))
    assert mse["fq:4:c"] < 0.6 * mse["fq:4"]


def test_constant_channels_cost_no_symbols():
    x = leaky((1, 16, 20, 20))
    x[0, 3] = 0.0
    x[0, 7] = 1.25
    skip, keep = get_codec("fq:6"), get_codec("fq:6:k")
    p_skip, p_keep = skip.encode(x), keep.encode(x)
    for c, p in ((skip, p_skip), (keep, p_keep)):
        y = c.decode(p, x.dtype, x.shape)
        assert np.array_equal(y[0, 3], x[0, 3]) and np.array_equal(y[0, 7], x[0, 7])
    mask = np.unpackbits(np.frombuffer(p_skip, np.uint8, 2, fq._HEAD.size), bitorder="little")
    assert list(np.flatnonzero(mask)) == [3, 7]
    assert not np.frombuffer(p_keep, np.uint8, 2, fq._HEAD.size).any()
    for spec in ("fq:6", "fq:6:k", "fq:6:t", "fq:6:tk", "fq:3:x", "fq:4:tx"):  # whole constant tensors
        c = get_codec(spec)
        for z in (np.zeros((1, 8, 16, 16), np.float32), np.full(4000, -2.5, np.float32), np.ones((3, 5), np.float32)):
            pz = c.encode(z)
            assert np.array_equal(c.decode(pz, z.dtype, z.shape), z), (spec, z.shape)
            if "k" not in spec:
                assert len(pz) < 100


@pytest.mark.parametrize("shape", [(1, 64, 26, 26), (2, 8, 30, 30), (4000,), (50, 80), (1, 2704, 80), (3, 1, 70, 70)])
def test_layouts_and_side_information_inside_the_payload(shape):
    """Whatever the shape, the payload alone (plus dtype x shape) rebuilds the tensor: a fresh codec
    made from the numeric id decodes it, and no byte is outside the returned payload."""
    x = leaky(shape, seed=len(shape))
    payload = get_codec("fq:6").encode(x)
    assert isinstance(payload, bytes)
    fresh = fq.FqCodec(6)
    y = fresh.decode(bytearray(payload), "float32", list(shape))
    assert y.shape == x.shape
    assert np.abs(y - x).max() <= (x.max() - x.min()) / 63 / 2 * 1.0001 + 1e-6
    assert get_codec(30060).decode(memoryview(payload), np.float32, shape).tobytes() == y.tobytes()


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_other_float_dtypes(dtype):
    x = leaky((1, 8, 16, 16)).astype(dtype)
    c = get_codec("fq:8")
    y = c.decode(c.encode(x), dtype, x.shape)
    assert y.dtype == np.dtype(dtype) and np.abs(y.astype(np.float64) - x).max() < 0.02


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "bool"])
def test_integer_tensors_pass_exactly(dtype):
    x = (np.arange(300) % 7).astype(dtype).reshape(3, 100)
    c = get_codec("fq:4")
    y = c.decode(c.encode(x), dtype, x.shape)
    assert y.dtype == x.dtype and y.tobytes() == x.tobytes()


def test_non_finite_empty_and_big_endian():
    c = get_codec("fq:4")
    x = leaky((1, 4, 8, 8))
    x[0, 1, 2, 3] = np.nan
    x[0, 2, 0, 0] = -np.inf
    assert c.decode(c.encode(x), x.dtype, x.shape).tobytes() == x.tobytes()
    e = np.zeros((0, 5), np.float32)
    assert c.decode(c.encode(e), e.dtype, e.shape).shape == (0, 5)
    big = leaky((1, 4, 8, 8)).astype(">f4")
    assert c.encode(big) == c.encode(big.astype("<f4"))
    before = big.copy()
    c.encode(big)
    assert np.array_equal(big, before)


def test_both_entropy_modes_appear_and_decode():
    """zstd wins on smooth, repetitive symbols; ANS on i.i.d. peaked ones (sub-byte entropy)."""
    rng = np.random.default_rng(5)
    iid = np.where(rng.random((1, 4, 64, 64)) < 0.95, 0.0, rng.random((1, 4, 64, 64))).astype(np.float32)
    iid[0, :, 0, 0] = 1.0
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (1, 4, 64, 1))
    c = get_codec("fq:6")
    modes = set()
    for x in (iid, ramp):
        p = c.encode(x)
        modes.add(p[2:3])
        assert np.abs(c.decode(p, x.dtype, x.shape) - x).max() <= 1 / 63 / 2 + 1e-6
    assert modes == {fq.MODE_ANS, fq.MODE_ZSTD}


@pytest.mark.parametrize("spec, mode", [("fq:2", fq.MODE_PACKED), ("fq:3", fq.MODE_PACKED), ("fq:4", fq.MODE_PACKED),
                                        ("fq:3:x", fq.MODE_CTX), ("fq:4:x", fq.MODE_CTX), ("fq:6:x", fq.MODE_CTX),
                                        ("fq:4.5:tx", fq.MODE_CTX)])
def test_packed_and_context_modes(spec, mode):
    """Smooth activations: packed symbols (pairs/quads of neighbours through zstd's Huffman stage) beat
    one byte per symbol; the spatial context coder beats both; every mode decodes to the same values."""
    x = _smooth()
    c = get_codec(spec)
    p = c.encode(x)
    assert p[2:3] == mode
    y = c.decode(p, x.dtype, x.shape)
    plain = get_codec(f"fq:{c.bits_text}:{c.opts.replace('x', '')}".rstrip(":"))
    assert np.array_equal(y, plain.decode(plain.encode(x), x.dtype, x.shape))
    if mode == fq.MODE_CTX:
        assert len(p) < 0.97 * len(plain.encode(x))


def _smooth(shape=(1, 24, 32, 32), seed: int = 4) -> np.ndarray:
    """Spatially correlated activations (a blurred LeakyReLU field)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    for axis in (2, 3):
        x = (x + np.roll(x, 1, axis) + np.roll(x, -1, axis)) / 3
    return np.where(x > 0, x, 0.1 * x).astype(np.float32)


def test_packing_round_trips_every_length():
    rng = np.random.default_rng(2)
    for bits in (2, 3, 4):
        for n in (1, 2, 3, 5, 8, 1001):
            q = rng.integers(0, 1 << bits, n).astype(np.uint8)
            packed = fq.pack_symbols(q, bits)
            assert packed.size == -(-n // (8 // bits))
            assert np.array_equal(fq.unpack_symbols(packed, bits, n), q)


# -- hostile payloads --------------------------------------------------------------------------------------


def _header(p: bytes, **changes) -> bytes:
    magic, mode, levels, layout, channels = fq._HEAD.unpack_from(p)
    vals = dict(magic=magic, mode=mode, levels=levels, layout=layout, channels=channels) | changes
    return fq._HEAD.pack(vals["magic"], vals["mode"], vals["levels"], vals["layout"], vals["channels"]) + p[fq._HEAD.size:]


def _ans_payload() -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(7)
    x = np.where(rng.random((1, 8, 32, 32)) < 0.9, 0.0, rng.random((1, 8, 32, 32))).astype(np.float32)
    p = get_codec("fq:4").encode(x)
    assert p[2:3] == fq.MODE_ANS
    return p, x


def _item(p: bytes) -> int:
    """Bytes of one side-information number: 2 (float16) or 4 (float32), from the layout flag."""
    return 2 if fq._HEAD.unpack_from(p)[3] & fq.HALF_SIDE else 4


def _body_at(p: bytes, channels: int) -> int:
    steps = 1 if fq._HEAD.unpack_from(p)[3] & fq.ONE_STEP else channels
    return fq._HEAD.size + (channels + 7) // 8 + _item(p) * (channels + steps)


def hostile_payloads():
    import zstandard

    x = leaky((1, 8, 32, 32))
    good = get_codec("fq:6").encode(x)
    ans, xa = _ans_payload()
    body = _body_at(ans, 8)
    (t,) = struct.unpack_from("<H", ans, body)
    counts = np.frombuffer(ans, "<u4", t, body + 2).copy()
    more = counts.copy()
    more[0] += 1_000_000  # a table claiming far more symbols than the tensor has
    rng = np.random.default_rng(0)
    nan_lo = bytearray(good)
    dt = "<f2" if _item(good) == 2 else "<f4"
    lo_at = _body_at(good, 8) - 2 * _item(good) * 8
    nan_lo[lo_at: lo_at + _item(good)] = np.array(np.nan, dt).tobytes()
    neg_step = bytearray(good)
    step_at = _body_at(good, 8) - _item(good) * 8
    neg_step[step_at: step_at + _item(good)] = np.array(-1, dt).tobytes()
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (64 << 20))  # 64 MB of symbols in a few kB
    sm = _smooth()
    ctx = get_codec("fq:4:x").encode(sm)
    assert ctx[2:3] == fq.MODE_CTX
    cb = _body_at(ctx, sm.shape[1])
    groups, classes, packed_len = fq_context._CTX_HEAD.unpack_from(ctx, cb)
    gpos = cb + fq_context._CTX_HEAD.size + 2 * (classes - 1)
    tpos = gpos + sm.shape[1]
    tables = np.frombuffer(zstandard.ZstdDecompressor().decompress(ctx[tpos:tpos + packed_len]), "<u4").copy()
    moved = tables.copy().reshape(groups, 1 + classes, -1)
    moved[0, 1, 0] += 5  # a context table counting more symbols than the anchors give
    repack = lambda t: zstandard.ZstdCompressor().compress(t.astype("<u4").tobytes())  # noqa: E731

    def with_tables(t):
        z = repack(t)
        return (ctx[:cb] + fq_context._CTX_HEAD.pack(groups, classes, len(z)) + ctx[cb + fq_context._CTX_HEAD.size:tpos] + z
                + ctx[tpos + packed_len:])

    thr = cb + fq_context._CTX_HEAD.size

    packed = get_codec("fq:4").encode(x)
    assert packed[2:3] == fq.MODE_PACKED
    cases_ctx = {
        "ctx groups 0": ctx[:cb] + fq_context._CTX_HEAD.pack(0, classes, packed_len) + ctx[thr:],
        "ctx classes 3": ctx[:cb] + fq_context._CTX_HEAD.pack(groups, 3, packed_len) + ctx[thr:],
        "ctx thresholds beyond the sums": ctx[:thr] + struct.pack("<H", 999) * (classes - 1) + ctx[gpos:],
        "ctx thresholds out of order": ctx[:thr] + struct.pack("<H", 9) + struct.pack("<H", 1) * (classes - 2) + ctx[gpos:],
        "ctx group id beyond": ctx[:gpos] + bytes([200]) + ctx[gpos + 1:],
        "ctx tables longer": with_tables(np.concatenate([tables, tables[:16]])),
        "ctx table counts more": with_tables(moved.reshape(-1)),
        "ctx table length lies": ctx[:cb] + fq_context._CTX_HEAD.pack(groups, classes, 10**9) + ctx[thr:],
        "ctx words garbage": ctx[:tpos + packed_len] + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        "ctx words cut": ctx[:-8],
    }
    cases = {
        "packed with 64 levels": (_header(packed, levels=64), x),
        "packed frame of another size": (packed[:_body_at(packed, 8)] + zstandard.ZstdCompressor().compress(b"\1" * 999), x),
        **{k: (v, sm) for k, v in cases_ctx.items() if not isinstance(v, tuple)},
        "ctx mode on a 3-D tensor": (_header(ctx, layout=0, channels=1), sm.reshape(1, 24, -1)),
        "truncated header": (good[:5], x),
        "truncated side info": (good[:_body_at(good, 8) - 3], x),
        "truncated symbols": (good[:-10], x),
        "extra bytes": (good + b"\0" * 7, x),
        "bad magic": (b"XQ" + good[2:], x),
        "unknown mode": (_header(good, mode=b"Q"), x),
        "levels 0": (_header(good, levels=0), x),
        "levels 3": (_header(good, levels=3), x),
        "levels 65535": (_header(good, levels=65535), x),
        "levels fewer than the symbols": (_header(good, levels=8), x),
        "layout 7": (_header(good, layout=7), x),
        "channels lie": (_header(good, channels=9), x),
        "channels huge": (_header(good, channels=2**32 - 1), x),
        "per-tensor claims channels": (_header(good, layout=0), x),
        "nan offset": (bytes(nan_lo), x),
        "negative step": (bytes(neg_step), x),
        "zstd bomb": (good[:_body_at(good, 8)] + bomb, x),
        "table claims more symbols": (ans[:body + 2] + more.astype("<u4").tobytes() + ans[body + 2 + 4 * t:], xa),
        "table claims 65535 entries": (ans[:body] + struct.pack("<H", 65535) + ans[body + 2:], xa),
        "ans words cut": (ans[:-4], xa),
        "ans words odd": (ans[:-1], xa),
        "ans garbage": (ans[:body + 2 + 4 * t] + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(), xa),
        "ans mode with 4096 levels": (_header(ans, levels=4096), xa),
        "raw wrong size": (b"FQR" + b"\0" * 17, x),
        "random": (rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), x),
        "random after header": (good[:_body_at(good, 8)] + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), x),
        "empty": (b"", x),
    }
    return cases


@pytest.mark.parametrize("case", list(hostile_payloads()))
def test_hostile_payloads_are_refused_within_a_memory_bound(case):
    payload, x = hostile_payloads()[case]
    c = get_codec("fq:6")
    tracemalloc.start()
    try:
        with pytest.raises(CodecError):
            c.decode(payload, "float32", x.shape)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 6 * x.nbytes + (1 << 20), f"{case}: peak {peak} bytes for a {x.nbytes}-byte tensor"


def test_announced_shape_and_dtype_are_checked():
    x = leaky((1, 8, 32, 32))
    c = get_codec("fq:6")
    p = c.encode(x)
    for dtype, shape in [("float32", (1, 8, 32, 33)), ("float32", (1, 9, 32, 32)), ("int32", x.shape),
                         ("float32", (0,)), ("float32", (8 * 32 * 32,)), ("nonsense", x.shape)]:
        with pytest.raises(CodecError):
            c.decode(p, dtype, shape)


def test_random_flips_never_crash():
    x = leaky((1, 8, 32, 32))
    payloads = [(get_codec("fq:6").encode(x), x), (_ans_payload()[0], x), (get_codec("fq:3").encode(_smooth()), _smooth()),
                (get_codec("fq:4:x").encode(_smooth()), _smooth())]
    assert payloads[2][0][2:3] == fq.MODE_PACKED and payloads[3][0][2:3] == fq.MODE_CTX
    rng = np.random.default_rng(11)
    c = get_codec("fq:6")
    for p, x in payloads:
        for _ in range(150):
            b = bytearray(p)
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(len(b)))] ^= int(rng.integers(1, 256))
            try:
                y = c.decode(bytes(b), "float32", x.shape)
            except CodecError:
                continue
            assert y.shape == x.shape and y.dtype == np.float32


def test_side_information_in_float16_when_it_fits():
    """float16 offsets/steps halve the side information; values beyond float16, tiny steps or constant
    channels float16 cannot hold exactly fall back to float32; both decode within half a step."""
    cases = {"fits": (leaky(), True), "huge": (leaky() * 1e6, False), "tiny steps": (leaky() * 1e-6, False)}
    const = leaky()
    const[0, 5] = 0.1  # 0.1 has no exact float16 form: the constant channel needs float32
    cases["inexact constant"] = (const, False)
    const16 = leaky()
    const16[0, 5] = 0.25
    cases["exact constant"] = (const16, True)
    for name, (x, half) in cases.items():
        c = get_codec("fq:4")
        p = c.encode(x)
        assert bool(fq._HEAD.unpack_from(p)[3] & fq.HALF_SIDE) == half, name
        y = c.decode(p, x.dtype, x.shape)
        lo, step = _side(p, x.shape[1])
        bound = step.reshape(1, -1, 1, 1) / 2 * (1 + 1e-5) + 1e-6 * np.abs(x) + 1e-30
        assert np.all(np.abs(y - x) <= bound), name
        if "constant" in name:
            assert np.array_equal(y[0, 5], x[0, 5])
    small, big = (len(get_codec("fq:4").encode(x)) for x in (leaky((1, 512, 13, 13)), leaky((1, 512, 13, 13)) * 1e6))
    assert big - small >= 512 * 4 - 64  # 4 bytes a channel saved


def test_ranges_near_float32_limits_go_raw():
    x = np.array([[-3e38, 3e38, 0.0, 1.0]] * 80, np.float32)
    c = get_codec("fq:4")
    p = c.encode(x)
    assert p[:3] == b"FQR" and c.decode(p, x.dtype, x.shape).tobytes() == x.tobytes()


# -- step mode (fq:QP) -------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, cid, canonical", [
    ("fq:-18", 50018, "fq:-18"), ("fq:-18:tx", 59018, "fq:-18:tx"), ("fq:-6:xt", 59006, "fq:-6:tx"),
    ("fq:0", 50000, "fq:0"), ("fq:-64:k", 54064, "fq:-64:k"), (58010, 58010, "fq:-10:x"), ("50022", 50022, "fq:-22"),
])
def test_step_mode_specs_and_ids(spec, cid, canonical):
    c = get_codec(spec)
    assert (c.name, c.codec_id, c.spec, c.qp) == ("fq", cid, canonical, int(canonical.split(":")[1]))
    assert get_codec(c.spec) == c and get_codec(c.codec_id) == c


@pytest.mark.parametrize("spec", ["fq:-65", "fq:-18:c", "fq:-3.5", "fq:-18:q", 52018, 50065, "fq:-"])
def test_step_mode_bad_specs(spec):
    with pytest.raises(UserError):
        get_codec(spec)


def _step(payload: bytes, channels: int) -> float:
    lo, step = _side(payload, channels)
    return float(step[step > 0].max())


@pytest.mark.parametrize("spec", ["fq:-22", "fq:-14:t", "fq:-10:tx", "fq:-6:x", "fq:-2:k"])
def test_step_mode_uses_one_step_for_the_tensor(spec):
    """One step for the tensor, 2**(QP/4) (rounded up to float16); q = round(x / step); each channel's
    offset carries the mean of its rounding errors, so every channel comes back with its own mean (no
    bias), the MSE is below the plain grid's (q * step) and the error stays under one step."""
    c = get_codec(spec)
    x = leaky()
    p = c.encode(x)
    y = c.decode(p, x.dtype, x.shape)
    channels = 1 if c.per_tensor else x.shape[1]
    lo, steps = _side(p, channels)
    step = _step(p, channels)
    assert np.all((steps == step) | (steps == 0))  # one step for every coded channel
    assert 2 ** (c.qp / 4) <= step <= 2 ** (c.qp / 4) * 1.001
    assert np.abs(y - x).max() <= step * 1.0001
    grid = np.rint(x / step) * step
    assert np.mean((y - x) ** 2) < np.mean((grid - x) ** 2)
    axes = (0, 2, 3) if channels > 1 else None
    bias = np.abs(np.mean(y - x, axis=axes))
    assert np.all(bias <= step / 64 + 1e-6) and np.abs(np.mean(grid - x, axis=axes)).max() > 10 * bias.max()


def test_step_mode_widens_the_step_to_fit_a_byte_alphabet():
    x = leaky() * 300  # range ~1000: 2**(-40/4) would need ~10**6 symbols
    c = get_codec("fq:-40:t")
    p = c.encode(x)
    levels = fq._HEAD.unpack_from(p)[2]
    step = _step(p, 1)
    assert levels <= fq.STEP_MAX_LEVELS and step > 2 ** (-40 / 4)
    assert step <= (x.max() - x.min()) / (fq.STEP_MAX_LEVELS - 3) * 1.001
    assert np.abs(c.decode(p, x.dtype, x.shape) - x).max() <= step * 1.0001


def test_step_mode_beats_bit_depth_on_rate_at_equal_error():
    """The point of the step mode: on LeakyReLU activations, fewer bytes than fq:4 at a lower MSE."""
    x = leaky()
    mse, size = {}, {}
    for spec in ("fq:4", "fq:-8:t", "fq:-8:tx"):
        c = get_codec(spec)
        p = c.encode(x)
        mse[spec], size[spec] = float(np.mean((c.decode(p, x.dtype, x.shape) - x) ** 2)), len(p)
    for spec in ("fq:-8:t", "fq:-8:tx"):
        assert mse[spec] < mse["fq:4"] and size[spec] < 0.8 * size["fq:4"], (spec, mse, size)


def test_step_mode_rate_falls_with_qp_and_constant_channels_are_free():
    x = _smooth()
    sizes = [len(get_codec(f"fq:{qp}:x").encode(x)) for qp in (-22, -18, -14, -10, -6)]
    assert sizes == sorted(sizes, reverse=True)
    z = leaky((1, 16, 20, 20))
    z[0, 4] *= 1e-4  # within half a step of 0: the channel quantises to 0 everywhere
    c = get_codec("fq:-10")
    p = c.encode(z)
    mask = np.unpackbits(np.frombuffer(p, np.uint8, 2, fq._HEAD.size), bitorder="little")
    assert mask[4] and mask.sum() == 1
    back = c.decode(p, z.dtype, z.shape)[0, 4]  # one value: the channel's mean
    assert np.all(back == back[0, 0]) and abs(back[0, 0] - z[0, 4].mean()) <= 2 ** (-10 / 4) / 64
    for t in (np.zeros((1, 8, 16, 16), np.float32), np.full(4000, -2.5, np.float32)):
        for spec in ("fq:-10", "fq:-10:tx", "fq:-10:k"):
            pc = get_codec(spec)
            y = pc.decode(pc.encode(t), t.dtype, t.shape)
            assert np.abs(y - t).max() <= 2 ** (-10 / 4) * 1.001


def test_step_mode_passes_exact_what_it_cannot_quantise():
    c = get_codec("fq:-18:tx")
    x = leaky((1, 4, 8, 8))
    x[0, 1, 2, 3] = np.nan
    ints = (np.arange(300) % 7).astype(np.int32).reshape(3, 100)
    wide = np.array([[-3e38, 3e38, 0.0, 1.0]] * 80, np.float32)
    for t in (x, ints, np.zeros((0, 5), np.float32)):
        assert c.decode(c.encode(t), t.dtype, t.shape).tobytes() == t.tobytes()
    y = c.decode(c.encode(wide), wide.dtype, wide.shape)
    assert np.isfinite(y).all() and y.shape == wide.shape


def test_step_mode_payloads_are_ordinary_fq_payloads():
    """The step mode only chooses offsets and steps: any fq codec decodes its payloads, and hostile
    changes to them are refused like the others (context tables of up to 256 symbols included)."""
    x = _smooth() * 3
    p = get_codec("fq:-18:tx").encode(x)
    assert p[2:3] == fq.MODE_CTX and fq._HEAD.unpack_from(p)[2] > 64
    want = get_codec("fq:-18:tx").decode(p, x.dtype, x.shape)
    assert np.array_equal(get_codec("fq:6").decode(p, x.dtype, x.shape), want)
    c = get_codec("fq:6")
    pc = get_codec("fq:-18:x").encode(x)  # per channel: one step for all channels (layout flag ONE_STEP)
    layout = fq._HEAD.unpack_from(pc)[3]
    assert layout & fq.ONE_STEP
    assert np.abs(c.decode(pc, x.dtype, x.shape) - x).max() <= 2 ** (-18 / 4) * 1.001
    good = get_codec("fq:6").encode(x)
    for bad in (_header(p, levels=fq.CTX_MAX_LEVELS + 1), _header(p, levels=3), p[:-8], p + b"\0" * 4,
                _header(pc, layout=layout & ~fq.ONE_STEP), pc[:_body_at(pc, x.shape[1]) - 1],
                _header(good, layout=fq._HEAD.unpack_from(good)[3] | fq.ONE_STEP)):
        with pytest.raises(CodecError):
            c.decode(bad, "float32", x.shape)
    rng = np.random.default_rng(12)
    tracemalloc.start()
    try:
        for _ in range(300):
            b = bytearray(p if _ % 2 else pc)
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(len(b)))] ^= int(rng.integers(1, 256))
            try:
                y = c.decode(bytes(b), "float32", x.shape)
            except CodecError:
                continue
            assert y.shape == x.shape and y.dtype == np.float32
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 6 * x.nbytes + (1 << 20)


@pytest.mark.parametrize("shape", [(1, 64, 26, 26), (2, 8, 30, 30), (4000,), (50, 80), (1, 2704, 80), (3, 1, 70, 70)])
@pytest.mark.parametrize("spec", ["fq:-12", "fq:-12:x", "fq:-12:tk"])
def test_step_mode_layouts(shape, spec):
    """Every shape (per channel where each channel has 64+ values, else per tensor; batches > 1) decodes
    from the payload alone within one step, through a fresh codec made from the numeric id."""
    x = leaky(shape, seed=len(shape))
    c = get_codec(spec)
    p = c.encode(x)
    y = get_codec(c.codec_id).decode(bytearray(p), "float32", list(shape))
    assert y.shape == x.shape and np.abs(y - x).max() <= 2 ** (-12 / 4) * 1.001
    assert len(p) < x.nbytes / 3


def _wide(shape=(1, 16, 32, 32), seed: int = 5) -> np.ndarray:
    """A wide-range tensor as at NanoDet's split 9: a dense bulk near 0 and sparse values up to ~100."""
    rng = np.random.default_rng(seed)
    x = _smooth(shape, seed)
    hot = rng.random(shape) < 0.02
    return np.where(hot, x + 100 * rng.random(shape).astype(np.float32), x).astype(np.float32)


@pytest.mark.parametrize("spec", ["fq:-14", "fq:-14:x", "fq:-14:t", "fq:-10:tx"])
def test_step_mode_keeps_the_step_asked_for_on_a_wide_range_tensor(spec):
    """More than 256 symbols: the step stays 2**(QP/4) (it widened to range/253 before the wide modes),
    the error stays under one step, and the wide ANS (W) or the context coder with 16-bit symbols keeps
    the rate near the entropy (well below the 16-bit zstd stream)."""
    x = _wide()
    c = get_codec(spec)
    p = c.encode(x)
    mode, levels, layout = p[2:3], fq._HEAD.unpack_from(p)[2], fq._HEAD.unpack_from(p)[3]
    step = _step(p, 1 if layout & 1 == 0 else x.shape[1])
    assert 256 < levels <= fq.STEP_MAX_LEVELS
    assert 2 ** (c.qp / 4) <= step <= 2 ** (c.qp / 4) * 1.001
    assert mode == (fq.MODE_CTX if "x" in spec else fq.MODE_WIDE), mode
    y = get_codec(c.codec_id).decode(p, x.dtype, x.shape)
    assert np.abs(y - x).max() <= step * 1.0001
    import zstandard

    q = np.rint(x / step).astype(np.int64)
    z16 = zstandard.ZstdCompressor(level=fq.ZSTD_LEVEL).compress((q - q.min()).astype("<u2").tobytes())
    assert len(p) < 0.9 * len(z16), (len(p), len(z16))


def test_wide_payloads_refuse_hostile_changes_within_a_memory_bound():
    import zstandard

    x = _wide()
    p = get_codec("fq:-14").encode(x)
    assert p[2:3] == fq.MODE_WIDE
    body = _body_at(p, x.shape[1])
    (packed_len,) = struct.unpack_from("<I", p, body)
    counts = np.frombuffer(zstandard.ZstdDecompressor().decompress(p[body + 4:body + 4 + packed_len]), "<u4").copy()
    more = counts.copy()
    more[1] += 10
    z = zstandard.ZstdCompressor().compress(more.astype("<u4").tobytes())
    short = zstandard.ZstdCompressor().compress(counts[:-1].astype("<u4").tobytes())
    c = get_codec("fq:6")
    levels = fq._HEAD.unpack_from(p)[2]
    for bad in (_header(p, levels=levels - 1), _header(p, levels=256), _header(p, levels=4097), p[:-4], p[:-1],
                p + b"\0" * 4, p[:body] + struct.pack("<I", 10**9) + p[body + 4:],
                p[:body] + struct.pack("<I", len(z)) + z + p[body + 4 + packed_len:],
                p[:body] + struct.pack("<I", len(short)) + short + p[body + 4 + packed_len:],
                p[:body + 2], _header(p, mode=fq.MODE_ANS)):
        with pytest.raises(CodecError):
            c.decode(bad, "float32", x.shape)
    rng = np.random.default_rng(13)
    tracemalloc.start()
    try:
        for _ in range(200):
            b = bytearray(p)
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(len(b)))] ^= int(rng.integers(1, 256))
            try:
                y = c.decode(bytes(b), "float32", x.shape)
            except CodecError:
                continue
            assert y.shape == x.shape and y.dtype == np.float32
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 6 * x.nbytes + (1 << 20)
