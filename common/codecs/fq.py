"""`fq[:BITS[:OPTS]]` (id 3FBB): fast lossy feature codec, uniform quantisation + a real entropy coder.

Why: NNC compresses activations well but at 4-17 MB/s; a uniform quantiser whose clipping range is
chosen to minimise the error, followed by an order-0 entropy coder fitted to each tensor, gets to
similar bits per element at hundreds of MB/s (numpy passes, zstd's Huffman stage, constriction's ANS).

Terms:
- *layout*: per channel (axis 1 of a tensor of 3+ dims: one [lo, step] per channel, over batch and
  space) or per tensor (one [lo, step]).
- *clip range* [lo, hi]: values outside are clipped; levels = 2**BITS, step = (hi - lo) / (levels - 1),
  symbol q = round((clip(x) - lo) / step), value back = lo + q * step, so inside the clip range the
  error is at most step/2. The range is chosen per channel (or per tensor) from a ladder of
  shrunken [min, max] candidates, minimising the estimated MSE (granular step**2/12 plus the clipping
  error) over the tensor's histogram -- the min/max range when the option `m` is given.
- *constant channel*: all its values equal; sent as its value alone (no symbols) unless `k` is given.
- *entropy mode*: the symbols (one byte each for BITS <= 8, else uint16) are coded with zstd (level 1;
  Huffman literals plus matches) or with constriction's ANS under a categorical model fitted to the
  tensor's histogram (sent as side information); the encoder keeps the smaller, tagged by one byte.

Spec: BITS in 2..12 (default 6); OPTS letters: `t` per tensor (default: per channel where the
tensor has 3+ dims and each channel at least 64 values, else per tensor), `m` min/max range (no clip
search), `k` keep constant channels as symbols. Numeric id = 3000 + 100 * (t:1 + m:2 + k:4) + BITS,
e.g. `fq:6` = 3006, `fq:6:t` = 3106.

Payload (little-endian), every byte of side information included:
    b"FQ" | mode u8 (b"R" raw bytes, b"Z" zstd symbols, b"A" ANS symbols) | bits u8 | layout u8
    (0 tensor, 1 channel) | C u32 | [ceil(C/8) bytes: constant-channel mask, layout 1 only]
    | lo float32 x C | step float32 x C
    | mode Z: one zstd frame of the symbols | mode A: T u16, T counts u32, then the ANS words (u32)
Raw mode (b"FQ" b"R" + the tensor's bytes) keeps integer/bool tensors, tensors holding NaN/inf and
empty tensors exact. Decoding reads only what dtype x shape announce: every field is checked against
them before anything is allocated, and nothing allocates more than a few times the tensor's size.
"""

from __future__ import annotations

import struct
import threading

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.common.codecs import (
    Codec, CodecError, from_raw, is_float, le_contiguous, norm_dtype, norm_shape, numel, raw_bytes,
)

NAME = "fq"
DEFAULT_BITS = 6
MIN_BITS, MAX_BITS = 2, 12
ID_BASE = 3000
OPT_FLAGS = {"t": 1, "c": 2, "k": 4}  # canonical order of the option letters
HELP = (f"fq[:BITS[:OPTS]] (id 3FBB = 3000 + 100*flags + BITS; BITS {MIN_BITS}..{MAX_BITS}, default "
        f"{DEFAULT_BITS}; OPTS t=per tensor (flag 1), c=clip search (2), k=keep constant channels (4); lossy)")

MIN_CHANNEL_VALUES = 64  # per channel only when each channel has this many values (side info <= 1 bit/value)
ZSTD_LEVEL = 1
ANS_MAX_BITS = 8  # ANS tables up to 256 entries
ANS_GAIN = 0.97  # ANS replaces zstd when its exact size is below this fraction of zstd's
HIST_BINS = 128  # histogram bins per channel for the clip search (8x that per tensor)
LADDER = np.array([1.0, 0.85, 0.7, 0.58, 0.48, 0.4, 0.33, 0.27, 0.22, 0.18, 0.14, 0.11], np.float32)

_HEAD = struct.Struct("<2ssBBI")
_MAGIC = b"FQ"
MODE_RAW, MODE_ZSTD, MODE_ANS = b"R", b"Z", b"A"
_TABLE = struct.Struct("<H")


class FqCodec(Codec):
    name = NAME
    lossless = False

    def __init__(self, bits: int = DEFAULT_BITS, opts: str = ""):
        opts = "".join(o for o in OPT_FLAGS if o in opts)
        flags = sum(OPT_FLAGS[o] for o in opts)
        super().__init__(ID_BASE + 100 * flags + int(bits), {"bits": int(bits), "opts": opts})
        self.bits, self.opts = int(bits), opts
        self.per_tensor, self.clip, self.keep_const = "t" in opts, "c" in opts, "k" in opts
        self._local = threading.local()

    @property
    def spec(self) -> str:
        return f"{NAME}:{self.bits}" + (f":{self.opts}" if self.opts else "")

    def _zstd(self):
        local = self._local
        if not hasattr(local, "c"):
            import zstandard

            local.c = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=False, write_content_size=True)
            local.d = zstandard.ZstdDecompressor()
        return local

    # -- encode ------------------------------------------------------------------------------------

    def encode(self, arr) -> bytes:
        arr = np.asarray(arr)
        if arr.size == 0 or not is_float(arr.dtype):
            return _MAGIC + MODE_RAW + raw_bytes(arr)
        x = le_contiguous(arr).astype(np.float32, copy=False)
        cmin, cmax, view = _channel_ranges(x, self.per_tensor)
        if not (np.isfinite(cmin).all() and np.isfinite(cmax).all()):  # NaN/inf anywhere: exact
            return _MAGIC + MODE_RAW + raw_bytes(arr)
        const = (cmin == cmax) if not self.keep_const else np.zeros(cmin.shape, bool)
        levels = 1 << self.bits
        if self.clip:
            lo, hi = clip_range(view, cmin, cmax, levels)
        else:
            lo, hi = cmin, cmax
        step = ((hi - lo) / np.float32(levels - 1)).astype(np.float32)
        for _ in range(4):  # float32 rounding: the top level must still reach hi
            short = lo + step * np.float32(levels - 1) < hi
            if not short.any():
                break
            step = np.where(short, np.nextafter(step, np.float32(np.inf)), step).astype(np.float32)
        step[(step <= 0) | ~np.isfinite(step)] = 0  # constant (or kept-constant) channels
        lo = np.where(const, cmin, lo).astype(np.float32)
        q = quantise(view, lo, step, const, levels)
        body, mode = self._entropy_code(q)
        head = _HEAD.pack(_MAGIC, mode, self.bits, 0 if view.shape[1] == 1 else 1, view.shape[1])
        parts = [head]
        if view.shape[1] > 1:
            parts.append(np.packbits(const, bitorder="little").tobytes())
        parts += [lo.astype("<f4").tobytes(), step.astype("<f4").tobytes(), body]
        return b"".join(parts)

    def _entropy_code(self, q: np.ndarray) -> tuple[bytes, bytes]:
        z = self._zstd().c.compress(memoryview(q.view(np.uint8)))
        if self.bits > ANS_MAX_BITS or q.size == 0:
            return z, MODE_ZSTD
        counts = np.bincount(q, minlength=1).astype(np.uint32)
        p = counts[counts > 0] / q.size
        estimate = -(p * np.log2(p)).sum() * q.size / 8 + 4 * counts.size + 8
        if estimate >= ANS_GAIN * len(z):
            return z, MODE_ZSTD
        words = ans_encode(q, counts)
        ans = _TABLE.pack(counts.size) + counts.astype("<u4").tobytes() + words.astype("<u4").tobytes()
        return (ans, MODE_ANS) if len(ans) < len(z) else (z, MODE_ZSTD)

    # -- decode ------------------------------------------------------------------------------------

    def decode(self, payload, dtype, shape, *, trusted: bool = False):
        dt, dims = norm_dtype(dtype), norm_shape(shape)
        view = memoryview(payload).cast("B")
        if view.nbytes >= 3 and bytes(view[:3]) == _MAGIC + MODE_RAW:
            return from_raw(view[3:], dt, dims, NAME)
        if view.nbytes < _HEAD.size:
            raise CodecError(f"{NAME}: payload of {view.nbytes} bytes is shorter than its {_HEAD.size}-byte header")
        magic, mode, bits, layout, channels = _HEAD.unpack_from(view)
        if magic != _MAGIC or mode not in (MODE_ZSTD, MODE_ANS):
            raise CodecError(f"{NAME}: payload does not start with an fq header (got {bytes(view[:3])!r})")
        if not is_float(dt):
            raise CodecError(f"{NAME}: payload is quantised but the tensor's dtype is {dt}")
        n = numel(dims)
        if n == 0:
            raise CodecError(f"{NAME}: quantised payload for an empty tensor {list(dims)}")
        if not MIN_BITS <= bits <= MAX_BITS:
            raise CodecError(f"{NAME}: header claims {bits} bits, outside {MIN_BITS}..{MAX_BITS}")
        expect_c = 1 if layout == 0 else (dims[1] if len(dims) >= 3 else -1)
        if layout not in (0, 1) or channels != expect_c or (layout == 1 and channels < 2):
            raise CodecError(f"{NAME}: header claims layout {layout} with {channels} channels, "
                             f"which does not fit shape {list(dims)}")
        pos = _HEAD.size
        mask_len = (channels + 7) // 8 if layout == 1 else 0
        side = mask_len + 8 * channels
        if view.nbytes < pos + side:
            raise CodecError(f"{NAME}: payload of {view.nbytes} bytes ends inside its side information")
        if layout == 1:
            const = np.unpackbits(np.frombuffer(view, np.uint8, mask_len, pos), count=channels,
                                  bitorder="little").astype(bool)
            if mask_len * 8 > channels and np.unpackbits(np.frombuffer(view, np.uint8, mask_len, pos),
                                                         bitorder="little")[channels:].any():
                raise CodecError(f"{NAME}: constant-channel mask has bits set beyond channel {channels}")
        else:
            const = np.zeros(1, bool)
        pos += mask_len
        lo = np.frombuffer(view, "<f4", channels, pos).astype(np.float32)
        step = np.frombuffer(view, "<f4", channels, pos + 4 * channels).astype(np.float32)
        pos += 8 * channels
        if not (np.isfinite(lo).all() and np.isfinite(step).all()) or (step < 0).any():
            raise CodecError(f"{NAME}: side information holds a non-finite or negative scale/offset")
        per_channel = n // channels
        n_sym = per_channel * int((~const).sum())
        sym_dtype = np.dtype(np.uint8) if bits <= 8 else np.dtype("<u2")
        body = view[pos:]
        if mode == MODE_ZSTD:
            q = self._zstd_symbols(body, n_sym, sym_dtype)
        else:
            if bits > ANS_MAX_BITS:
                raise CodecError(f"{NAME}: ANS mode with {bits} bits (ANS is used up to {ANS_MAX_BITS})")
            q = ans_symbols(body, n_sym)
        if q.size and int(q.max()) >= (1 << bits):
            raise CodecError(f"{NAME}: symbol {int(q.max())} is beyond {bits} bits")
        out = dequantise(q, lo, step, const, dims, channels, 1 << bits)
        return out.astype(dt, copy=False)

    def _zstd_symbols(self, body, n_sym: int, sym_dtype: np.dtype) -> np.ndarray:
        import zstandard

        need = n_sym * sym_dtype.itemsize
        try:
            size = zstandard.frame_content_size(body)
        except zstandard.ZstdError as exc:
            raise CodecError(f"{NAME}: symbols are not a zstd frame ({exc})") from None
        if size != need:
            raise CodecError(f"{NAME}: zstd frame holds {size} bytes but the symbols need {need}")
        try:
            raw = self._zstd().d.decompress(body, max_output_size=need, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise CodecError(f"{NAME}: corrupt symbol stream ({exc})") from None
        if len(raw) != need:
            raise CodecError(f"{NAME}: symbol stream holds {len(raw)} bytes, expected {need}")
        return np.frombuffer(raw, sym_dtype)

    def max_payload_bytes(self, dtype, shape) -> int:
        """Raw mode (3 + nbytes) or header + side information + the larger of zstd's bound on
        uint16 symbols and an ANS body (table + at most one word per symbol + slack)."""
        dt, dims = norm_dtype(dtype), norm_shape(shape)
        n = numel(dims)
        c = dims[1] if len(dims) >= 3 else 1
        return max(3 + n * dt.itemsize, _HEAD.size + (c + 7) // 8 + 8 * c + 4 * n + 4096)

    def warm_up(self) -> None:
        self._zstd()
        import constriction  # noqa: F401


# -- quantiser ---------------------------------------------------------------------------------------


def _channel_ranges(x: np.ndarray, per_tensor: bool):
    """(min, max) per channel and the tensor viewed as (N, C, R): C = axis 1 when per channel applies."""
    if not per_tensor and x.ndim >= 3 and x.shape[1] >= 2 and x.size // x.shape[1] >= MIN_CHANNEL_VALUES:
        view = x.reshape(x.shape[0], x.shape[1], -1)
    else:
        view = x.reshape(1, 1, -1)
    with np.errstate(invalid="ignore"):
        cmin = view.min(axis=(0, 2))
        cmax = view.max(axis=(0, 2))
    return cmin, cmax, view


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


def quantise(view: np.ndarray, lo, step, const, levels: int) -> np.ndarray:
    """Symbols of the non-constant channels, flat in (channel, batch, space) order... in view order."""
    keep = ~const
    v = view if keep.all() else view[:, keep]
    lo_k, step_k = lo[keep][None, :, None], step[keep][None, :, None]
    inv = np.where(step_k > 0, 1 / np.where(step_k > 0, step_k, 1), 0).astype(np.float32)
    t = v - lo_k
    t *= inv
    np.clip(t, 0, levels - 1, out=t)
    np.rint(t, out=t)
    return t.astype(np.uint8 if levels <= 256 else np.uint16).reshape(-1)


def dequantise(q: np.ndarray, lo, step, const, dims, channels: int, levels: int) -> np.ndarray:
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
    if keep.any():
        vals = q.reshape(nb, int(keep.sum()), -1).astype(np.float32)
        vals *= step[keep][None, :, None]
        vals += lo[keep][None, :, None]
        if keep.all():
            view[...] = vals
        else:
            view[:, keep] = vals
    if const.any():
        view[:, const] = lo[const][None, :, None]
    return out.reshape(dims)


# -- ANS (constriction) --------------------------------------------------------------------------------


def _model(counts: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(counts.astype(np.float64) / counts.sum(), perfect=False)


def ans_encode(q: np.ndarray, counts: np.ndarray) -> np.ndarray:
    import constriction

    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(q.astype(np.int32), _model(counts))
    return coder.get_compressed()


def ans_symbols(body, n_sym: int) -> np.ndarray:
    """Symbols of an ANS body (table + words), checking the table against the announced count."""
    if len(body) < _TABLE.size:
        raise CodecError(f"{NAME}: ANS body of {len(body)} bytes has no table")
    (t,) = _TABLE.unpack_from(body)
    if not 1 <= t <= 1 << ANS_MAX_BITS:
        raise CodecError(f"{NAME}: ANS table claims {t} symbols (1..{1 << ANS_MAX_BITS})")
    if len(body) < _TABLE.size + 4 * t:
        raise CodecError(f"{NAME}: ANS body of {len(body)} bytes ends inside its {t}-entry table")
    counts = np.frombuffer(body, "<u4", t, _TABLE.size).astype(np.int64)
    if int(counts.sum()) != n_sym or n_sym == 0:
        raise CodecError(f"{NAME}: ANS table counts {int(counts.sum())} symbols but the tensor needs {n_sym}")
    words = body[_TABLE.size + 4 * t:]
    if len(words) % 4 or len(words) > 4 * n_sym + 64:
        raise CodecError(f"{NAME}: ANS stream of {len(words)} bytes is not a plausible word stream")
    import constriction

    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, "<u4").astype(np.uint32))
        q = coder.decode(_model(counts), n_sym)
    except Exception as exc:  # constriction raises on streams that do not decode
        raise CodecError(f"{NAME}: corrupt ANS stream ({type(exc).__name__}: {str(exc)[:100]})") from None
    if not coder.is_empty():
        raise CodecError(f"{NAME}: ANS stream holds more than the announced {n_sym} symbols")
    return q.astype(np.uint8 if t <= 256 else np.uint16, copy=False)


# -- registry hooks ---------------------------------------------------------------------------------


def _bits(text: str) -> int:
    try:
        bits = int(text)
    except ValueError:
        raise UserError(f"fq bits {text!r} is not an integer") from None
    if not MIN_BITS <= bits <= MAX_BITS:
        raise UserError(f"fq bits {bits} is outside {MIN_BITS}..{MAX_BITS}")
    return bits


def from_id(number: int):
    rest = number - ID_BASE
    if not 0 <= rest < 800:
        return None
    flags, bits = divmod(rest, 100)
    if not MIN_BITS <= bits <= MAX_BITS:
        return None
    return FqCodec(bits, "".join(o for o, f in OPT_FLAGS.items() if flags & f))


def from_param(param):
    if param in (None, ""):
        return FqCodec(DEFAULT_BITS)
    bits_text, _, opts = param.partition(":")
    bad = set(opts) - set(OPT_FLAGS)
    if bad or len(set(opts)) != len(opts):
        raise UserError(f"fq options {opts!r}: use the letters t (per tensor), c (clip search), k (keep constant), "
                        "each at most once")
    return FqCodec(_bits(bits_text) if bits_text else DEFAULT_BITS, opts)
