"""fqi's global motion compensation (option m): the reference shifted by a fraction of a sample before a
predicted frame is coded against it.

Why: when the camera pans, every feature map slides a little between frames (vtest's pan clip: 3.8 input
pixels a frame, 0.3-0.4 samples at NanoDet's stride-8 maps), and the frame-to-frame change is then mostly
that slide: the residuals stop being zero where the scene stood still. Shifting the whole reference by the
slide (in eighths of a sample) before subtracting it takes that part out. Measured (bench/bench_fqi.py
--rd, the pan clip's frames 0..19): BD-rate on output PSNR of fqi:xhm against fqi:xh -12.2 % at split 46
and -9.1 % at 95 with cubic interpolation; bilinear saved as many bits but blurred the reference (the
closed loop leaves what hysteresis drops), -2.2 % only; on vtest's fixed camera the shift stays 0 (the
estimate must beat no shift by MIN_GAIN on the coded cost) and the stream is the same but for 2 bytes a
frame. One shift per tensor (all channels move with the scene); a per-block search would cost more than
the fast path can pay.

Terms:
- *shift* (dy, dx): integers in eighths of a sample (|.| <= MAX_EIGHTHS); the shifted reference at (i, j)
  is the reference sampled at (i - dy/8, j - dx/8), cubic (Catmull-Rom: 4 taps, overshoot at most 1/4 per
  pass, so both sides take the shifted values' own bound), edges repeated; rows first, then columns, in
  float32 (encoder and decoder compute the very same values);
- *cost*: what the encoder compares candidate shifts by, on a subsample of the channels: the number of
  non-zero rounded residuals plus sum log2(1 + |residual|), a proxy of the coded bytes (the mean squared
  error is not: a blurred reference lowers it on a still scene and still costs more bytes);
- *estimate*: the least-squares (Lucas-Kanade) shift of the subsample (0 where it rounds to 0: nothing is
  costed then), else the candidates 0, the estimate and its four neighbours an eighth away, each costed.

Body: the two shift bytes (int8 dy, dx) follow fqi's predicted header in a stream with option m.
"""

from __future__ import annotations

import struct

import numpy as np

from splitinfer.common.codecs import CodecError

NAME = "fqi"
EIGHTHS = 8
MAX_EIGHTHS = 16  # two samples either way: a faster slide is no longer predicted well by one shift
MIN_SIDE = 4  # planes smaller than this in either direction are not shifted
MIN_GAIN = 0.98  # a shift is used where its cost is 2 % below no shift at least
SAMPLE_VALUES = 1 << 15  # values the cost is measured on (whole channels, evenly spread)
SHIFT = struct.Struct("<bb")


def applies(shape: tuple) -> bool:
    """Whether tensors of `shape` are shifted: 4-D, planes of MIN_SIDE x MIN_SIDE at least."""
    return len(shape) == 4 and shape[2] >= MIN_SIDE and shape[3] >= MIN_SIDE


def shifted(ref: np.ndarray, shape: tuple, dy: int, dx: int) -> np.ndarray:
    """The reference (any layout of `shape`'s values, float32) shifted by (dy, dx) eighths, same layout."""
    planes = ref.reshape(shape)
    if dy:
        planes = _along(planes, -2, dy)
    if dx:
        planes = _along(planes, -1, dx)
    return planes.reshape(ref.shape)


def shifted_reference(ref: np.ndarray, shape: tuple, shift: tuple[int, int]) -> tuple[np.ndarray, float]:
    """(the reference shifted by `shift`, the largest magnitude of its values): what encoder and decoder
    both predict from, and the bound both then track (the cubic may overshoot the old bound by 1/4 a pass)."""
    out = shifted(ref, shape, *shift)
    return out, float(np.abs(out).max())


def _along(x: np.ndarray, axis: int, eighths: int) -> np.ndarray:
    """x sampled at (index - eighths/8) along `axis`, cubic (Catmull-Rom), edges repeated."""
    n = x.shape[axis]
    whole, frac = divmod(-eighths, EIGHTHS)  # the sample position is index + whole + frac/8
    pos = np.arange(n) + whole
    if not frac:
        return np.take(x, np.clip(pos, 0, n - 1), axis=axis)
    t = frac / EIGHTHS
    weights = ((-t ** 3 + 2 * t ** 2 - t) / 2, (3 * t ** 3 - 5 * t ** 2 + 2) / 2, (-3 * t ** 3 + 4 * t ** 2 + t) / 2,
               (t ** 3 - t ** 2) / 2)
    out = None
    for k, wgt in zip((-1, 0, 1, 2), weights):
        term = np.take(x, np.clip(pos + k, 0, n - 1), axis=axis)
        term *= np.float32(wgt)
        if out is None:
            out = term
        else:
            out += term
    return out


def estimate(x: np.ndarray, ref: np.ndarray, shape: tuple, step: float) -> tuple[int, int]:
    """The shift (dy, dx) in eighths the frame `x` is coded with against `ref` (both float32 of `shape`'s
    values): (0, 0) unless a candidate's cost is MIN_GAIN below no shift's."""
    xs, rs = _subsample(x.reshape(shape)), _subsample(ref.reshape(shape))
    guess = _least_squares(xs, rs)
    if guess == (0, 0):  # nothing moved by an eighth: no candidate to cost (a fixed camera's every frame)
        return guess
    inv = np.float32(1 / step)
    base = _cost(xs, rs, inv)
    best, best_cost = (0, 0), MIN_GAIN * base
    candidates = {guess, (guess[0] + 1, guess[1]), (guess[0] - 1, guess[1]), (guess[0], guess[1] + 1),
                  (guess[0], guess[1] - 1)}
    for dy, dx in sorted(candidates):
        if (dy, dx) == (0, 0) or max(abs(dy), abs(dx)) > MAX_EIGHTHS:
            continue
        c = _cost(xs, shifted(rs, rs.shape, dy, dx), inv)
        if c < best_cost:
            best, best_cost = (dy, dx), c
    return best


def _subsample(planes: np.ndarray) -> np.ndarray:
    """Whole channels spread evenly over the tensor, about SAMPLE_VALUES values (N*C planes as channels)."""
    n, c, h, w = planes.shape
    flat = planes.reshape(1, n * c, h, w)
    every = max(1, (n * c * h * w) // SAMPLE_VALUES)
    return flat[:, ::every]


def _least_squares(x: np.ndarray, r: np.ndarray) -> tuple[int, int]:
    """The (dy, dx) eighths that minimise |x - r(i - dy, j - dx)|^2 to first order, clipped, rounded.
    Plain sums and Cramer's rule, no BLAS: a threaded BLAS takes milliseconds per dot product here."""
    gy, gx = np.gradient(r.astype(np.float64), axis=(-2, -1))
    e = x.astype(np.float64) - r
    syy, sxy, sxx = float((gy * gy).sum()), float((gy * gx).sum()), float((gx * gx).sum())
    by, bx = -float((gy * e).sum()), -float((gx * e).sum())
    det = syy * sxx - sxy * sxy
    if not (np.isfinite([det, by, bx]).all() and det > 1e-12 * (syy + sxx) ** 2):
        return 0, 0  # a flat (or not finite) reference: no direction to estimate
    dy, dx = (by * sxx - bx * sxy) / det, (bx * syy - by * sxy) / det
    clip = lambda v: int(np.clip(np.rint(v * EIGHTHS), -MAX_EIGHTHS, MAX_EIGHTHS))  # noqa: E731
    return clip(dy), clip(dx)


def _cost(x: np.ndarray, r: np.ndarray, inv_step: np.float32) -> float:
    d = np.abs(np.rint((x - r) * inv_step))
    return float(np.log2(1 + d).sum() + np.count_nonzero(d))


def pack(shift: tuple[int, int]) -> bytes:
    return SHIFT.pack(*shift)


def unpack(view, pos: int) -> tuple[int, int]:
    """The shift at `pos` of a predicted body, checked against MAX_EIGHTHS."""
    if view.nbytes < pos + SHIFT.size:
        raise CodecError(f"{NAME}: predicted body ends before its motion shift")
    dy, dx = SHIFT.unpack_from(view, pos)
    if max(abs(dy), abs(dx)) > MAX_EIGHTHS:
        raise CodecError(f"{NAME}: motion shift ({dy}, {dx}) eighths is beyond +-{MAX_EIGHTHS}")
    return dy, dx
