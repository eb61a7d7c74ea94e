"""fq's order-0 entropy coders: symbols packed several to a byte (for zstd), and ANS under one table.

Why apart from fq.py: each coder and its decoder's checks read together. Every table is checked against
the symbol count the tensor announces before a symbol is decoded. Terms: *ANS table* (counts of each
symbol, the categorical model of constriction's ANS coder), *wide table* (exactly `levels` counts, sent
as one zstd frame: most of a wide alphabet's counts are zero).
"""

from __future__ import annotations

import struct

import numpy as np

from splitinfer.common.codecs import CodecError

NAME = "fq"  # the codec whose payloads these are (fq.py), named by every error
ANS_MAX_LEVELS = 256  # ANS tables up to 256 entries
PACK_MAX_WIDTH = 4  # symbols of 2, 3, 4 bits: 4, 2, 2 to a byte
_TABLE = struct.Struct("<H")
_WIDE_TABLE = struct.Struct("<I")  # W mode: bytes of the zstd-packed table


# -- packing: several symbols per byte, so zstd's Huffman stage codes pairs (or quads) of neighbours ----


def pack_symbols(q: np.ndarray, bits: int) -> np.ndarray:
    """8 // bits symbols per byte, first symbol in the high bits; the last byte padded with zeros."""
    per = 8 // bits
    pad = -q.size % per
    qq = (np.concatenate([q, np.zeros(pad, q.dtype)]) if pad else q).astype(np.uint8, copy=False).reshape(-1, per)
    out = qq[:, 0] << np.uint8(bits * (per - 1))
    for j in range(1, per):
        out |= qq[:, j] << np.uint8(bits * (per - 1 - j))
    return out


def unpack_symbols(packed: np.ndarray, bits: int, n_sym: int) -> np.ndarray:
    """One 1-D table lookup per byte: the table's rows viewed as one uint16 (uint32) each."""
    table = _unpack_table(bits)
    rows = table.view(np.uint16 if table.shape[1] == 2 else np.uint32).reshape(-1)
    return np.take(rows, packed).view(np.uint8)[:n_sym]


_UNPACK: dict[int, np.ndarray] = {}


def _unpack_table(bits: int) -> np.ndarray:
    """byte -> its 8 // bits symbols (a 256-row lookup table, one gather per byte)."""
    table = _UNPACK.get(bits)
    if table is None:
        per = 8 // bits
        shifts = (bits * (per - 1 - np.arange(per))).astype(np.uint8)
        table = (np.arange(256, dtype=np.uint8)[:, None] >> shifts[None, :]) & np.uint8((1 << bits) - 1)
        _UNPACK[bits] = table
    return table


# -- ANS (constriction) --------------------------------------------------------------------------------


def ans_model(counts: np.ndarray):
    import constriction

    p = counts.astype(np.float64) / counts.sum()
    if p.size < 2:  # constriction needs two symbols at least; the second is never coded
        p = np.append(p, 0.0)
    return constriction.stream.model.Categorical(p, perfect=False)


def ans_encode(q: np.ndarray, counts: np.ndarray) -> np.ndarray:
    import constriction

    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(q.astype(np.int32), ans_model(counts))
    return coder.get_compressed()


def ans_symbols(body, n_sym: int) -> np.ndarray:
    """Symbols of an ANS body (table + words), checking the table against the announced count."""
    if len(body) < _TABLE.size:
        raise CodecError(f"{NAME}: ANS body of {len(body)} bytes has no table")
    (t,) = _TABLE.unpack_from(body)
    if not 1 <= t <= ANS_MAX_LEVELS:
        raise CodecError(f"{NAME}: ANS table claims {t} symbols (1..{ANS_MAX_LEVELS})")
    if len(body) < _TABLE.size + 4 * t:
        raise CodecError(f"{NAME}: ANS body of {len(body)} bytes ends inside its {t}-entry table")
    counts = np.frombuffer(body, "<u4", t, _TABLE.size).astype(np.int64)
    if int(counts.sum()) != n_sym or n_sym == 0:
        raise CodecError(f"{NAME}: ANS table counts {int(counts.sum())} symbols but the tensor needs {n_sym}")
    return ans_words(body[_TABLE.size + 4 * t:], counts, n_sym).astype(np.uint8 if t <= 256 else np.uint16, copy=False)


def wide_ans_symbols(body, n_sym: int, levels: int, zstd_d) -> np.ndarray:
    """Symbols of a W body (zstd-packed table of exactly `levels` counts + words), as uint16."""
    view = memoryview(body)
    if view.nbytes < _WIDE_TABLE.size:
        raise CodecError(f"{NAME}: wide ANS body of {view.nbytes} bytes has no table")
    (packed_len,) = _WIDE_TABLE.unpack_from(view)
    if view.nbytes < _WIDE_TABLE.size + packed_len:
        raise CodecError(f"{NAME}: wide ANS body ends inside its table")
    raw = zstd_table(view[_WIDE_TABLE.size:_WIDE_TABLE.size + packed_len], 4 * levels, zstd_d, "wide ANS table")
    counts = np.frombuffer(raw, "<u4").astype(np.int64)
    if int(counts.sum()) != n_sym or n_sym == 0:
        raise CodecError(f"{NAME}: wide ANS table counts {int(counts.sum())} symbols but the tensor needs {n_sym}")
    return ans_words(view[_WIDE_TABLE.size + packed_len:], counts, n_sym).astype(np.uint16, copy=False)


def ans_words(words, counts: np.ndarray, n_sym: int) -> np.ndarray:
    """`n_sym` symbols decoded from ANS words under the table `counts`; the stream must end exactly."""
    if len(words) % 4 or len(words) > 4 * n_sym + 64:
        raise CodecError(f"{NAME}: ANS stream of {len(words)} bytes is not a plausible word stream")
    import constriction

    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, "<u4").astype(np.uint32))
        q = coder.decode(ans_model(counts), n_sym)
    except Exception as exc:  # constriction raises on streams that do not decode
        raise CodecError(f"{NAME}: corrupt ANS stream ({type(exc).__name__}: {str(exc)[:100]})") from None
    if not coder.is_empty():
        raise CodecError(f"{NAME}: ANS stream holds more than the announced {n_sym} symbols")
    return q


def zstd_table(packed, need: int, zstd_d, what: str) -> bytes:
    """A zstd frame of exactly `need` bytes (its content size checked before decompressing)."""
    import zstandard

    try:
        size = zstandard.frame_content_size(packed)
        if size != need:
            raise CodecError(f"{NAME}: {what} holds {size} bytes, {need} expected")
        return zstd_d.decompress(packed, max_output_size=need, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise CodecError(f"{NAME}: corrupt {what} ({exc})") from None


def ans_body(q: np.ndarray, counts: np.ndarray) -> bytes:
    """An A body: T u16, T counts u32, the ANS words (u32)."""
    words = ans_encode(q, counts)
    return _TABLE.pack(counts.size) + counts.astype("<u4").tobytes() + words.astype("<u4").tobytes()


def wide_ans_body(q: np.ndarray, counts: np.ndarray, zstd_c) -> bytes:
    """A W body: table bytes u32, one zstd frame of the `levels` counts (u32), the ANS words (u32)."""
    packed = zstd_c.compress(counts.astype("<u4").tobytes())
    return _WIDE_TABLE.pack(len(packed)) + packed + ans_encode(q, counts).astype("<u4").tobytes()
