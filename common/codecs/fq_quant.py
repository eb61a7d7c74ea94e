"""fq's quantiser: each channel's range or the step mode's one step, symbols, side information and back.

Why apart from fq.py: the codec (spec, ids, payload layout) reads in one place, the arithmetic of the
quantiser in another. Terms as in fq.py: *layout*, *range*, *step mode*, *constant channel*; *levels*
(the alphabet: symbols 0..levels-1); *side information* (each channel's lo and step, float16 when they fit).
"""

from __future__ import annotations

import numpy as np

from splitinfer.common.codecs import numel

MIN_LEVELS, MAX_LEVELS = 4, 4096
STEP_MAX_LEVELS = MAX_LEVELS  # step mode: the step widens only when a tensor would need more symbols
# (it was 256 until the wide modes: at NanoDet's split 9 that widened fq:-14's step on wide-range tensors)
MIN_CHANNEL_VALUES = 64  # per channel only when each channel has this many values (side info <= 1 bit/value)
HIST_BINS = 128  # histogram bins per channel for the clip search (8x that per tensor)
LADDER = np.array([1.0, 0.85, 0.7, 0.58, 0.48, 0.4, 0.33, 0.27, 0.22, 0.18, 0.14, 0.11], np.float32)


def channel_ranges(x: np.ndarray, per_tensor: bool):
    """(min, max) per channel and the tensor viewed as (N, C, R): C = axis 1 when per channel applies."""
    if not per_tensor and x.ndim >= 3 and x.shape[1] >= 2 and x.size // x.shape[1] >= MIN_CHANNEL_VALUES:
        view = x.reshape(x.shape[0], x.shape[1], -1)
    else:
        view = x.reshape(1, 1, -1)
    with np.errstate(invalid="ignore"):
        cmin = view.min(axis=(0, 2))
        cmax = view.max(axis=(0, 2))
    return cmin, cmax, view


def symbol_grid(x: np.ndarray, const: np.ndarray, view: np.ndarray):
    """(N, kept channels, H, W) where the spatial context coder applies, else None."""
    if x.ndim == 4 and x.shape[2] >= 2 and x.shape[3] >= 2 and not const.all():
        kept = int((~const).sum()) if view.shape[1] > 1 else x.shape[1]
        return (x.shape[0], kept, x.shape[2], x.shape[3])
    return None


def step_size(qp: int, lo: float, hi: float) -> float | None:
    """2**(QP/4) rounded up to a float16 value where one holds it, widened so that the tensor's [lo, hi]
    needs at most STEP_MAX_LEVELS symbols; None when no finite float32 step does."""
    step = 2.0 ** (qp / 4)
    with np.errstate(over="ignore", invalid="ignore"):
        width = np.float64(hi) - np.float64(lo)
        step = max(step, float(width) / (STEP_MAX_LEVELS - 3))
        s16 = np.float16(step)
        if np.isfinite(s16) and s16 >= np.finfo(np.float16).tiny:
            if float(s16) < step:
                s16 = np.nextafter(s16, np.float16(np.inf))
            step = float(s16)
        else:
            s32 = np.float32(step)
            if float(s32) < step:
                s32 = np.nextafter(s32, np.float32(np.inf))
            step = float(s32)
        top = np.float32(float(width) + 3 * step)  # the decoder's largest q * step
    if not (np.isfinite(step) and step > 0 and np.isfinite(top)):
        return None
    return step


def step_quantise(view: np.ndarray, step: float) -> np.ndarray:
    """round(x / step) as int32. No dead zone: rounding toward zero (|q| = floor(|x|/step + 0.375))
    saved 4-7 % of the bits on NanoDet but cost 2-7 dB of output PSNR and up to 2 points of relative mAP
    (the zeroed small activations bias what Part II sees), a worse trade than a coarser step."""
    t = view * np.float32(1 / step)
    np.rint(t, out=t)
    return t.astype(np.int32)


def unbiased_offsets(view: np.ndarray, qi: np.ndarray, const: np.ndarray, base: int, step: float):
    """(lo, half): per channel, base * step plus the mean rounding error x - q * step of the channel, so
    that each channel comes back with its own mean (a constant channel: its mean); float16 when that moves
    no offset by more than step/64. Measured on NanoDet (split 46, vtest): 4-6 dB more output PSNR and
    up to 4 points more relative mAP than the plain grid q * step at 0.2-1.7 bits per element (PSNR
    BD-rate against NNC +13 % -> -14 %): rounding the many small activations near 0 shifts each
    channel's mean, and Part II sees that shift."""
    mean_x = view.mean(axis=(0, 2), dtype=np.float64)
    mean_q = qi.mean(axis=(0, 2), dtype=np.float64)
    lo = np.where(const, mean_x, base * step + (mean_x - mean_q * step)).astype(np.float32)
    with np.errstate(over="ignore"):
        lo16 = lo.astype(np.float16).astype(np.float32)
        half = bool(np.isfinite(lo16).all() and np.float32(np.float16(step)) == np.float32(step)
                    and step >= np.finfo(np.float16).tiny and (np.abs(lo16 - lo) <= step / 64).all())
    return (lo16 if half else lo), half


def clip_range(view: np.ndarray, cmin: np.ndarray, cmax: np.ndarray, levels: int):
    """Per channel [lo, hi] minimising the estimated MSE over the whole tensor.

    One pass bins every value into HIST_BINS bins of its channel's [min, max]; for each candidate
    range (the top shrinks along LADDER with lo = min, then the bottom with the best top) the error
    is the granular error step**2/12 per value inside plus the squared distance of the clipped values,
    both read off the histogram (bin centres). Rare large activations are counted, not sampled away."""
    n, c, r = view.shape
    bins = HIST_BINS if c > 1 else 8 * HIST_BINS
    width = cmax - cmin
    scale = np.where(width > 0, bins / np.where(width > 0, width, 1), 0).astype(np.float32)
    t = view - cmin[None, :, None]
    t *= scale[None, :, None]
    idx = t.astype(np.int32)
    np.minimum(idx, bins - 1, out=idx)
    if c > 1:
        idx += (np.arange(c, dtype=np.int32) * bins)[None, :, None]
    hist = np.bincount(idx.reshape(-1), minlength=c * bins).reshape(c, bins).astype(np.float32)
    centres = cmin[:, None] + (np.arange(bins, dtype=np.float32) + 0.5)[None, :] * (width / bins)[:, None]
    total = float(n * r)
    his = cmin[None, :] + LADDER[:, None] * width[None, :]  # (A, C)
    over = np.square(np.maximum(centres[None] - his[:, :, None], 0))  # (A, C, B)
    err = (over * hist[None]).sum(axis=2) + np.square((his - cmin[None, :]) / (levels - 1)) / 12 * total
    hi = his[np.argmin(err, axis=0), np.arange(c)]
    los = hi[None, :] - LADDER[:, None] * (hi - cmin)[None, :]
    under = np.square(np.maximum(los[:, :, None] - centres[None], 0))
    above = (np.square(np.maximum(centres - hi[:, None], 0)) * hist).sum(axis=1)
    err = (under * hist[None]).sum(axis=2) + above[None, :] + np.square((hi[None, :] - los) / (levels - 1)) / 12 * total
    lo = los[np.argmin(err, axis=0), np.arange(c)]
    return lo.astype(np.float32), hi.astype(np.float32)


def side_information(lo, hi, cmin, const, levels: int):
    """(lo, step, half): offsets and steps as the decoder will read them, so the quantiser uses exactly
    those values. `half`: they fit float16 (lo rounded down, step up, every constant channel's value
    exact, steps normal numbers), halving the side information; else float32. None when not even
    float32 holds them (ranges near float32's limits): the tensor then goes raw."""
    for dtype in (np.float16, np.float32):
        with np.errstate(over="ignore", invalid="ignore"):
            found = _side_as(dtype, lo, hi, cmin, const, levels)
        if found is not None:
            return (*found, dtype == np.float16)
    return None


def _side_as(dtype, lo, hi, cmin, const, levels: int):
    lo_d = np.where(const, cmin, lo).astype(dtype)
    bad = (lo_d.astype(np.float32) > lo) & ~const
    lo_d[bad] = np.nextafter(lo_d[bad], dtype(-np.inf))
    lo_f = lo_d.astype(np.float32)
    step_d = ((hi - lo_f) / np.float32(levels - 1)).astype(dtype)
    for _ in range(4):  # rounding: the top level must still reach hi
        short = lo_f + step_d.astype(np.float32) * np.float32(levels - 1) < hi
        if not short.any():
            break
        step_d[short] = np.nextafter(step_d[short], dtype(np.inf))
    step_d[const | (step_d <= 0)] = 0
    step_f = step_d.astype(np.float32)
    ok = (np.isfinite(lo_f).all() and np.isfinite(step_f).all() and np.array_equal(lo_f[const], cmin[const])
          and not (lo_f + step_f * np.float32(levels - 1) < hi)[~const].any())
    if dtype == np.float16:
        ok = ok and bool((step_f[~const] >= np.finfo(np.float16).tiny).all())
    return (lo_f, step_f) if ok else None


def quantise(view: np.ndarray, lo, step, const, levels: int, clipped: bool = True) -> np.ndarray:
    """Symbols of the non-constant channels, flat in view order. `clipped=False` when [lo, hi] holds
    every value (min/max): then rounding alone keeps symbols in 0..levels-1 and the clip pass is skipped."""
    keep = ~const
    v = view if keep.all() else view[:, keep]
    lo_k, step_k = lo[keep][None, :, None], step[keep][None, :, None]
    inv = np.where(step_k > 0, 1 / np.where(step_k > 0, step_k, 1), 0).astype(np.float32)
    t = v - lo_k
    t *= inv
    if clipped:
        np.clip(t, 0, levels - 1, out=t)
    np.rint(t, out=t)
    return t.astype(np.uint8 if levels <= 256 else np.uint16).reshape(-1)


def dequantise(q: np.ndarray, lo, step, const, dims, channels: int, levels: int) -> np.ndarray:
    """lo + q * step per channel, written straight into the output (2 passes; a table lookup per tensor)."""
    n = numel(dims)
    out = np.empty(n, np.float32)
    if channels == 1:
        if const[0]:
            out.fill(lo[0])
        else:
            lut = lo[0] + np.arange(levels, dtype=np.float32) * step[0]
            np.take(lut, q, out=out)
        return out.reshape(dims)
    nb = dims[0]
    view = out.reshape(nb, channels, -1)
    keep = ~const
    if keep.all():
        sym = q.reshape(nb, channels, -1)
        np.multiply(sym, step[None, :, None], out=view)
        view += lo[None, :, None]
    elif keep.any():
        vals = q.reshape(nb, int(keep.sum()), -1) * step[keep][None, :, None]
        vals += lo[keep][None, :, None]
        view[:, keep] = vals
    if const.any():
        view[:, const] = lo[const][None, :, None]
    return out.reshape(dims)
