"""Packing a float tensor into one gray picture for the `video` codec: quantise to N bits, tile the channels.

Why: a video encoder codes pictures of small integers, and its inter prediction finds what did not change
between consecutive pictures. The features of consecutive video frames are such pictures once each channel
is a tile at a fixed place: a static scene gives the same tile at the same place in every picture.

Defined terms:
- *channels*: every dimension of the tensor before its last two (their product); the last two are a
  *tile*'s height and width (a 1-D tensor is one tile of height 1);
- *cell*: the place of one tile in the picture, the tile padded to a multiple of CELL_ALIGN (the
  encoders' smallest block) so that tile edges fall on block edges; cells form a grid of `cols` x `rows`, channel k
  at row k // cols, column k % cols (raster order: channel k stays at one place in every picture);
- *picture*: the grid, padded to a multiple of ALIGN and at least MIN_SIDE on each side; what is not a
  tile (cell padding, empty cells) holds the value 0.0 quantises to, a flat area that costs almost nothing;
- *range* [lo, hi]: the values a picture's 0 .. 2^bits - 1 stand for, chosen at a keyframe from that
  frame's finite minimum and maximum, each widened away from the other by MARGIN x the smaller of its
  magnitude and the span (a bound at 0, as ReLU's minimum, stays), and kept by the predicted frames that
  follow, which are clipped to it. On vtest.avi the extremes of NanoDet's features grow by up to 36 % over
  200 frames (-0.29 .. 4.1 at frame 0, -0.45 .. 5.25 over all), hence a wide margin; it costs next to
  nothing at equal quality (a wider range is a coarser step, which a lower QP gives back).

The layout is a pure function of the tensor's shape (`layout_for`), so the decoder computes it from the
announced dtype x shape and refuses a payload whose layout differs before a decoder sees a byte.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from splitinfer.common.codecs import CodecError, numel

ALIGN = 8  # pictures are multiples of 8 samples (the encoders' smallest coding block)
CELL_ALIGN = 1  # cells are the tiles themselves: padding each tile to 8 (or 16) measured 8-10 % more bits
MIN_SIDE = 64  # the smallest picture side every offered encoder accepts
MAX_SIDE = 8192  # the largest picture side (HEVC level 6.2 allows 8444 samples)
MAX_PIXELS = 8192 * 4352  # the largest picture (HEVC level 6.x: 35,651,584 samples)
MARGIN = 0.5  # the keyframe's range is widened by this share of each bound (see the terms)

# keyframe side information: channels, tile h, tile w, cell h, cell w, cols, rows, width, height, bits, lo, hi
KEY_INFO = struct.Struct("<IIIHHHHHHBff")


@dataclass(frozen=True)
class Layout:
    channels: int
    tile_h: int
    tile_w: int
    cell_h: int
    cell_w: int
    cols: int
    rows: int
    width: int
    height: int

    @property
    def max_pixels(self) -> int:
        """The decoders' bound: the picture with its width and height rounded up to 64 (FFmpeg checks
        the width rounded to its row alignment against it)."""
        return _up(self.width, 64) * _up(self.height, 64)


def _up(n: int, m: int) -> int:
    return -(-n // m) * m


def tile_dims(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, tile height, tile width) of a tensor shape."""
    if len(shape) == 0:
        return 1, 1, 1
    if len(shape) == 1:
        return 1, 1, shape[0]
    return numel(shape[:-2]), shape[-2], shape[-1]


def layout_for(shape: tuple[int, ...]) -> Layout:
    """The picture layout of a tensor shape; CodecError when its picture would exceed MAX_SIDE/MAX_PIXELS."""
    channels, th, tw = tile_dims(shape)
    ch, cw = _up(max(th, 1), CELL_ALIGN), _up(max(tw, 1), CELL_ALIGN)
    if channels == 0 or ch > MAX_SIDE or cw > MAX_SIDE or channels * ch * cw > MAX_PIXELS:
        raise CodecError(f"video: a tensor of shape {list(shape)} does not fit a picture of at most "
                         f"{MAX_SIDE} samples a side and {MAX_PIXELS} samples ({channels} tiles of {ch}x{cw})")
    cols = _grid_cols(channels, ch, cw)
    rows = -(-channels // cols)
    width, height = _up(max(MIN_SIDE, cols * cw), ALIGN), _up(max(MIN_SIDE, rows * ch), ALIGN)
    if width > MAX_SIDE or height > MAX_SIDE:
        raise CodecError(f"video: a tensor of shape {list(shape)} tiles into a {width}x{height} picture, "
                         f"over {MAX_SIDE} samples a side")
    return Layout(channels, th, tw, ch, cw, cols, rows, width, height)


def _grid_cols(channels: int, ch: int, cw: int) -> int:
    """Columns of the grid: fewest empty cells among grids about as wide as 16:9 (1:1 .. 4:1), else the
    grid closest to square that fits MAX_SIDE."""
    best = None
    for cols in range(1, channels + 1):
        rows = -(-channels // cols)
        w, h = cols * cw, rows * ch
        if w > MAX_SIDE:
            break
        if h > MAX_SIDE:
            continue
        aspect = w / h
        score = (not 1 <= aspect <= 4, rows * cols - channels, abs(math.log(aspect * 9 / 16)))
        if best is None or score < best[0]:
            best = (score, cols)
    if best is None:
        raise CodecError(f"video: {channels} tiles of {ch}x{cw} fit no grid of at most {MAX_SIDE} a side")
    return best[1]


def choose_range(arr: np.ndarray) -> tuple[float, float]:
    """The keyframe's range [lo, hi] (float32 values), see the module's terms."""
    flat = arr.reshape(-1)
    lo, hi = (float(flat.min()), float(flat.max())) if flat.size else (0.0, 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        finite = flat[np.isfinite(flat)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    span = hi - lo
    if span <= 0:
        span = max(abs(hi), 1.0)
        lo, hi = lo - span / 2, hi + span / 2
    lo32 = np.float32(lo - MARGIN * min(abs(lo), span))
    hi32 = np.float32(hi + MARGIN * min(abs(hi), span))
    if not hi32 > lo32:  # float32 rounding of a tiny span
        hi32 = np.nextafter(lo32, np.float32(np.inf))
    return float(lo32), float(hi32)


def _scale(lo: float, hi: float, bits: int) -> tuple[np.float32, np.float32]:
    top = (1 << bits) - 1
    return np.float32(lo), np.float32(top / (np.float64(hi) - np.float64(lo)))


def blank(lay: Layout, bits: int, lo: float, hi: float) -> np.ndarray:
    """A picture holding only the value 0.0 quantises to (the canvas tiles are written into)."""
    zero = quantise(np.zeros(1, np.float32), bits, lo, hi)[0]
    return np.full((lay.height, lay.width), zero, np.uint16 if bits > 8 else np.uint8)


def quantise(arr: np.ndarray, bits: int, lo: float, hi: float) -> np.ndarray:
    """Values in [lo, hi] as integers 0 .. 2^bits - 1 (outside clipped; NaN -> 0)."""
    low, scale = _scale(lo, hi, bits)
    t = (np.asarray(arr, np.float32) - low) * scale
    np.fmax(t, 0, out=t)  # fmax/fmin: NaN gives the bound, inf is clipped
    np.fmin(t, (1 << bits) - 1, out=t)
    np.rint(t, out=t)
    return t.astype(np.uint16 if bits > 8 else np.uint8)


def dequantise(q: np.ndarray, bits: int, lo: float, hi: float, dtype: np.dtype) -> np.ndarray:
    low, scale = _scale(lo, hi, bits)
    out = q.astype(np.float32)
    out *= np.float32(1) / scale
    out += low
    return out.astype(dtype, copy=False)


def tile(q: np.ndarray, lay: Layout, canvas: np.ndarray) -> np.ndarray:
    """Write the quantised tensor's tiles into `canvas` (a `blank` picture, kept between frames)."""
    tiles = q.reshape(lay.channels, lay.tile_h, lay.tile_w)
    full = lay.channels // lay.cols
    grid = canvas[:lay.rows * lay.cell_h, :lay.cols * lay.cell_w].reshape(lay.rows, lay.cell_h, lay.cols, lay.cell_w)
    if full:
        grid[:full, :lay.tile_h, :, :lay.tile_w] = (
            tiles[:full * lay.cols].reshape(full, lay.cols, lay.tile_h, lay.tile_w).transpose(0, 2, 1, 3))
    rest = lay.channels - full * lay.cols
    if rest:
        grid[full, :lay.tile_h, :rest, :lay.tile_w] = tiles[full * lay.cols:].transpose(1, 0, 2)
    return canvas


def untile(pic: np.ndarray, lay: Layout) -> np.ndarray:
    """The tiles of a decoded picture as (channels, tile h, tile w)."""
    grid = pic[:lay.rows * lay.cell_h, :lay.cols * lay.cell_w].reshape(lay.rows, lay.cell_h, lay.cols, lay.cell_w)
    cells = grid[:, :lay.tile_h, :, :lay.tile_w].transpose(0, 2, 1, 3).reshape(-1, lay.tile_h, lay.tile_w)
    return cells[:lay.channels]


def pack_key_info(lay: Layout, bits: int, lo: float, hi: float) -> bytes:
    return KEY_INFO.pack(lay.channels, lay.tile_h, lay.tile_w, lay.cell_h, lay.cell_w, lay.cols, lay.rows,
                         lay.width, lay.height, bits, lo, hi)


def read_key_info(body: memoryview, want: Layout, bits: int, what: str) -> tuple[float, float, memoryview]:
    """(lo, hi, rest) of a keyframe body whose layout and bit depth must be exactly `want` and `bits`."""
    if body.nbytes < KEY_INFO.size:
        raise CodecError(f"{what}: keyframe body of {body.nbytes} bytes is shorter than its "
                         f"{KEY_INFO.size}-byte layout")
    *dims, got_bits, lo, hi = KEY_INFO.unpack_from(body)
    got = Layout(*dims)
    if got != want:
        raise CodecError(f"{what}: the keyframe announces a {got.width}x{got.height} picture of {got.channels} "
                         f"tiles {got.tile_h}x{got.tile_w} in a {got.cols}x{got.rows} grid; the tensor needs "
                         f"{want.width}x{want.height}, {want.channels} tiles {want.tile_h}x{want.tile_w} in "
                         f"{want.cols}x{want.rows}")
    if got_bits != bits:
        raise CodecError(f"{what}: the keyframe announces {got_bits}-bit samples; this codec codes {bits}")
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise CodecError(f"{what}: the keyframe's range [{lo}, {hi}] is not a finite increasing interval")
    return lo, hi, body[KEY_INFO.size:]
