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
from typing import NamedTuple

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.common.codecs import (
    Codec, CodecError, from_raw, is_float, le_contiguous, norm_dtype, norm_shape, numel, raw_bytes,
)
# The codec's parts: fq_quant (the quantiser), fq_ans (packing and ANS), fq_context (the context coder).
from splitinfer.common.codecs.fq_ans import (
    ANS_MAX_LEVELS, NAME, PACK_MAX_WIDTH, ans_body, ans_encode, ans_symbols, pack_symbols, unpack_symbols,
    wide_ans_body, wide_ans_symbols,
)
from splitinfer.common.codecs.fq_context import (
    CTX_MAX_LEVELS, CTX_MIN_SYMBOLS, ctx_decode, ctx_encode, ctx_plan, entropy_bytes,
)
from splitinfer.common.codecs.fq_quant import (
    MAX_LEVELS, MIN_CHANNEL_VALUES, MIN_LEVELS, STEP_MAX_LEVELS, channel_ranges, clip_range, dequantise,
    quantise, side_information, step_quantise, step_size, symbol_grid, unbiased_offsets,
)

# Names of the parts that tests and fqi.py read as fq.X (the codec's vocabulary), beside this module's own.
__all__ = ["FqCodec", "from_id", "from_param", "ans_encode", "ans_symbols", "pack_symbols", "unpack_symbols",
           "wide_ans_symbols", "MIN_CHANNEL_VALUES"]
DEFAULT_BITS = 4
MIN_BITS, MAX_BITS = 2, 12
ORDER = 4  # its place in codec_names() and the help text (codecs/__init__.py)
ID_BASE = 30000
OPT_FLAGS = {"t": 1, "c": 2, "k": 4, "x": 8}  # canonical order of the option letters
HELP = (f"fq[:BITS[:OPTS]] (id 30000 + 1000*flags + 10*BITS; BITS {MIN_BITS}..{MAX_BITS}, one decimal "
        f"allowed (levels = round(2**BITS)), default {DEFAULT_BITS}; OPTS t=per tensor (flag 1), "
        "c=clip search (2), k=keep constant channels (4), x=spatial context coder (8); lossy) or "
        "fq:QP[:OPTS] (step mode: one step 2**(QP/4) per tensor, QP -64..0, id 50000 + 1000*flags - QP; "
        "e.g. fq:-14:x)")

ZSTD_LEVEL = 1
ANS_GAIN = 0.9  # ANS (~100-150 MB/s decode) replaces zstd (GB/s) only when this much smaller

MIN_QP, MAX_QP = -64, 0  # step mode: step = 2**(QP/4), NNC's QP scale (QP density 2)
QP_ID_BASE = 50000  # step mode ids: 50000 + 1000*flags - QP

_HEAD = struct.Struct("<2ssHBI")  # magic, mode, levels, layout, channels
_MAGIC = b"FQ"
MODE_RAW, MODE_ZSTD, MODE_PACKED, MODE_ANS, MODE_CTX, MODE_WIDE = b"R", b"Z", b"P", b"A", b"C", b"W"
HALF_SIDE = 0x80  # layout flag: lo and step sent as float16
ONE_STEP = 0x40  # layout flag: one step for every channel, sent once (the step mode)


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
        cmin, cmax, view = channel_ranges(x, self.per_tensor)
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
        return self._payload(q, levels, view, const, lo, step, half, symbol_grid(x, const, view))

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
        return self._payload(q, levels, view, const, lo, steps, half, symbol_grid(x, const, view))

    def entropy_code(self, q: np.ndarray, grid, levels: int, quick: bool = False) -> tuple[bytes, bytes]:
        """The smallest of: zstd (measured), ANS with one table, ANS with spatial contexts (estimated
        from their tables' entropy first, then coded and measured). `quick`: symbols of a wide alphabet
        (over 256 levels, two bytes each, where zstd is far behind ANS) go to ANS without a zstd trial."""
        if quick and levels > ANS_MAX_LEVELS and q.size:
            counts = np.bincount(q, minlength=levels).astype(np.uint32)
            return wide_ans_body(q, counts, self._zstd().c), MODE_WIDE
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
        options = [(entropy_bytes(counts) + table, MODE_WIDE if wide else MODE_ANS, ANS_GAIN * len(z))]
        if self.context and grid is not None and levels <= CTX_MAX_LEVELS and q.size >= CTX_MIN_SYMBOLS:
            plan = ctx_plan(q.reshape(grid), levels)
            options.append((plan.estimate, MODE_CTX, len(z)))
        estimate, mode, bar = min(options, key=lambda o: o[0] - o[2])
        if estimate >= bar:
            return z, zmode
        if mode == MODE_CTX:
            body = ctx_encode(plan, self._zstd().c)
        elif mode == MODE_WIDE:
            body = wide_ans_body(q, counts, self._zstd().c)
        else:
            body = ans_body(q, counts)
        return (body, mode) if len(body) < len(z) else (z, zmode)

    # -- decode ------------------------------------------------------------------------------------

    def decode(self, payload, dtype, shape, *, trusted: bool = False):
        """Named steps: the header (checked against dtype x shape), the side information (constant-channel
        mask, lo and step), the symbols (`decode_symbols`), then the values (`dequantise`)."""
        dt, dims = norm_dtype(dtype), norm_shape(shape)
        view = memoryview(payload).cast("B")
        if view.nbytes >= 3 and bytes(view[:3]) == _MAGIC + MODE_RAW:
            return from_raw(view[3:], dt, dims, NAME)
        head = read_header(view, dt, dims)
        const, lo, step, pos = read_side(view, head)
        n_sym = numel(dims) // head.channels * int((~const).sum())
        spatial = len(dims) == 4 and min(dims[2], dims[3]) >= 2 and n_sym > 0
        grid = (dims[0], n_sym // (dims[0] * dims[2] * dims[3]), dims[2], dims[3]) if spatial else None
        q = self.decode_symbols(head.mode, view[pos:], n_sym, head.levels, grid)
        out = dequantise(q, lo, step, const, dims, head.channels, head.levels)
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


# -- decoding the header and the side information ------------------------------------------------------


class Header(NamedTuple):
    """An fq payload's header, checked: entropy mode, levels, layout (0 tensor, 1 channel), channels, and the
    layout flags (lo and step as float16; one step for every channel)."""

    mode: bytes
    levels: int
    layout: int
    channels: int
    half: bool
    one_step: bool


def read_header(view: memoryview, dt: np.dtype, dims: tuple) -> Header:
    """The header of a quantised payload, every field checked against dtype x shape."""
    if view.nbytes < _HEAD.size:
        raise CodecError(f"{NAME}: payload of {view.nbytes} bytes is shorter than its {_HEAD.size}-byte header")
    magic, mode, levels, layout, channels = _HEAD.unpack_from(view)
    if magic != _MAGIC or mode not in (MODE_ZSTD, MODE_PACKED, MODE_ANS, MODE_CTX, MODE_WIDE):
        raise CodecError(f"{NAME}: payload does not start with an fq header (got {bytes(view[:3])!r})")
    if not is_float(dt):
        raise CodecError(f"{NAME}: payload is quantised but the tensor's dtype is {dt}")
    if numel(dims) == 0:
        raise CodecError(f"{NAME}: quantised payload for an empty tensor {list(dims)}")
    if not MIN_LEVELS <= levels <= MAX_LEVELS:
        raise CodecError(f"{NAME}: header claims {levels} levels, outside {MIN_LEVELS}..{MAX_LEVELS}")
    half, one_step, layout = bool(layout & HALF_SIDE), bool(layout & ONE_STEP), layout & ~(HALF_SIDE | ONE_STEP)
    expect_c = 1 if layout == 0 else (dims[1] if len(dims) >= 3 else -1)
    if layout not in (0, 1) or channels != expect_c or (layout == 1 and channels < 2):
        raise CodecError(f"{NAME}: header claims layout {layout} with {channels} channels, "
                         f"which does not fit shape {list(dims)}")
    return Header(mode, levels, layout, channels, half, one_step)


def read_side(view: memoryview, head: Header) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(constant-channel mask, lo per channel, step per channel, position of the body) after the header."""
    channels = head.channels
    pos = _HEAD.size
    mask_len = (channels + 7) // 8
    item = 2 if head.half else 4
    n_steps = 1 if head.one_step else channels
    if view.nbytes < pos + mask_len + item * (channels + n_steps):
        raise CodecError(f"{NAME}: payload of {view.nbytes} bytes ends inside its side information")
    mask = np.unpackbits(np.frombuffer(view, np.uint8, mask_len, pos), bitorder="little")
    if mask[channels:].any():
        raise CodecError(f"{NAME}: constant-channel mask has bits set beyond channel {channels}")
    const = mask[:channels].astype(bool)
    pos += mask_len
    side_dtype = "<f2" if head.half else "<f4"
    lo = np.frombuffer(view, side_dtype, channels, pos).astype(np.float32)
    step = np.frombuffer(view, side_dtype, n_steps, pos + item * channels).astype(np.float32)
    if head.one_step:
        step = np.full(channels, step[0], np.float32)
    pos += item * (channels + n_steps)
    if not (np.isfinite(lo).all() and np.isfinite(step).all()) or (step < 0).any():
        raise CodecError(f"{NAME}: side information holds a non-finite or negative scale/offset")
    return const, lo, step, pos


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
