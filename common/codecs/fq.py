"""`fq[:BITS[:OPTS]]` / `fq:QP[:OPTS]`: fast lossy feature codec (quantiser + entropy coder).

Why: NNC compresses activations well but at 4-25 MB/s; a uniform quantiser followed by an entropy coder
fitted to each tensor matches or beats its rate at 100-700 MB/s (numpy passes, zstd's Huffman stage,
constriction's ANS, a spatial context coder with option `x`). Two ways to pick the quantiser:
- *bit depth* `fq:BITS` (id 30000 + 1000*flags + 10*BITS): round(2**BITS) levels between each channel's
  min and max. Fastest (`fq:4`: 13-15x on NanoDet, 700+ MB/s encode, 2+ GB/s decode), but a channel
  with a small range gets needlessly fine steps.
- *step* `fq:QP` (QP <= 0, id 50000 + 1000*flags - QP): one step 2**(QP/4) for the whole tensor, NNC's
  QP scale (QP density 2), so the entropy coder pays only for what occurs; each channel's offset
  carries the mean of its rounding errors (no per-channel bias). Use it with `x`: `fq:-14:x`.
Measured (bench/bench_codecs.py, 8 frames, 2 shared cores): `fq:-14:x` 19x (1.7 bits per element) at
a lower error than `fq:4:x` (15-16x), encoding at 130-155 MB/s and decoding at 100-170 MB/s; `fq:4`
14x at 710-740 MB/s / 2.1-2.4 GB/s; NNC 11-25 MB/s. Rate-accuracy study on the vtest clip
(docs/study/, splits 46/74/95, step ladder fq:-26..-2/4:x against nnc:-38..-8/10): BD-rate against
NNC -14 % / +2 % / -4 % on the PSNR of the model outputs and +22 % / +20 % / -40 % on relative mAP (10
frames: noisy); the bit-depth ladder fq:2..8: +54 % / +47 % / +41 % and +146 % / +134 % / +48 %. At >= 99 %
relative mAP: 19.1x / 13.7x / 21.0x (fq:-14:x, fq:-18:x, fq:-14:x) against NNC's 8.5x / 9.1x / 9.1x
(nnc:-28; its ladder steps 10 QPs) and fq:2..8's 10.2x / 14.3x / 14.2x.

Terms:
- *layout*: per channel (axis 1 of a tensor of 3+ dims: one [lo, step] per channel, over batch and
  space; used when every channel has at least 64 values) or per tensor (one [lo, step]; option `t`).
- *range* [lo, hi]: levels = round(2**BITS), step = (hi - lo) / (levels - 1), q = round((clip(x) - lo)
  / step), value back = lo + q * step, so inside the range the error is at most step/2. Default: the
  channel's [min, max] (nothing clipped). Option `c`: the range minimising the estimated MSE (granular
  step**2/12 plus the clipping error, read off a per-channel histogram of every value) over a ladder of
  shrunken ranges. Measured on NanoDet (see bench/bench_codecs.py): clipping lowers the MSE but costs
  relative mAP and bits (a finer step over the bulk), so min/max is the default.
- *step mode* (`fq:QP`): step = 2**(QP/4) rounded up to a float16 value, widened only when the tensor
  would need more than STEP_MAX_LEVELS (4096) symbols; q = round(x / step) (no dead zone: rounding toward
  zero cost output PSNR, see `step_quantise`), symbols q - min(q) over the tensor; channel c comes back
  as lo_c + s * step with lo_c = min(q) * step + mean_c(x - q * step) (see `unbiased_offsets`), so the
  error is under one step. One step is sent for all channels (layout flag ONE_STEP).
- *constant channel*: all its values equal (step mode: all its symbols equal); sent as its value alone
  (no symbols; step mode: the channel's mean) unless `k` is given.
- *entropy mode* (one byte), the smallest of:
  Z: the symbols (uint8 up to 256 levels, else uint16) through zstd level 1 (GB/s);
  P: up to 16 levels, symbols packed 2 or 4 to a byte first, so zstd's Huffman stage codes pairs (quads)
     of neighbours jointly (measured on NanoDet: ~10% below the order-0 entropy at 4 bits, GB/s);
  A: constriction's ANS under one categorical model fitted to the tensor (its table is side
     information); used only when ANS_GAIN smaller than Z/P, since it decodes at ~100-200 MB/s;
  W: as A for 257..4096 levels (a wide-range tensor in step mode), the table being exactly `levels`
     counts in one zstd frame (most of a wide alphabet's counts are zero);
  C: option `x`, 4-D tensors, up to 4096 levels: ANS under spatial contexts (see `ctx_plan`; 5-20% fewer
     bits than P, 100-170 MB/s).
  A and C are estimated from their tables' entropy first, coded only when they would win, then measured.

Spec: BITS in 2..12 with at most one decimal (default 4; `fq:3.5` = 11 levels); OPTS letters t, c, k, x in
any order. Numeric id = 30000 + 1000 * flags + 10 * BITS with flags t=1, c=2, k=4, x=8: `fq:4` = 30040,
`fq:6:t` = 31060, `fq:3.5:x` = 38035. Step mode: an integer QP in -64..0 instead of BITS, options t, k, x
(the clip search does not apply); id = 50000 + 1000 * flags - QP: `fq:-18` = 50018, `fq:-14:x` = 58014.

Payload (little-endian), every byte of side information included:
    b"FQ" | mode u8 (b"R" raw, b"Z" zstd, b"P" packed zstd, b"A" ANS, b"W" wide ANS, b"C" context ANS)
    | levels u16 | layout u8 (0 tensor, 1 channel; + 0x80: lo and step are float16; + 0x40 ONE_STEP: one
    step for every channel)
    | C u32 | ceil(C/8) bytes: constant-channel mask (bit c set: channel c is constant) | lo x C | step x C
    (x 1 with ONE_STEP) (float16 when they fit: bit depth: lo rounded down, step up, constant values
    exact; step mode: step exact, every lo within step/64; else float32)
    | Z/P: one zstd frame of the (packed) symbols | A: T u16, T counts u32, the ANS words (u32)
    | W: table bytes u32, one zstd frame of `levels` counts (u32), the ANS words (u32)
    | C: see ctx_encode
Raw mode (b"FQ" b"R" + the tensor's bytes) keeps integer/bool tensors, tensors holding NaN/inf and
empty tensors exact. Decoding reads only what dtype x shape announce: every field and table is checked
against them before anything is allocated, and nothing allocates more than a few times the tensor's size.
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
DEFAULT_BITS = 4
MIN_BITS, MAX_BITS = 2, 12
ID_BASE = 30000
MIN_LEVELS, MAX_LEVELS = 4, 4096
OPT_FLAGS = {"t": 1, "c": 2, "k": 4, "x": 8}  # canonical order of the option letters
HELP = (f"fq[:BITS[:OPTS]] (id 30000 + 1000*flags + 10*BITS; BITS {MIN_BITS}..{MAX_BITS}, one decimal "
        f"allowed (levels = round(2**BITS)), default {DEFAULT_BITS}; OPTS t=per tensor (flag 1), "
        "c=clip search (2), k=keep constant channels (4), x=spatial context coder (8); lossy) or "
        "fq:QP[:OPTS] (step mode: one step 2**(QP/4) per tensor, QP -64..0, id 50000 + 1000*flags - QP; "
        "e.g. fq:-14:x)")

MIN_CHANNEL_VALUES = 64  # per channel only when each channel has this many values (side info <= 1 bit/value)
ZSTD_LEVEL = 1
ANS_MAX_LEVELS = 256  # ANS tables up to 256 entries
ANS_GAIN = 0.9  # ANS (~100-150 MB/s decode) replaces zstd (GB/s) only when this much smaller
HIST_BINS = 128  # histogram bins per channel for the clip search (8x that per tensor)
LADDER = np.array([1.0, 0.85, 0.7, 0.58, 0.48, 0.4, 0.33, 0.27, 0.22, 0.18, 0.14, 0.11], np.float32)

MIN_QP, MAX_QP = -64, 0  # step mode: step = 2**(QP/4), NNC's QP scale (QP density 2)
QP_ID_BASE = 50000  # step mode ids: 50000 + 1000*flags - QP
STEP_MAX_LEVELS = MAX_LEVELS  # step mode: the step widens only when a tensor would need more symbols
# (it was 256 until the wide modes: at NanoDet's split 9 that widened fq:-14's step on wide-range tensors)

CTX_CLASSES = 8  # context classes of the checkerboard's second half (sum of the 4 neighbours)
CTX_MAX_LEVELS = MAX_LEVELS  # context tables up to 4096 entries (zstd-packed: mostly zeros)
CTX_MIN_SYMBOLS = 4096

_HEAD = struct.Struct("<2ssHBI")  # magic, mode, levels, layout, channels
_MAGIC = b"FQ"
MODE_RAW, MODE_ZSTD, MODE_PACKED, MODE_ANS, MODE_CTX, MODE_WIDE = b"R", b"Z", b"P", b"A", b"C", b"W"
PACK_MAX_WIDTH = 4  # symbols of 2, 3, 4 bits: 4, 2, 2 to a byte
_TABLE = struct.Struct("<H")
_WIDE_TABLE = struct.Struct("<I")  # W mode: bytes of the zstd-packed table
HALF_SIDE = 0x80  # layout flag: lo and step sent as float16
ONE_STEP = 0x40  # layout flag: one step for every channel, sent once (the step mode)
_CTX_HEAD = struct.Struct("<BBI")  # channel groups G, context classes, bytes of the zstd-packed tables


class FqCodec(Codec):
    name = NAME
    lossless = False

    def __init__(self, bits: float = DEFAULT_BITS, opts: str = "", qp: int | None = None):
        opts = "".join(o for o in OPT_FLAGS if o in opts)
        flags = sum(OPT_FLAGS[o] for o in opts)
        self.qp = None if qp is None else int(qp)
        if self.qp is not None:  # step mode: one step 2**(QP/4) for the whole tensor
            if "c" in opts or not MIN_QP <= self.qp <= MAX_QP:
                raise UserError(f"fq:{qp}: QP must be in {MIN_QP}..{MAX_QP}, options t, k, x")
            self.bits_text = str(self.qp)
            super().__init__(QP_ID_BASE + 1000 * flags - self.qp, {"qp": self.qp, "opts": opts})
            tenths = 10 * MAX_BITS  # alphabet cap: STEP_MAX_LEVELS
        else:
            tenths = int(round(float(bits) * 10))
            self.bits_text = str(tenths // 10) if tenths % 10 == 0 else f"{tenths / 10:.1f}"
            super().__init__(ID_BASE + 1000 * flags + tenths, {"bits": self.bits_text, "opts": opts})
        self.bits, self.opts = tenths / 10, opts
        self.levels = int(round(2 ** self.bits)) if self.qp is None else STEP_MAX_LEVELS
        self.width = (self.levels - 1).bit_length()  # bits of one symbol
        self.per_tensor, self.clip, self.keep_const = "t" in opts, "c" in opts, "k" in opts
        self.context = "x" in opts
        self._local = threading.local()

    @property
    def spec(self) -> str:
        return f"{NAME}:{self.bits_text}" + (f":{self.opts}" if self.opts else "")

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
        if self.qp is not None:
            return self._encode_step(arr, x, view, cmin, cmax)
        const = (cmin == cmax) if not self.keep_const else np.zeros(cmin.shape, bool)
        levels = self.levels
        if self.clip:
            lo, hi = clip_range(view, cmin, cmax, levels)
        else:
            lo, hi = cmin, cmax
        side = side_information(lo, hi, cmin, const, levels)
        if side is None:
            return _MAGIC + MODE_RAW + raw_bytes(arr)
        lo, step, half = side
        q = quantise(view, lo, step, const, levels, clipped=self.clip)
        return self._payload(q, levels, view, const, lo, step, half, _grid(x, const, view))

    def _payload(self, q, levels, view, const, lo, step, half, grid) -> bytes:
        body, mode = self.entropy_code(q, grid, levels)
        layout = (0 if view.shape[1] == 1 else 1) | (HALF_SIDE if half else 0)
        if step.size > 1 and np.all(step == step[0]):
            layout, step = layout | ONE_STEP, step[:1]
        head = _HEAD.pack(_MAGIC, mode, levels, layout, view.shape[1])
        parts = [head, np.packbits(const, bitorder="little").tobytes()]
        side_dtype = "<f2" if half else "<f4"
        parts += [lo.astype(side_dtype).tobytes(), step.astype(side_dtype).tobytes(), body]
        return b"".join(parts)

    def _encode_step(self, arr, x, view, cmin, cmax) -> bytes:
        """Step mode: q = round(x / step), step = 2**(QP/4) widened only when the tensor would need more
        than STEP_MAX_LEVELS symbols; symbols offset by the tensor's lowest q; each channel's offset moved
        by the mean of its rounding errors (see `unbiased_offsets`)."""
        step = step_size(self.qp, float(cmin.min()), float(cmax.max()))
        if step is None:
            return _MAGIC + MODE_RAW + raw_bytes(arr)
        qi = step_quantise(view, step)  # int32, (N, C, R)
        c = view.shape[1]
        qlo, qhi = qi.min(axis=(0, 2)), qi.max(axis=(0, 2))
        const = (qlo == qhi) if not self.keep_const else np.zeros(c, bool)
        base = int(qlo[~const].min()) if (~const).any() else int(qlo.min())
        top = int(qhi[~const].max()) if (~const).any() else int(qhi.max())
        levels = max(MIN_LEVELS, top - base + 1)
        q = qi[:, ~const] if const.any() else qi
        q = (q - base).astype(np.uint8 if levels <= 256 else np.uint16).reshape(-1)
        lo, half = unbiased_offsets(view, qi, const, base, step)
        steps = np.full(c, step, np.float32)  # constant channels ignore it: one step sent for all
        return self._payload(q, levels, view, const, lo, steps, half, _grid(x, const, view))

    def entropy_code(self, q: np.ndarray, grid, levels: int) -> tuple[bytes, bytes]:
        """The smallest of: zstd (measured), ANS with one table, ANS with spatial contexts (estimated
        from their tables' entropy first, then coded and measured)."""
        width = (levels - 1).bit_length()
        if width <= PACK_MAX_WIDTH and q.size:  # packed pairs/quads: smaller than one symbol a byte
            z, zmode = self._zstd().c.compress(pack_symbols(q, width)), MODE_PACKED
        else:
            z, zmode = self._zstd().c.compress(memoryview(q.view(np.uint8))), MODE_ZSTD
        if q.size == 0:
            return z, zmode
        wide = levels > ANS_MAX_LEVELS
        counts = np.bincount(q, minlength=levels if wide else 1).astype(np.uint32)
        # (estimated bytes, mode, bytes it must beat): ANS only when clearly smaller (it is slower);
        # the context coder, asked for with `x`, whenever smaller
        table = 3 * int((counts > 0).sum()) + 32 if wide else 4 * counts.size + 8
        options = [(_entropy_bytes(counts) + table, MODE_WIDE if wide else MODE_ANS, ANS_GAIN * len(z))]
        if self.context and grid is not None and levels <= CTX_MAX_LEVELS and q.size >= CTX_MIN_SYMBOLS:
            plan = ctx_plan(q.reshape(grid), levels)
            options.append((plan.estimate, MODE_CTX, len(z)))
        estimate, mode, bar = min(options, key=lambda o: o[0] - o[2])
        if estimate >= bar:
            return z, zmode
        if mode == MODE_CTX:
            body = ctx_encode(plan, self._zstd().c)
        elif mode == MODE_WIDE:
            packed = self._zstd().c.compress(counts.astype("<u4").tobytes())
            body = _WIDE_TABLE.pack(len(packed)) + packed + ans_encode(q, counts).astype("<u4").tobytes()
        else:
            words = ans_encode(q, counts)
            body = _TABLE.pack(counts.size) + counts.astype("<u4").tobytes() + words.astype("<u4").tobytes()
        return (body, mode) if len(body) < len(z) else (z, zmode)

    # -- decode ------------------------------------------------------------------------------------

    def decode(self, payload, dtype, shape, *, trusted: bool = False):
        dt, dims = norm_dtype(dtype), norm_shape(shape)
        view = memoryview(payload).cast("B")
        if view.nbytes >= 3 and bytes(view[:3]) == _MAGIC + MODE_RAW:
            return from_raw(view[3:], dt, dims, NAME)
        if view.nbytes < _HEAD.size:
            raise CodecError(f"{NAME}: payload of {view.nbytes} bytes is shorter than its {_HEAD.size}-byte header")
        magic, mode, levels, layout, channels = _HEAD.unpack_from(view)
        if magic != _MAGIC or mode not in (MODE_ZSTD, MODE_PACKED, MODE_ANS, MODE_CTX, MODE_WIDE):
            raise CodecError(f"{NAME}: payload does not start with an fq header (got {bytes(view[:3])!r})")
        if not is_float(dt):
            raise CodecError(f"{NAME}: payload is quantised but the tensor's dtype is {dt}")
        n = numel(dims)
        if n == 0:
            raise CodecError(f"{NAME}: quantised payload for an empty tensor {list(dims)}")
        if not MIN_LEVELS <= levels <= MAX_LEVELS:
            raise CodecError(f"{NAME}: header claims {levels} levels, outside {MIN_LEVELS}..{MAX_LEVELS}")
        half, one_step, layout = bool(layout & HALF_SIDE), bool(layout & ONE_STEP), layout & ~(HALF_SIDE | ONE_STEP)
        expect_c = 1 if layout == 0 else (dims[1] if len(dims) >= 3 else -1)
        if layout not in (0, 1) or channels != expect_c or (layout == 1 and channels < 2):
            raise CodecError(f"{NAME}: header claims layout {layout} with {channels} channels, "
                             f"which does not fit shape {list(dims)}")
        pos = _HEAD.size
        mask_len = (channels + 7) // 8
        item = 2 if half else 4
        n_steps = 1 if one_step else channels
        side = mask_len + item * (channels + n_steps)
        if view.nbytes < pos + side:
            raise CodecError(f"{NAME}: payload of {view.nbytes} bytes ends inside its side information")
        mask = np.unpackbits(np.frombuffer(view, np.uint8, mask_len, pos), bitorder="little")
        if mask[channels:].any():
            raise CodecError(f"{NAME}: constant-channel mask has bits set beyond channel {channels}")
        const = mask[:channels].astype(bool)
        pos += mask_len
        side_dtype = "<f2" if half else "<f4"
        lo = np.frombuffer(view, side_dtype, channels, pos).astype(np.float32)
        step = np.frombuffer(view, side_dtype, n_steps, pos + item * channels).astype(np.float32)
        if one_step:
            step = np.full(channels, step[0], np.float32)
        pos += item * (channels + n_steps)
        if not (np.isfinite(lo).all() and np.isfinite(step).all()) or (step < 0).any():
            raise CodecError(f"{NAME}: side information holds a non-finite or negative scale/offset")
        per_channel = n // channels
        n_sym = per_channel * int((~const).sum())
        spatial = len(dims) == 4 and min(dims[2], dims[3]) >= 2 and n_sym > 0
        grid = (dims[0], n_sym // (dims[0] * dims[2] * dims[3]), dims[2], dims[3]) if spatial else None
        q = self.decode_symbols(mode, view[pos:], n_sym, levels, grid)
        out = dequantise(q, lo, step, const, dims, channels, levels)
        return out.astype(dt, copy=False)

    def decode_symbols(self, mode: bytes, body, n_sym: int, levels: int, grid=None) -> np.ndarray:
        """The `n_sym` symbols (0..levels-1, uint8 or uint16) of a body entropy-coded in `mode` (Z, P, A, W,
        C); `grid`: the (N, C, H, W) the context coder (C) needs, None where it does not apply."""
        width = (levels - 1).bit_length()
        if mode == MODE_ZSTD:
            q = self._zstd_symbols(body, n_sym, np.dtype(np.uint8) if levels <= 256 else np.dtype("<u2"))
        elif mode == MODE_PACKED:
            if width > PACK_MAX_WIDTH:
                raise CodecError(f"{NAME}: packed mode with {levels} levels (packing is used up to "
                                 f"{1 << PACK_MAX_WIDTH})")
            per = 8 // width
            q = unpack_symbols(self._zstd_symbols(body, -(-n_sym // per), np.dtype(np.uint8)), width, n_sym)
        elif mode == MODE_CTX:
            if levels > CTX_MAX_LEVELS or grid is None:
                raise CodecError(f"{NAME}: context mode does not apply to {levels} levels, "
                                 f"{n_sym} symbols on grid {grid}")
            q = ctx_decode(body, grid, levels, self._zstd().d)
        elif mode == MODE_WIDE:
            if levels <= ANS_MAX_LEVELS:
                raise CodecError(f"{NAME}: wide ANS mode with {levels} levels (it is used above {ANS_MAX_LEVELS})")
            q = wide_ans_symbols(body, n_sym, levels, self._zstd().d)
        elif mode == MODE_ANS:
            if levels > ANS_MAX_LEVELS:
                raise CodecError(f"{NAME}: ANS mode with {levels} levels (ANS is used up to {ANS_MAX_LEVELS})")
            q = ans_symbols(body, n_sym)
        else:
            raise CodecError(f"{NAME}: unknown entropy mode {bytes(mode)!r}")
        if q.size and int(q.max()) >= levels:
            raise CodecError(f"{NAME}: symbol {int(q.max())} is beyond the {levels} levels")
        return q

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


def _grid(x: np.ndarray, const: np.ndarray, view: np.ndarray):
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


def _model(counts: np.ndarray):
    import constriction

    p = counts.astype(np.float64) / counts.sum()
    if p.size < 2:  # constriction needs two symbols at least; the second is never coded
        p = np.append(p, 0.0)
    return constriction.stream.model.Categorical(p, perfect=False)


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
    if not 1 <= t <= ANS_MAX_LEVELS:
        raise CodecError(f"{NAME}: ANS table claims {t} symbols (1..{ANS_MAX_LEVELS})")
    if len(body) < _TABLE.size + 4 * t:
        raise CodecError(f"{NAME}: ANS body of {len(body)} bytes ends inside its {t}-entry table")
    counts = np.frombuffer(body, "<u4", t, _TABLE.size).astype(np.int64)
    if int(counts.sum()) != n_sym or n_sym == 0:
        raise CodecError(f"{NAME}: ANS table counts {int(counts.sum())} symbols but the tensor needs {n_sym}")
    return _ans_words(body[_TABLE.size + 4 * t:], counts, n_sym).astype(np.uint8 if t <= 256 else np.uint16, copy=False)


def wide_ans_symbols(body, n_sym: int, levels: int, zstd_d) -> np.ndarray:
    """Symbols of a W body (zstd-packed table of exactly `levels` counts + words), as uint16."""
    view = memoryview(body)
    if view.nbytes < _WIDE_TABLE.size:
        raise CodecError(f"{NAME}: wide ANS body of {view.nbytes} bytes has no table")
    (packed_len,) = _WIDE_TABLE.unpack_from(view)
    if view.nbytes < _WIDE_TABLE.size + packed_len:
        raise CodecError(f"{NAME}: wide ANS body ends inside its table")
    raw = _zstd_table(view[_WIDE_TABLE.size:_WIDE_TABLE.size + packed_len], 4 * levels, zstd_d, "wide ANS table")
    counts = np.frombuffer(raw, "<u4").astype(np.int64)
    if int(counts.sum()) != n_sym or n_sym == 0:
        raise CodecError(f"{NAME}: wide ANS table counts {int(counts.sum())} symbols but the tensor needs {n_sym}")
    return _ans_words(view[_WIDE_TABLE.size + packed_len:], counts, n_sym).astype(np.uint16, copy=False)


def _ans_words(words, counts: np.ndarray, n_sym: int) -> np.ndarray:
    """`n_sym` symbols decoded from ANS words under the table `counts`; the stream must end exactly."""
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
    return q


def _zstd_table(packed, need: int, zstd_d, what: str) -> bytes:
    """A zstd frame of exactly `need` bytes (its content size checked before decompressing)."""
    import zstandard

    try:
        size = zstandard.frame_content_size(packed)
        if size != need:
            raise CodecError(f"{NAME}: {what} holds {size} bytes, {need} expected")
        return zstd_d.decompress(packed, max_output_size=need, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise CodecError(f"{NAME}: corrupt {what} ({exc})") from None


# -- ANS with spatial contexts ------------------------------------------------------------------------
#
# The symbols of each (batch, channel) plane are split like a checkerboard. Anchors ((h + w) even) are
# coded first, one table per channel group (channels ranked by their mean symbol into G groups); the
# other half is coded with one table per (group, context class), the class being the sum of the four
# anchor neighbours (mirrored at the border) cut at the tensor's own quantiles of that sum (sent as
# thresholds, so each class holds about 1/8 of the symbols), so the decoder knows every context before
# it needs it and decodes whole streams at once. Body: G u8 | classes u8 | table bytes u32 |
# thresholds (classes - 1) u16 | group id per channel u8 | zstd frame of the tables (G x (1 + classes)
# x levels counts, u32) | ANS words (u32).


class _CtxPlan:
    __slots__ = ("grid", "levels", "group", "order", "bounds", "streams", "tables", "thresholds", "estimate")


def _anchor_mask(h: int, w: int) -> np.ndarray:
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


def _entropy_bytes(counts: np.ndarray) -> float:
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
    anchor = _anchor_mask(h, w)
    sums = _neighbour_sums(qp)
    thresholds = _thresholds(sums[..., ~anchor], levels)
    ctx = np.take(_class_table(thresholds, levels), sums)
    tables = np.zeros((groups, 1 + CTX_CLASSES, levels), np.uint32)
    streams = []
    for g in range(groups):
        a = qp[:, bounds[g]:bounds[g + 1]][..., anchor].reshape(-1)
        tables[g, 0] = np.bincount(a, minlength=levels)
        streams.append((a, g, 0))
    for g in range(groups):
        block = qp[:, bounds[g]:bounds[g + 1]][..., ~anchor].reshape(-1)
        cx = ctx[:, bounds[g]:bounds[g + 1]][..., ~anchor].reshape(-1)
        by_class = np.argsort(cx, kind="stable")
        sizes = np.bincount(cx, minlength=CTX_CLASSES)
        for k, part in enumerate(np.split(block[by_class], np.cumsum(sizes)[:-1])):
            tables[g, 1 + k] = np.bincount(part, minlength=levels)
            streams.append((part, g, 1 + k))
    plan = _CtxPlan()
    plan.grid, plan.levels, plan.group, plan.order, plan.bounds = q4.shape, levels, group, order, bounds
    plan.streams, plan.tables, plan.thresholds = streams, tables, thresholds
    nonzero = int((tables > 0).sum())
    plan.estimate = sum(_entropy_bytes(t) for t in tables.reshape(-1, levels)) + 2 * nonzero + c + 16
    return plan


def ctx_encode(plan: _CtxPlan, zstd_c) -> bytes:
    import constriction

    coder = constriction.stream.stack.AnsCoder()
    for symbols, g, k in reversed(plan.streams):  # a stack: the last coded is the first decoded
        if symbols.size:
            coder.encode_reverse(symbols.astype(np.int32), _model(plan.tables[g, k]))
    packed = zstd_c.compress(plan.tables.astype("<u4").tobytes())
    head = _CTX_HEAD.pack(plan.tables.shape[0], CTX_CLASSES, len(packed))
    return (head + plan.thresholds.astype("<u2").tobytes() + plan.group.tobytes() + packed
            + coder.get_compressed().astype("<u4").tobytes())


def ctx_decode(body, grid: tuple[int, int, int, int], levels: int, zstd_d) -> np.ndarray:
    """Flat symbols (in channel order) of a context-coded body, every table checked against the grid."""
    import constriction

    n, c, h, w = grid
    view = memoryview(body)
    if view.nbytes < _CTX_HEAD.size + 2 * (CTX_CLASSES - 1) + c:
        raise CodecError(f"{NAME}: context body of {view.nbytes} bytes ends inside its header")
    groups, classes, packed_len = _CTX_HEAD.unpack_from(view)
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
    pos += c
    if view.nbytes < pos + packed_len:
        raise CodecError(f"{NAME}: context body ends inside its tables")
    need = groups * (1 + CTX_CLASSES) * levels * 4
    raw = _zstd_table(view[pos:pos + packed_len], need, zstd_d, f"context tables of {groups} groups")
    tables = np.frombuffer(raw, "<u4").reshape(groups, 1 + CTX_CLASSES, levels).astype(np.int64)
    words = view[pos + packed_len:]
    total = n * c * h * w
    if words.nbytes % 4 or words.nbytes > 4 * total + 64 * groups * (1 + CTX_CLASSES):
        raise CodecError(f"{NAME}: context ANS stream of {words.nbytes} bytes is not a plausible word stream")
    order, bounds = _group_bounds(group, groups)
    anchor = _anchor_mask(h, w)
    n_anchor = int(anchor.sum())
    sym = np.uint8 if levels <= 256 else np.uint16
    qp = np.zeros((n, c, h, w), sym)
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, "<u4").astype(np.uint32))
        for g in range(groups):
            count = n * int(bounds[g + 1] - bounds[g]) * n_anchor
            if int(tables[g, 0].sum()) != count:
                raise CodecError(f"{NAME}: anchor table of group {g} counts {int(tables[g, 0].sum())} symbols, "
                                 f"the group has {count}")
            if count:
                vals = coder.decode(_model(tables[g, 0]), count)
                qp[:, bounds[g]:bounds[g + 1]][..., anchor] = vals.reshape(n, -1, n_anchor)
        ctx = np.take(_class_table(thresholds, levels), _neighbour_sums(qp))
        for g in range(groups):
            cx = ctx[:, bounds[g]:bounds[g + 1]][..., ~anchor].reshape(-1)
            sizes = np.bincount(cx, minlength=CTX_CLASSES)
            vals = np.empty(cx.size, sym)
            for k in range(CTX_CLASSES):
                if int(tables[g, 1 + k].sum()) != sizes[k]:
                    raise CodecError(f"{NAME}: context table ({g}, {k}) counts {int(tables[g, 1 + k].sum())} "
                                     f"symbols, the decoded anchors give {int(sizes[k])}")
                if sizes[k]:
                    vals[cx == k] = coder.decode(_model(tables[g, 1 + k]), int(sizes[k]))
            qp[:, bounds[g]:bounds[g + 1]][..., ~anchor] = vals.reshape(n, -1, h * w - n_anchor)
        if not coder.is_empty():
            raise CodecError(f"{NAME}: context ANS stream holds more than the announced symbols")
    except CodecError:
        raise
    except Exception as exc:  # constriction refuses streams that do not decode
        raise CodecError(f"{NAME}: corrupt context ANS stream ({type(exc).__name__}: {str(exc)[:100]})") from None
    q4 = np.empty_like(qp)
    q4[:, order] = qp
    return q4.reshape(-1)


# -- registry hooks ---------------------------------------------------------------------------------


def _bits(text: str) -> float:
    from splitinfer.common.codecs.params import parse_decimal

    bits = parse_decimal(text, "fq bits")
    if not MIN_BITS <= bits <= MAX_BITS or abs(bits * 10 - round(bits * 10)) > 1e-9:
        raise UserError(f"fq bits {text} is outside {MIN_BITS}..{MAX_BITS} or has more than one decimal")
    return round(bits * 10) / 10


def from_id(number: int):
    if QP_ID_BASE <= number < QP_ID_BASE + 1000 * (1 << len(OPT_FLAGS)):
        flags, minus_qp = divmod(number - QP_ID_BASE, 1000)
        if flags & OPT_FLAGS["c"] or not MIN_QP <= -minus_qp <= MAX_QP:
            return None
        return FqCodec(opts="".join(o for o, f in OPT_FLAGS.items() if flags & f), qp=-minus_qp)
    rest = number - ID_BASE
    if not 0 <= rest < 1000 * (1 << len(OPT_FLAGS)):
        return None
    flags, tenths = divmod(rest, 1000)
    if not 10 * MIN_BITS <= tenths <= 10 * MAX_BITS:
        return None
    return FqCodec(tenths / 10, "".join(o for o, f in OPT_FLAGS.items() if flags & f))


def from_param(param):
    if param in (None, ""):
        return FqCodec(DEFAULT_BITS)
    bits_text, _, opts = param.partition(":")
    bad = set(opts) - set(OPT_FLAGS)
    if bad or len(set(opts)) != len(opts):
        raise UserError(f"fq options {opts!r}: use the letters t (per tensor), c (clip search), k (keep constant), "
                        "x (context coder), each at most once")
    if bits_text.startswith("-") or bits_text == "0":  # step mode: fq:QP
        if "c" in opts:
            raise UserError(f"fq:{bits_text}: the clip search (c) applies to bit depths, not to a QP")
        return FqCodec(opts=opts, qp=_qp(bits_text))
    return FqCodec(_bits(bits_text) if bits_text else DEFAULT_BITS, opts)


def _qp(text: str) -> int:
    from splitinfer.common.codecs.params import parse_int

    qp = parse_int(text, "fq QP")
    if not MIN_QP <= qp <= MAX_QP:
        raise UserError(f"fq QP {qp} is outside {MIN_QP}..{MAX_QP}")
    return qp
