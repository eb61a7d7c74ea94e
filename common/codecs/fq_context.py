"""fq's context coder (option `x`): ANS under spatial contexts, a checkerboard of pilot positions and their neighbours.

Why apart from fq.py: the plan, the coder and its decoder are one algorithm (described below) with its own
body layout; fq.py only chooses it when its estimate wins. Terms: *pilots* (positions with h + w even),
*context class* (the sum of a position's four pilot neighbours, cut at the tensor's own quantiles),
*channel group* (channels ranked by their mean symbol into G groups, one set of tables each).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np

from splitinfer.common.codecs import CodecError
from splitinfer.common.codecs.fq_ans import NAME, ans_model, zstd_table
from splitinfer.common.codecs.fq_quant import MAX_LEVELS

CTX_CLASSES = 8  # context classes of the checkerboard's second half (sum of the 4 neighbours)
CTX_MAX_LEVELS = MAX_LEVELS  # context tables up to 4096 entries (zstd-packed: mostly zeros)
CTX_MIN_SYMBOLS = 4096
_CTX_HEAD = struct.Struct("<BBI")  # channel groups G, context classes, bytes of the zstd-packed tables


# -- ANS with spatial contexts ------------------------------------------------------------------------
#
# The symbols of each (batch, channel) plane are split like a checkerboard. Anchors ((h + w) even) are
# coded first, one table per channel group (channels ranked by their mean symbol into G groups); the
# other half is coded with one table per (group, context class), the class being the sum of the four
# pilot neighbours (mirrored at the border) cut at the tensor's own quantiles of that sum (sent as
# thresholds, so each class holds about 1/8 of the symbols), so the decoder knows every context before
# it needs it and decodes whole streams at once. Body: G u8 | classes u8 | table bytes u32 |
# thresholds (classes - 1) u16 | group id per channel u8 | zstd frame of the tables (G x (1 + classes)
# x levels counts, u32) | ANS words (u32).


class _CtxPlan:
    __slots__ = ("grid", "levels", "group", "order", "bounds", "streams", "tables", "thresholds", "estimate")


def _pilot_mask(h: int, w: int) -> np.ndarray:
    return ((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2) == 0


def _neighbour_sums(q4: np.ndarray) -> np.ndarray:
    """Sum of every position's 4 neighbours (mirrored at the edges)."""
    p = np.pad(q4, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    total = p[:, :, :-2, 1:-1].astype(np.uint16)
    total += p[:, :, 2:, 1:-1]
    total += p[:, :, 1:-1, :-2]
    total += p[:, :, 1:-1, 2:]
    return total


def _thresholds(sums: np.ndarray, levels: int) -> np.ndarray:
    """CTX_CLASSES - 1 cut points at the quantiles of the neighbour sums (non-decreasing)."""
    cdf = np.cumsum(np.bincount(sums.reshape(-1), minlength=4 * (levels - 1) + 1))
    goals = cdf[-1] * np.arange(1, CTX_CLASSES) / CTX_CLASSES
    return np.searchsorted(cdf, goals).astype(np.uint16)


def _class_table(thresholds: np.ndarray, levels: int) -> np.ndarray:
    """neighbour sum -> context class (how many cut points lie below it)."""
    return np.searchsorted(thresholds, np.arange(4 * (levels - 1) + 1), side="left").astype(np.uint8)


def _group_bounds(group: np.ndarray, groups: int):
    order = np.argsort(group, kind="stable")
    return order, np.searchsorted(group[order], np.arange(groups + 1))


def entropy_bytes(counts: np.ndarray) -> float:
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum() * total / 8)


def ctx_plan(q4: np.ndarray, levels: int) -> _CtxPlan:
    """Streams and tables of the context coder for symbols shaped (N, C, H, W), with its size estimate."""
    n, c, h, w = q4.shape
    groups = int(max(1, min(8, c // 8, q4.size // 32768)))
    means = q4.mean(axis=(0, 2, 3))
    group = (np.argsort(np.argsort(means, kind="stable"), kind="stable") * groups // c).astype(np.uint8)
    order, bounds = _group_bounds(group, groups)
    qp = q4[:, order]
    pilot = _pilot_mask(h, w)
    sums = _neighbour_sums(qp)
    thresholds = _thresholds(sums[..., ~pilot], levels)
    ctx = np.take(_class_table(thresholds, levels), sums)
    tables = np.zeros((groups, 1 + CTX_CLASSES, levels), np.uint32)
    streams = []
    for g in range(groups):
        a = qp[:, bounds[g]:bounds[g + 1]][..., pilot].reshape(-1)
        tables[g, 0] = np.bincount(a, minlength=levels)
        streams.append((a, g, 0))
    for g in range(groups):
        block = qp[:, bounds[g]:bounds[g + 1]][..., ~pilot].reshape(-1)
        cx = ctx[:, bounds[g]:bounds[g + 1]][..., ~pilot].reshape(-1)
        by_class = np.argsort(cx, kind="stable")
        sizes = np.bincount(cx, minlength=CTX_CLASSES)
        for k, part in enumerate(np.split(block[by_class], np.cumsum(sizes)[:-1])):
            tables[g, 1 + k] = np.bincount(part, minlength=levels)
            streams.append((part, g, 1 + k))
    plan = _CtxPlan()
    plan.grid, plan.levels, plan.group, plan.order, plan.bounds = q4.shape, levels, group, order, bounds
    plan.streams, plan.tables, plan.thresholds = streams, tables, thresholds
    nonzero = int((tables > 0).sum())
    plan.estimate = sum(entropy_bytes(t) for t in tables.reshape(-1, levels)) + 2 * nonzero + c + 16
    return plan


def ctx_encode(plan: _CtxPlan, zstd_c) -> bytes:
    import constriction

    coder = constriction.stream.stack.AnsCoder()
    for symbols, g, k in reversed(plan.streams):  # a stack: the last coded is the first decoded
        if symbols.size:
            coder.encode_reverse(symbols.astype(np.int32), ans_model(plan.tables[g, k]))
    packed = zstd_c.compress(plan.tables.astype("<u4").tobytes())
    head = _CTX_HEAD.pack(plan.tables.shape[0], CTX_CLASSES, len(packed))
    return (head + plan.thresholds.astype("<u2").tobytes() + plan.group.tobytes() + packed
            + coder.get_compressed().astype("<u4").tobytes())


def ctx_decode(body, grid: tuple[int, int, int, int], levels: int, zstd_d) -> np.ndarray:
    """Flat symbols (in channel order) of a context-coded body, every table checked against the grid.

    Named steps: the header (groups, classes, thresholds, each channel's group), the tables (checked
    against the symbol counts), the symbols (pilots first, then the rest under their contexts)."""
    view = memoryview(body)
    head = _read_ctx_header(view, grid[1], levels)
    tables, words = _read_ctx_tables(view, head, grid, levels, zstd_d)
    qp = _decode_ctx_symbols(words, head, tables, grid, levels)
    q4 = np.empty_like(qp)
    q4[:, head.order] = qp
    return q4.reshape(-1)


class _CtxHeader(NamedTuple):
    groups: int
    thresholds: np.ndarray
    group: np.ndarray  # each channel's group
    order: np.ndarray  # channels sorted by group
    bounds: np.ndarray  # group g holds order[bounds[g]:bounds[g + 1]]
    end: int  # where the packed tables start


def _read_ctx_header(view: memoryview, c: int, levels: int) -> _CtxHeader:
    if view.nbytes < _CTX_HEAD.size + 2 * (CTX_CLASSES - 1) + c:
        raise CodecError(f"{NAME}: context body of {view.nbytes} bytes ends inside its header")
    groups, classes, _ = _CTX_HEAD.unpack_from(view)
    if not 1 <= groups <= min(16, c) or classes != CTX_CLASSES:
        raise CodecError(f"{NAME}: context body claims {groups} groups and {classes} classes")
    pos = _CTX_HEAD.size
    thresholds = np.frombuffer(view, "<u2", CTX_CLASSES - 1, pos).astype(np.uint16)
    if (np.diff(thresholds.astype(np.int64)) < 0).any() or int(thresholds.max()) > 4 * (levels - 1):
        raise CodecError(f"{NAME}: context thresholds {thresholds.tolist()} are not ordered sums of 4 symbols")
    pos += 2 * (CTX_CLASSES - 1)
    group = np.frombuffer(view, np.uint8, c, pos)
    if int(group.max()) >= groups:
        raise CodecError(f"{NAME}: channel group {int(group.max())} is beyond the {groups} groups")
    order, bounds = _group_bounds(group, groups)
    return _CtxHeader(groups, thresholds, group, order, bounds, pos + c)


def _read_ctx_tables(view: memoryview, head: _CtxHeader, grid, levels: int, zstd_d):
    """(tables as int64 (G, 1 + classes, levels), the ANS words) with the word stream's length checked."""
    packed_len = _CTX_HEAD.unpack_from(view)[2]
    pos = head.end
    if view.nbytes < pos + packed_len:
        raise CodecError(f"{NAME}: context body ends inside its tables")
    groups = head.groups
    need = groups * (1 + CTX_CLASSES) * levels * 4
    raw = zstd_table(view[pos:pos + packed_len], need, zstd_d, f"context tables of {groups} groups")
    tables = np.frombuffer(raw, "<u4").reshape(groups, 1 + CTX_CLASSES, levels).astype(np.int64)
    words = view[pos + packed_len:]
    n, c, h, w = grid
    if words.nbytes % 4 or words.nbytes > 4 * n * c * h * w + 64 * groups * (1 + CTX_CLASSES):
        raise CodecError(f"{NAME}: context ANS stream of {words.nbytes} bytes is not a plausible word stream")
    return tables, words


def _decode_ctx_symbols(words, head: _CtxHeader, tables: np.ndarray, grid, levels: int) -> np.ndarray:
    """The symbols grouped by channel group (N, C, H, W): every group's pilots, then the other half by class."""
    import constriction

    n, c, h, w = grid
    bounds = head.bounds
    pilot = _pilot_mask(h, w)
    n_pilot = int(pilot.sum())
    sym = np.uint8 if levels <= 256 else np.uint16
    qp = np.zeros((n, c, h, w), sym)
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, "<u4").astype(np.uint32))
        for g in range(head.groups):
            count = n * int(bounds[g + 1] - bounds[g]) * n_pilot
            if int(tables[g, 0].sum()) != count:
                raise CodecError(f"{NAME}: pilot table of group {g} counts {int(tables[g, 0].sum())} symbols, "
                                 f"the group has {count}")
            if count:
                vals = coder.decode(ans_model(tables[g, 0]), count)
                qp[:, bounds[g]:bounds[g + 1]][..., pilot] = vals.reshape(n, -1, n_pilot)
        ctx = np.take(_class_table(head.thresholds, levels), _neighbour_sums(qp))
        for g in range(head.groups):
            cx = ctx[:, bounds[g]:bounds[g + 1]][..., ~pilot].reshape(-1)
            sizes = np.bincount(cx, minlength=CTX_CLASSES)
            vals = np.empty(cx.size, sym)
            for k in range(CTX_CLASSES):
                if int(tables[g, 1 + k].sum()) != sizes[k]:
                    raise CodecError(f"{NAME}: context table ({g}, {k}) counts {int(tables[g, 1 + k].sum())} "
                                     f"symbols, the decoded pilots give {int(sizes[k])}")
                if sizes[k]:
                    vals[cx == k] = coder.decode(ans_model(tables[g, 1 + k]), int(sizes[k]))
            qp[:, bounds[g]:bounds[g + 1]][..., ~pilot] = vals.reshape(n, -1, h * w - n_pilot)
        if not coder.is_empty():
            raise CodecError(f"{NAME}: context ANS stream holds more than the announced symbols")
    except CodecError:
        raise
    except Exception as exc:  # constriction refuses streams that do not decode
        raise CodecError(f"{NAME}: corrupt context ANS stream ({type(exc).__name__}: {str(exc)[:100]})") from None
    return qp
