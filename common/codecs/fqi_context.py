"""fqi's temporal context coder (entropy mode T): a predicted frame's residuals coded under contexts that the
frame before gives.

Why: where a scene moved in one frame it mostly moves in the next (people walk on), and where it stood
still it mostly stays: the size of last frame's residuals around a value predicts the size of this one's.
Measured on NanoDet's split 74, 25 predicted vtest.avi frames: 11.5 / 14 / 16 % fewer bits than one table
over every residual (QP -26 / -22 / -14; tables counted), where one table per channel saves 4 %. The
decoder holds the previous residuals, so it knows every context before it decodes a symbol and decodes
each class's stream at once (no symbol-by-symbol adaptation).

Terms:
- *activity* A: min(|d|, ACT_CAP) of the previous predicted frame's residual d at each value (uint8; zero
  everywhere after a keyframe, where the reference's sign is the only context), kept alike by encoder and
  decoder;
- *planes*: 4-D tensors (N, C, H, W) are N x C planes of H x W; other shapes are one plane of one row;
- *context sum*: A at the value counted twice plus its 8 neighbours in its plane (zero beyond the edges);
- *class*: 2 x min(floor(log2(1 + context sum)), ACT_CLASSES - 1), plus 1 where the reference (the value
  the residual is added to) is negative: features after a leaky ReLU change ten times less below zero
  (5-7 % fewer bits on top of the activity, split 74). One table per class;
- *held tables*: the counts of the last frame coded in mode T (per class, over residual values, with the
  vmin they start at), kept alike by encoder and decoder; dropped at a keyframe and after a predicted frame
  in another mode. The statistics of consecutive frames differ little, so a frame may be coded under the
  held tables instead of sending its own (2 % of the bytes at split 74) where that is estimated smaller.

Body: table bytes u32 | zstd frame of CLASSES x levels counts (u32) | ANS words (u32), the classes' streams
in class order; table bytes 0: no tables, the held ones (re-based to this frame's vmin and levels; a
residual they never saw keeps the ANS coder's least probability). Sent tables are checked against the
classes the decoder computed before a symbol is decoded.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np

from splitinfer.common.codecs import CodecError, numel
from splitinfer.common.codecs.fq_ans import ans_model, zstd_table
from splitinfer.common.codecs.fq_context import entropy_bytes

NAME = "fqi"
MODE = b"T"
ACT_CLASSES = 8
CLASSES = 2 * ACT_CLASSES
ACT_CAP = 15  # 10 x 15 = 150: a context sum fits a uint8
_HEAD = struct.Struct("<I")
UNSEEN_BITS = 24  # what a residual its table never saw costs (constriction's least probability, 2**-24)
_CLASS_OF = 2 * np.minimum(np.log2(1 + np.arange(256)).astype(np.uint8), ACT_CLASSES - 1).astype(np.uint8)


def planes(shape: tuple) -> tuple[int, int, int]:
    """(planes, rows, columns) the contexts are taken in (see the terms)."""
    if len(shape) == 4:
        return shape[0] * shape[1], shape[2], shape[3]
    return 1, 1, numel(shape)


def activity(d: np.ndarray) -> np.ndarray:
    """A (uint8, d's shape) of residuals d (integers held in any numeric dtype)."""
    return np.minimum(np.abs(d), ACT_CAP).astype(np.uint8)


def classes(act: np.ndarray, grid: tuple[int, int, int], ref: np.ndarray) -> np.ndarray:
    """The class of every value (uint8, flat) from the previous frame's activity and the reference."""
    a = act.reshape(grid)
    p = np.pad(a, ((0, 0), (1, 1), (1, 1)))
    rows = p[:, :-2] + p[:, 1:-1]  # the 3x3 sum in two passes of three (rows, then columns)
    rows += p[:, 2:]
    w = grid[2]
    s = rows[:, :, :w] + rows[:, :, 1:w + 1]
    s += rows[:, :, 2:]
    s += a  # the value's own activity counts twice
    cls = np.take(_CLASS_OF, s).reshape(-1)
    cls += ref.reshape(-1) < 0
    return cls


def coded_classes(act: np.ndarray | None, ref: np.ndarray, shape: tuple, coded: np.ndarray) -> np.ndarray:
    """The class of every value of the coded units (flat), `coded` one flag per unit of the reference's
    rows; `act` None: no activity yet (after a keyframe), the reference's sign is the only context."""
    act = np.zeros(ref.size, np.uint8) if act is None else act
    cls = classes(act, planes(shape), ref).reshape(coded.size, -1)
    return (cls if coded.all() else cls[coded]).reshape(-1)


class ByClass(NamedTuple):
    """Symbols in class order (class 0's in tensor order, then class 1's, ...), the order that gives them
    from the tensor's, and where each class's run ends."""
    symbols: np.ndarray
    order: np.ndarray
    ends: np.ndarray

    @classmethod
    def of(cls_, sym: np.ndarray, cls: np.ndarray) -> "ByClass":
        order = np.argsort(cls, kind="stable")
        return cls_(sym[order].astype(np.int32, copy=False), order, np.cumsum(np.bincount(cls, minlength=CLASSES)))

    def runs(self):
        """(class, start, end) of every class with values."""
        start = 0
        for k, end in enumerate(self.ends.tolist()):
            if end > start:
                yield k, start, end
            start = end

    def counts(self, levels: int) -> np.ndarray:
        """CLASSES x levels counts of the symbols."""
        out = np.zeros((CLASSES, levels), np.int64)
        for k, start, end in self.runs():
            out[k] = np.bincount(self.symbols[start:end], minlength=levels)
        return out


class Held(NamedTuple):
    """The held tables: counts (CLASSES x levels) of residual values vmin .. vmin + levels - 1."""
    vmin: int
    counts: np.ndarray


def plan(by: ByClass, levels: int, vmin: int, held: Held | None):
    """(estimated body bytes, the tables to code with, whether they are sent, this frame's own counts) of
    symbols (residual - vmin) in class order: its own tables, or the held ones where smaller."""
    counts = by.counts(levels)
    estimate = sum(entropy_bytes(t) for t in counts) + 2 * int((counts > 0).sum()) + 16
    if held is not None:
        old = rebase(held, vmin, levels)
        reuse = _cross_entropy_bytes(counts, old) + 16
        if reuse < estimate:
            return reuse, old, False, counts
    return estimate, counts, True, counts


def rebase(held: Held, vmin: int, levels: int) -> np.ndarray:
    """The held counts over this frame's residual values vmin .. vmin + levels - 1 (zero where never seen)."""
    out = np.zeros((CLASSES, levels), np.int64)
    lo, hi = max(vmin, held.vmin), min(vmin + levels, held.vmin + held.counts.shape[1])
    if lo < hi:
        out[:, lo - vmin:hi - vmin] = held.counts[:, lo - held.vmin:hi - held.vmin]
    return out


def _cross_entropy_bytes(counts: np.ndarray, model: np.ndarray) -> float:
    """Bytes of `counts` coded under the tables `model` (an entry never seen: UNSEEN_BITS)."""
    total = 0.0
    for c, m in zip(counts, model):
        if not c.any():
            continue
        seen = m > 0
        if not seen.any():
            return float("inf")
        q = m[seen] / m.sum()
        total += float(-(c[seen] * np.log2(q)).sum()) + UNSEEN_BITS * float(c[~seen].sum())
    return total / 8


def plain_estimate(tables: np.ndarray, zero: int) -> float:
    """Estimated bytes of the same residuals without contexts: a significance map at its binary entropy and
    the non-zero residuals (symbol `zero` stands for 0) under one table."""
    hist = tables.sum(axis=0)
    n = int(hist.sum())
    zeros = int(hist[zero]) if 0 <= zero < hist.size else 0
    if 0 <= zero < hist.size:
        hist = hist.copy()
        hist[zero] = 0
    p = (n - zeros) / n if n else 0.0
    map_bits = 0.0 if p in (0.0, 1.0) else -n * (p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return entropy_bytes(hist) + map_bits / 8


def encode(by: ByClass, tables: np.ndarray, send: bool, zstd_c) -> bytes:
    import constriction

    coder = constriction.stream.stack.AnsCoder()
    for k, start, end in reversed(list(by.runs())):  # a stack: the last coded is the first decoded
        coder.encode_reverse(by.symbols[start:end], ans_model(tables[k]))
    packed = zstd_c.compress(tables.astype("<u4").tobytes()) if send else b""
    return _HEAD.pack(len(packed)) + packed + coder.get_compressed().astype("<u4").tobytes()


def decode(body, cls: np.ndarray, levels: int, vmin: int, held: Held | None, zstd_d):
    """(the symbols (int32, one per class entry), their counts per class) of a T body: under its own tables
    (checked against the classes; they are its counts) or the held ones (which must exist)."""
    view = memoryview(body).cast("B")
    if view.nbytes < _HEAD.size:
        raise CodecError(f"{NAME}: temporal-context body of {view.nbytes} bytes has no header")
    (packed_len,) = _HEAD.unpack_from(view)
    if view.nbytes < _HEAD.size + packed_len:
        raise CodecError(f"{NAME}: temporal-context body ends inside its tables")
    sizes = np.bincount(cls, minlength=CLASSES)
    if packed_len:
        tables = _sent_tables(view[_HEAD.size:_HEAD.size + packed_len], sizes, levels, zstd_d)
    elif held is None:
        raise CodecError(f"{NAME}: temporal-context body codes under held tables, and none are held (the frame "
                         "before was not coded in mode T)")
    else:
        tables = rebase(held, vmin, levels)
        empty = [k for k in range(CLASSES) if sizes[k] and not tables[k].any()]
        if empty:
            raise CodecError(f"{NAME}: held temporal-context table {empty[0]} is empty and {int(sizes[empty[0]])} "
                             "values fall in its class")
    by = _symbols(view[_HEAD.size + packed_len:], cls, sizes, tables)
    out = np.empty(cls.size, np.int32)
    out[by.order] = by.symbols
    return out, tables if packed_len else by.counts(levels)


def _sent_tables(packed, sizes: np.ndarray, levels: int, zstd_d) -> np.ndarray:
    raw = zstd_table(packed, CLASSES * levels * 4, zstd_d, f"temporal-context tables of {levels} levels")
    tables = np.frombuffer(raw, "<u4").reshape(CLASSES, levels).astype(np.int64)
    for k in range(CLASSES):
        if int(tables[k].sum()) != int(sizes[k]):
            raise CodecError(f"{NAME}: temporal-context table {k} counts {int(tables[k].sum())} residuals, the "
                             f"previous frame gives {int(sizes[k])} values that class")
    return tables


def _symbols(words, cls: np.ndarray, sizes: np.ndarray, tables: np.ndarray) -> ByClass:
    import constriction

    if words.nbytes % 4 or words.nbytes > 4 * cls.size + 64 * CLASSES:
        raise CodecError(f"{NAME}: temporal-context ANS stream of {words.nbytes} bytes is not a plausible "
                         "word stream")
    by = ByClass(np.empty(cls.size, np.int32), np.argsort(cls, kind="stable"), np.cumsum(sizes))
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, "<u4").astype(np.uint32))
        for k, start, end in by.runs():
            by.symbols[start:end] = coder.decode(ans_model(tables[k]), end - start)
        if not coder.is_empty():
            raise CodecError(f"{NAME}: temporal-context ANS stream holds more than the announced residuals")
    except CodecError:
        raise
    except Exception as exc:  # constriction refuses streams that do not decode
        raise CodecError(f"{NAME}: corrupt temporal-context ANS stream ({type(exc).__name__}: "
                         f"{str(exc)[:100]})") from None
    if int(by.symbols.max(initial=0)) >= tables.shape[1]:
        raise CodecError(f"{NAME}: a residual symbol beyond the {tables.shape[1]} levels")
    return by
