"""Numbers in codec specs are parsed strictly (common/codecs/params.py), and blosc2's `:crc` option turns a
payload mutated after encoding into a CodecError (a plain blosc2 frame has no checksum)."""

from __future__ import annotations

import numpy as np
import pytest

from splitinfer.common.codecs import CodecError, get_codec
from splitinfer.common.codecs.params import parse_decimal, parse_int
from splitinfer.common.core.errors import UserError

LOOSE = ["fq:1_0", "fq:4_0", "fq:-1_4", "fq:4e0", "fq:inf", "fq:nan", "fq:4.", "fq:٤", "zstd:1_0", "zstd:0x3",
         "zstd:3.0", "nnc:-3_8", "nnc:-38.0", "blosc2:lz4:1_0", "blosc2:lz4:+5", "blosc2:lz4:٥"]


@pytest.mark.parametrize("spec", LOOSE)
def test_loose_numbers_in_specs_are_refused(spec):
    with pytest.raises(UserError, match="not an integer|not a number|unknown codec|printable ASCII"):
        get_codec(spec)


@pytest.mark.parametrize("spec, want", [("fq:4", "fq:4"), ("fq:4.5", "fq:4.5"), ("fq:-14", "fq:-14"),
                                        ("zstd:10", "zstd:10"), ("nnc:-38", "nnc:-38"),
                                        ("blosc2:lz4:5", "blosc2:lz4:5:shuffle")])
def test_plain_numbers_still_parse(spec, want):
    assert get_codec(spec).spec.startswith(want)


def test_the_parser_itself():
    assert parse_int("-38", "x") == -38 and parse_decimal("4.5", "x") == 4.5 and parse_decimal("10", "x") == 10
    for bad in ("1_0", " 1", "1 ", "+1", "", "-", "1e3", "١", "1.5"):
        with pytest.raises(UserError, match="x .* is not an integer"):
            parse_int(bad, "x")
    for bad in ("1_0", ".5", "5.", "1e1", "inf", "nan", "+4", "4..5", "4.5.1"):
        with pytest.raises(UserError, match="is not a number"):
            parse_decimal(bad, "x")


def _mutations(payload: bytes, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        b = bytearray(payload)
        b[int(rng.integers(len(b)))] ^= int(rng.integers(1, 256))
        yield bytes(b)


def _accepted(codec, payloads, arr) -> int:
    ok = 0
    for p in payloads:
        try:
            codec.decode(p, arr.dtype, arr.shape)
            ok += 1
        except CodecError:
            pass
    return ok


def test_blosc2_crc_refuses_every_mutated_payload_where_the_plain_frame_does_not():
    arr = np.random.default_rng(1).random((4, 64, 8)).astype(np.float32)
    plain, checked = get_codec("blosc2"), get_codec("blosc2:zstd:1:shuffle:crc")
    assert checked.codec_id == 5361 and get_codec(5361).spec == checked.spec == "blosc2:zstd:1:shuffle:crc"
    payload = checked.encode(arr)
    assert np.array_equal(checked.decode(payload, arr.dtype, arr.shape), arr)
    assert len(payload) == len(plain.encode(arr)) + 4
    plain_ok = _accepted(plain, _mutations(plain.encode(arr), 200), arr)
    checked_ok = _accepted(checked, _mutations(payload, 200), arr)
    print(f"mutated blosc2 frames decoded without error: plain {plain_ok}/200, with :crc {checked_ok}/200")
    assert plain_ok > 0  # what the option is for: the plain frame has no checksum
    assert checked_ok == 0
    with pytest.raises(CodecError, match="CRC-32 mismatch"):
        checked.decode(payload[:-1] + bytes([payload[-1] ^ 1]), arr.dtype, arr.shape)
    with pytest.raises(CodecError, match="no room for its CRC-32"):
        checked.decode(b"ab", arr.dtype, arr.shape)


@pytest.mark.parametrize("spec", ["blosc2:lz4::crc", "float16+blosc2:lz4:5:bitshuffle:crc", "fq:4+blosc2:zstd::noshuffle:crc", "blosc2:crc"])
def test_blosc2_crc_in_chains_and_empty_tensors(spec):
    codec = get_codec(spec)
    arr = np.linspace(-1, 1, 3000, dtype=np.float32).reshape(3, 1000)
    out = codec.decode(codec.encode(arr), arr.dtype, arr.shape)
    assert out.shape == arr.shape and (codec.lossless is False or np.array_equal(out, arr))
    empty = np.zeros((0, 4), np.float32)
    assert codec.decode(codec.encode(empty), empty.dtype, empty.shape).shape == (0, 4)
