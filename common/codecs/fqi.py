"""`fqi[:QP[:OPTS][:GOP]]`: fq with inter prediction, the fast sequential lossy codec.

Why: the features of consecutive video frames differ little, so after a keyframe coded by fq's step mode
(`fq:QP`) each frame sends only the quantised change against the previous frame as the decoder rebuilt it,
skipping the parts that did not change. Numpy passes and fq's entropy coders keep it at hundreds of MB/s.
Measured (bench/bench_fqi.py --rd, 12 consecutive vtest.avi frames, one keyframe, shared 2-core machine):
BD-rate on output PSNR against NNC's QP ladder (step 4, intra) -55 / -51 / -54 % at splits 46 / 74 / 95,
-65 / -62 / -64 % with option h (fq:QP:x: -10 / +1 / -5 %); fqi:-14 39.7x (fq:-14 14.4x, fq:-14:x 19.2x)
at split 46, predicted frames 29 kB against a 96 kB keyframe; encoding and decoding as fast as dzstd:1
side by side (150-300 MB/s at load average 7-12 on 2 cores; single predicted frames 700+ MB/s).

Terms:
- *reference* R: the previous frame as the decoder rebuilt it (float32); the encoder keeps the very same
  array (closed loop: it predicts from the decoder's reconstruction, so errors never accumulate);
- *residual* d = round((x - R) / step), step = 2**(QP/4) rounded up to a float16 value (fq's); the new
  reference is R + d * step, within step/2 of x everywhere, whatever the number of frames since the
  keyframe;
- *output offsets*: what the decoder returns is R plus, per channel, the mean of x - R (int8 in 1/128 of a
  step, sent as its change since the frame before), so no channel comes back biased (the rounding of many
  small changes shifts a channel's mean; fq's keyframes correct the same way). Every value of every frame
  is then within (1 + 1/128) steps of x (keyframes: one step, fq's bound). The offsets stay out of R;
- *unit*: a band of rows of one (batch, channel) plane (4-D tensors: `band` rows, the fewest giving at
  least UNIT_MIN values; other shapes: the whole tensor); a *skipped* unit has d = 0 everywhere and sends
  nothing but its 0 bit in the *skip bitmap*;
- *hysteresis* (option `h`): residuals of magnitude one are dropped where |x - R| < HYSTERESIS * step, so
  noise around a rounding boundary does not flip symbols frame after frame; R is then within
  HYSTERESIS * step (0.75 step) of x instead of step/2, the output within (1.5 + 1/128) steps.

Body after the sequence header (sequence.py):
- keyframe (or a frame fq must code alone: non-float dtype, NaN/inf, residuals beyond fq's alphabet):
  b"K" | an fq step-mode payload;
- predicted: b"P" | step f32 | vmin i32 | levels u16 | entropy mode u8 | units u32 | bitmap bytes u32 |
  map bytes u32 | offset bytes u32 | (option m: the reference's shift, int8 dy, dx in eighths of a sample,
  fqi_motion.py) | zstd frame of the skip bitmap (ceil(units/8) bytes, bit u set: unit
  u is coded) | zstd frame of the *significance map* (one bit per value of the coded units, set where
  d != 0) | zstd frame of the offsets' changes (one byte per channel, mod 256) | the
  non-zero residuals d - vmin (levels symbols), in order, in fq's entropy mode (Z, P, A or W: zstd for
  speed, ANS where it is 10 % smaller). The map costs about its binary entropy (zstd on packed bits) and
  codes 5-10x faster than ANS over every value.
  With option x a predicted frame may instead be in mode T (fqi_context.py): no significance map (0
  bytes), every value of the coded units under contexts from the previous frame's residuals, where that
  is estimated 3 % smaller at least: 8-17 % fewer bytes per frame on NanoDet's features at splits 46/74/95
  (QP -26..-14), at 3x the coding time (ANS over every value instead of the non-zero ones).
Every size is checked against dtype x shape before anything is allocated; the reference's magnitude is
tracked so that no residual can push it beyond float32.

Spec: QP in -64..0 (default -14), OPTS letters x (context coders: fq's spatial one for keyframes, temporal
contexts for predicted frames), h (hysteresis) and m (motion: each predicted frame's reference shifted by
the slide of a panning camera first, fqi_motion.py), GOP the frames from one keyframe to the next (0..249,
0 = only at the start and after a restart). Ids: 900000 + 400 x GOP + 100 x flags - QP (x = 1, h = 2),
from 1100000 with m: `fqi:-14` = 900014, `fqi:-14:x:25` = 910114, `fqi:-14:xhm` = 1100314.
"""

from __future__ import annotations

import struct

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.common.codecs import CodecError, is_float, le_contiguous, numel
from splitinfer.common.codecs import fq, fq_ans, fqi_context, fqi_motion
from splitinfer.common.codecs.sequence import SequentialCodec, SizeCutEncoder, TensorDecoder, TensorEncoder

NAME = "fqi"
ORDER = 7  # its place in codec_names() and the help text (codecs/__init__.py)
ID_BASE = 900000
MOTION_ID_BASE = 1_100_000  # option m: the same layout from here (flags x, h as without it)
DEFAULT_QP = -14
MAX_GOP = 249
OPTIONS = "xhm"  # the option letters, in canonical order
OPT_FLAGS = {"x": 1, "h": 2}  # their flags in the id (m: the id's base)
HELP = (f"fqi[:QP[:OPTS][:GOP]] (fq with inter prediction: keyframes fq:QP, then closed-loop residuals with "
        f"a skip bitmap; sequential, lossy; QP -64..0 default {DEFAULT_QP}, OPTS x=context coders (smaller, slower), "
        "h=hysteresis, m=motion (the reference shifted with a panning camera), "
        f"GOP 0..{MAX_GOP}; id {ID_BASE} + 400 x GOP + 100 x flags - QP, x = 1, h = 2; with m from {MOTION_ID_BASE})")

UNIT_MIN = 128  # values in a skip unit at least (a band of rows of one plane)
TEMPORAL_GAIN = 0.97  # option x: temporal contexts (slower to decode) when estimated 3 % smaller at least
CLEAR_GAIN = 0.92  # ... than the coding without them (then skipped) when 8 % below its estimate (0.98-1.24x it)
HYSTERESIS = 0.75  # option h: a residual of magnitude one is sent only where |x - R| >= this many steps
OFFSET_UNITS = 128  # per-channel output offsets are sent in 1/128 of a step (int8)
MAX_MAGNITUDE = 1e37  # the reference's values stay below this (float32 holds 3.4e38)
KEY, PRED = b"K", b"P"
_PRED = struct.Struct("<sfiHsIIII")  # b"P", step, vmin, levels, entropy mode, units, bitmap/map/offset bytes


class FqiCodec(SequentialCodec):
    name = NAME
    lossless = False
    concurrent_tensors = True  # numpy passes and zstd release the GIL; fq's zstd contexts are per thread

    def __init__(self, qp: int = DEFAULT_QP, opts: str = "", gop: int = 0):
        self.qp, self.gop = int(qp), int(gop)
        self.opts = "".join(o for o in OPTIONS if o in opts)
        if not fq.MIN_QP <= self.qp <= fq.MAX_QP or not 0 <= self.gop <= MAX_GOP:
            raise UserError(f"fqi: QP {qp} must be in {fq.MIN_QP}..{fq.MAX_QP} and GOP {gop} in 0..{MAX_GOP}")
        flags = sum(OPT_FLAGS.get(o, 0) for o in self.opts)
        base = MOTION_ID_BASE if "m" in self.opts else ID_BASE
        super().__init__(base + 400 * self.gop + 100 * flags - self.qp,
                         {"qp": self.qp, "opts": self.opts, "gop": self.gop})
        self.intra = fq.FqCodec(opts="x" if "x" in self.opts else "", qp=self.qp)
        self.step = fq.step_size(self.qp, 0.0, 0.0)  # 2**(QP/4) rounded up to float16
        self.hysteresis = HYSTERESIS if "h" in self.opts else 0.5
        self.temporal = "x" in self.opts  # predicted frames may use temporal contexts (fqi_context)
        self.motion = "m" in self.opts  # predicted frames carry a shift of the reference (fqi_motion)

    @property
    def spec(self) -> str:
        return f"{NAME}:{self.qp}" + (f":{self.opts}" if self.opts else "") + (f":{self.gop}" if self.gop else "")

    def tensor_encoder(self, dtype, shape) -> TensorEncoder:
        return _Encoder(self, tuple(shape))

    def tensor_decoder(self, dtype, shape) -> TensorDecoder:
        return _Decoder(self, np.dtype(dtype), tuple(shape))

    def warm_up(self) -> None:
        self.intra.warm_up()

    def max_payload_bytes(self, dtype, shape) -> int:
        """fq's bound (a keyframe, or the non-zero residuals: at most every value) plus the sequence header,
        the predicted header, and the zstd frames of the bitmap, the map (n/8 bytes) and the offsets."""
        dims = tuple(shape)
        return self.intra.max_payload_bytes(dtype, dims) + 1024 + numel(dims) // 4 + (dims[1] if len(dims) > 1 else 0)


def units_of(shape: tuple) -> tuple[int, int, int, int]:
    """(units, values per unit, band rows, row width) of a tensor: bands of rows of each plane of a 4-D
    tensor, the fewest rows (a divisor of H, 2 at least where H allows) giving UNIT_MIN values; one unit
    (band 0) for other shapes."""
    if len(shape) != 4 or numel(shape) == 0:
        return 1, numel(shape), 0, 0
    n, c, h, w = shape
    band = next((b for b in range(min(2, h), h + 1) if h % b == 0 and b * w >= UNIT_MIN), h)
    return n * c * (h // band), band * w, band, w


def channels_of(shape: tuple) -> tuple[int, int, int]:
    """(batch, channels, values per channel and batch item) of the per-channel output offsets: axis 1 where
    fq codes per channel (3+ dims, 2+ channels, 64+ values each), else one offset for the tensor."""
    n = numel(shape)
    if len(shape) >= 3 and shape[1] >= 2 and n // shape[1] >= fq.MIN_CHANNEL_VALUES:
        return shape[0], shape[1], n // (shape[0] * shape[1])
    return 1, 1, n


def _grid(units_kept: int, band: int, width: int):
    """The context coder's (N, C, H, W) for the coded units: each band a plane of `band` x `width`."""
    return (1, units_kept, band, width) if band >= 2 and width >= 2 and units_kept else None


class _Encoder(SizeCutEncoder):
    def __init__(self, codec: FqiCodec, shape: tuple):
        self.codec, self.shape = codec, shape
        self.units, self.per_unit, self.band, self.width = units_of(shape)
        self.ref: np.ndarray | None = None  # (units, per unit) float32: the decoder's reconstruction
        self.magnitude = 0.0
        self._intra: tuple | None = None  # the last keyframe's payload and dtype, decoded when first needed
        self._t = None  # work buffer of the predicted frames
        self.layout = channels_of(shape)
        self.off = np.zeros(self.layout[1], np.int8)  # the last frame's output offsets
        self.act: np.ndarray | None = None  # option x: the last residuals' activity (fqi_context; None: zeros)
        self.held: fqi_context.Held | None = None  # option x: the last T frame's tables

    def coded_alone(self, body: bytes) -> bool:
        """A residual that cannot be coded (beyond the alphabet, not finite) falls back to a keyframe body."""
        return body[:1] == KEY

    def encode(self, arr, key: bool) -> bytes:
        x = np.asarray(arr)
        if not key and is_float(x.dtype) and x.size:
            if self._intra is not None:  # the reference of the keyframe before: decoded as the decoder will
                y = self.codec.intra.decode(*self._intra, self.shape)
                self.ref, self.magnitude = _intra_reference(y, self.units)
                self._intra = None
            if self.ref is not None:
                body = self._predicted(le_contiguous(x).astype(np.float32, copy=False).reshape(self.units, -1))
                if body is not None:
                    return body
        payload = self.codec.intra.encode(x)
        self.ref, self._intra, self.act, self.held = None, (payload, x.dtype), None, None
        self.off[:] = 0
        self.key_bytes = len(payload) + 1
        return KEY + payload

    def _predicted(self, x: np.ndarray) -> bytes | None:
        codec, step = self.codec, self.codec.step
        shift = (0, 0)
        if codec.motion and fqi_motion.applies(self.shape):  # the reference moved with the scene first
            shift = fqi_motion.estimate(x, self.ref, self.shape, step)
            if shift != (0, 0):  # the decoder shifts alike and takes the same bound of the shifted values
                self.ref, self.magnitude = fqi_motion.shifted_reference(self.ref, self.shape, shift)
        if self._t is None:
            self._t = np.empty_like(self.ref)
        t = self._t
        np.subtract(x, self.ref, out=t)
        t *= np.float32(1 / step)  # (x - R) in steps
        drop = np.abs(t) < np.float32(codec.hysteresis) if codec.hysteresis > 0.5 else None
        nb, c, inner = self.layout
        sums = t.reshape(nb, c, inner).sum(axis=2).sum(axis=0, dtype=np.float64)  # float32 pairwise sums
        np.rint(t, out=t)
        if drop is not None:  # hysteresis: no +-1 residual for values within HYSTERESIS steps of R
            t[drop] = 0
        sums -= t.reshape(nb, c, inner).sum(axis=2).sum(axis=0, dtype=np.float64)  # the rounding's error per channel
        lo, hi = float(t.min()), float(t.max())  # NaN/inf anywhere: not finite
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo >= fq.MAX_LEVELS:
            return None  # beyond fq's alphabet (a scene cut) or not finite: coded alone
        vmin, levels = int(lo), max(fq.MIN_LEVELS, int(hi - lo) + 1)
        magnitude = self.magnitude + (levels + abs(vmin)) * step
        if not magnitude < MAX_MAGNITUDE:
            return None
        nz = t != 0
        coded = nz.any(axis=1)
        zc = codec.intra._zstd().c
        bitmap = zc.compress(np.packbits(coded).tobytes())
        mode, sig, body = self._code_residuals(t, nz, coded, vmin, levels, zc)
        if codec.temporal:
            self.act = fqi_context.activity(t)
        off = np.clip(np.rint(sums * (OFFSET_UNITS / (nb * inner))), -127, 127).astype(np.int8)
        offs = zc.compress((off.view(np.uint8) - self.off.view(np.uint8)).tobytes())  # change, mod 256
        t *= np.float32(step)  # R += d * step: the float32 products the decoder adds (see _Decoder._residual)
        self.ref += t
        self.off, self.magnitude = off, magnitude
        head = _PRED.pack(PRED, step, vmin, levels, mode, self.units, len(bitmap), len(sig), len(offs))
        if codec.motion:
            head += fqi_motion.pack(shift)
        return head + bitmap + sig + offs + body

    def _code_residuals(self, t, nz, coded, vmin: int, levels: int, zc) -> tuple[bytes, bytes, bytes]:
        """(entropy mode, significance map, symbols) of the rounded residuals `t`: the non-zero ones in fq's
        entropy mode behind a significance map, or (option x) every value of the coded units in mode T
        where smaller (estimated CLEAR_GAIN below the other's estimate: that one is not coded at all)."""
        plan = self._temporal_plan(t, coded, vmin, levels) if self.codec.temporal else None
        mode = fqi_context.MODE if plan and plan[0] < CLEAR_GAIN * plan[1] else None
        if mode is None:
            vals = np.take(t.reshape(-1), np.flatnonzero(nz))  # the non-zero residuals, unit by unit
            sym = (vals - np.float32(vmin)).astype(np.uint8 if levels <= 256 else np.uint16)
            body, mode = self.codec.intra.entropy_code(sym, None, levels, quick=True)
            sig = zc.compress(np.packbits((nz if coded.all() else nz[coded]).reshape(-1)).tobytes())
            if plan and plan[0] < TEMPORAL_GAIN * (len(body) + len(sig)):
                mode = fqi_context.MODE
        self.held = None
        if mode == fqi_context.MODE:
            _, _, by, tables, send, counts = plan
            body, sig = fqi_context.encode(by, tables, send, zc), b""
            self.held = fqi_context.Held(vmin, counts)
        return mode, sig, body

    def _temporal_plan(self, t: np.ndarray, coded: np.ndarray, vmin: int, levels: int):
        """(estimated bytes under temporal contexts, estimated bytes without them, the symbols by class, the
        tables, whether they are sent, this frame's counts) of the residuals of the coded units, zeros included
        (the first predicted frame after a keyframe: no activity yet, the reference's sign is the context)."""
        cls = fqi_context.coded_classes(self.act, self.ref, self.shape, coded)
        sym = ((t if coded.all() else t[coded]).reshape(-1) - np.float32(vmin)).astype(np.int32)
        by = fqi_context.ByClass.of(sym, cls)
        estimate, tables, send, counts = fqi_context.plan(by, levels, vmin, self.held)
        return estimate, fqi_context.plain_estimate(counts, -vmin), by, tables, send, counts

    def close(self) -> None:
        self.ref = self._intra = self._t = self.act = self.held = None


def _intra_reference(y: np.ndarray, units: int):
    """The reference after a keyframe decoded as `y`: float32 (units, per unit), and its magnitude
    (None for tensors no residual can follow: non-float, NaN/inf, empty)."""
    if not is_float(y.dtype) or y.size == 0:
        return None, 0.0
    ref = np.array(y, dtype=np.float32).reshape(units, -1)
    magnitude = float(np.abs(ref).max())
    if not magnitude < MAX_MAGNITUDE:
        return None, 0.0
    return ref, magnitude


class _Decoder(TensorDecoder):
    def __init__(self, codec: FqiCodec, dtype: np.dtype, shape: tuple):
        self.codec, self.dtype, self.shape = codec, dtype, shape
        self.units, self.per_unit, self.band, self.width = units_of(shape)
        self.ref: np.ndarray | None = None
        self.magnitude = 0.0
        self.layout = channels_of(shape)
        self.off = np.zeros(self.layout[1], np.int8)
        self.act: np.ndarray | None = None  # option x: the last residuals' activity (None: zeros)
        self.held: fqi_context.Held | None = None  # option x: the last T frame's tables

    def decode(self, body, key: bool) -> np.ndarray:
        view = memoryview(body)
        kind = bytes(view[:1])
        if kind == KEY:
            out = self.codec.intra.decode(view[1:], self.dtype, self.shape)
            self.ref, self.magnitude = _intra_reference(out, self.units)
            self.off = np.zeros(self.layout[1], np.int8)
            self.act = self.held = None
            return out
        if kind != PRED:
            raise CodecError(f"{NAME}: body starts with {kind!r}, not {KEY!r} (intra) or {PRED!r} (predicted)")
        if key:
            raise CodecError(f"{NAME}: a keyframe holds a predicted body")
        if self.ref is None:
            raise CodecError(f"{NAME}: predicted body for {self.dtype}{list(self.shape)}, whose reference "
                             "cannot be predicted from (not a float tensor, or one coded exactly)")
        ref, off, step, self.magnitude, (self.act, self.held) = self._residual(view)
        self.ref, self.off = ref, off
        nb, c, inner = self.layout
        out = ref.reshape(nb, c, inner) + (off.astype(np.float32) * np.float32(step / OFFSET_UNITS))[:, None]
        return out.reshape(self.shape).astype(self.dtype, copy=False)

    def _residual(self, view: memoryview):
        """The new reference (the held one plus the residual of a predicted body), the output offsets, the
        step, the reference's magnitude bound and (the residuals' activity, the held tables) (option x)."""
        if view.nbytes < _PRED.size:
            raise CodecError(f"{NAME}: predicted body of {view.nbytes} bytes is shorter than its header")
        _, step, vmin, levels, mode, units, bitmap_len, sig_len, off_len = _PRED.unpack_from(view)
        if units != self.units:
            raise CodecError(f"{NAME}: predicted body claims {units} units, {list(self.shape)} has {self.units}")
        if not fq.MIN_LEVELS <= levels <= fq.MAX_LEVELS:
            raise CodecError(f"{NAME}: residual alphabet of {levels} symbols "
                             f"(allowed {fq.MIN_LEVELS}..{fq.MAX_LEVELS})")
        if not (np.isfinite(step) and step > 0) or abs(vmin) > fq.MAX_LEVELS:
            raise CodecError(f"{NAME}: residual step {step} or offset {vmin} is not plausible")
        pos = _PRED.size
        base, bound = self.ref, self.magnitude  # what the residuals are added to, and its magnitude bound:
        if self.codec.motion:  # ... the reference shifted, in a stream with option m
            base, bound = self._shifted_reference(view, pos)
            pos += fqi_motion.SHIFT.size
        magnitude = bound + (levels + abs(vmin)) * float(step)
        if not magnitude < MAX_MAGNITUDE:
            raise CodecError(f"{NAME}: residual step {step} would push the reference beyond float32")
        if view.nbytes < pos + bitmap_len + sig_len + off_len:
            raise CodecError(f"{NAME}: predicted body ends inside its skip bitmap, significance map or offsets")
        zd = self.codec.intra._zstd().d
        coded = _bits(view[pos:pos + bitmap_len], units, zd, "skip bitmap")
        kept_units = int(coded.sum())
        pos += bitmap_len
        temporal = mode == fqi_context.MODE
        if temporal and (not self.codec.temporal or sig_len):
            raise CodecError(f"{NAME}: temporal-context residuals in a stream of {self.codec.spec} (option x has "
                             f"them) or with a {sig_len}-byte significance map (they have none)")
        if not temporal:
            nz = _bits(view[pos:pos + sig_len], kept_units * self.per_unit, zd, "significance map")
        pos += sig_len
        change = np.frombuffer(fq_ans.zstd_table(view[pos:pos + off_len], self.layout[1], zd, "offsets"), np.uint8)
        off = (self.off.view(np.uint8) + change).view(np.int8)
        if (off == -128).any():
            raise CodecError(f"{NAME}: an output offset is -128/{OFFSET_UNITS} of a step (at most 127)")
        pos += off_len
        held = None
        if temporal:  # every value of the coded units, under the classes the last residuals give
            idx = np.arange(kept_units * self.per_unit)
            sym, held = self._temporal_symbols(base, view[pos:], coded, vmin, levels, zd)
        else:
            idx = np.flatnonzero(nz)  # positions among the coded units' values
            sym = self.codec.intra.decode_symbols(mode, view[pos:], idx.size, levels)
        if kept_units != units:  # ... as positions in the tensor
            per = self.per_unit
            idx = np.flatnonzero(coded)[idx // per] * per + idx % per
        ref, act = self._apply(base, idx, sym, vmin, levels, step, every=temporal and kept_units == units)
        return ref, off, float(step), magnitude, (act, held)

    def _shifted_reference(self, view, pos: int) -> tuple[np.ndarray, float]:
        """(the reference shifted as the body's motion shift (option m, after the header) says, its bound)."""
        shift = fqi_motion.unpack(view, pos)
        if shift == (0, 0):
            return self.ref, self.magnitude
        if not fqi_motion.applies(self.shape):
            raise CodecError(f"{NAME}: motion shift {shift} for {list(self.shape)}, which is never shifted (4-D "
                             f"with planes of {fqi_motion.MIN_SIDE}x{fqi_motion.MIN_SIDE} at least are)")
        return fqi_motion.shifted_reference(self.ref, self.shape, shift)

    def _temporal_symbols(self, base, body, coded, vmin: int, levels: int, zd):
        """(symbols of a T body, the tables it leaves held: its own counts); `base` the (shifted) reference."""
        cls = fqi_context.coded_classes(self.act, base, self.shape, coded)
        sym, counts = fqi_context.decode(body, cls, levels, vmin, self.held, zd)
        return sym, fqi_context.Held(vmin, counts)

    def _apply(self, base, idx, sym, vmin: int, levels: int, step: float, every: bool):
        """(`base` plus the residuals `sym` at positions `idx`, their activity (option x)); `every`: idx
        is every position (no scatter)."""
        lut = (np.arange(levels, dtype=np.float32) + np.float32(vmin)) * np.float32(step)
        ref = base.copy() if base is self.ref else base  # a shifted reference is a new array already
        flat = ref.reshape(-1)
        if every:
            flat += np.take(lut, sym)
        else:
            flat[idx] += np.take(lut, sym)
        if not self.codec.temporal:
            return ref, None
        act_of = fqi_context.activity(np.arange(levels) + vmin)  # per symbol: one lookup, not four passes
        if every:
            return ref, np.take(act_of, sym)
        act = np.zeros(self.ref.size, np.uint8)
        act[idx] = np.take(act_of, sym)
        return ref, act

    def close(self) -> None:
        self.ref = self.act = self.held = None


# -- registry hooks ---------------------------------------------------------------------------------


def from_id(number: int):
    for base, extra in ((ID_BASE, ""), (MOTION_ID_BASE, "m")):
        rest = number - base
        if not 0 <= rest < 400 * (MAX_GOP + 1):
            continue
        gop, rest = divmod(rest, 400)
        flags, minus_qp = divmod(rest, 100)
        if not -fq.MIN_QP >= minus_qp >= -fq.MAX_QP:
            return None
        return FqiCodec(-minus_qp, "".join(o for o, f in OPT_FLAGS.items() if flags & f) + extra, gop)
    return None


def from_param(param):
    from splitinfer.common.codecs.params import parse_int

    if param in (None, ""):
        return FqiCodec()
    qp_text, *rest = param.split(":")
    qp = DEFAULT_QP if qp_text == "" else parse_int(qp_text, "fqi QP")
    if not fq.MIN_QP <= qp <= fq.MAX_QP:
        raise UserError(f"fqi QP {qp} is outside {fq.MIN_QP}..{fq.MAX_QP}")
    opts, gop = "", 0
    if len(rest) > 2:
        raise UserError(f"fqi {param!r}: give at most QP, options and GOP")
    for k, part in enumerate(rest):
        if part[:1].isdigit():
            gop = parse_int(part, "fqi GOP")
            if not 0 <= gop <= MAX_GOP or k != len(rest) - 1:
                raise UserError(f"fqi GOP {part!r}: a whole number in 0..{MAX_GOP}, last")
        elif set(part) - set(OPTIONS) or len(set(part)) != len(part) or k:
            raise UserError(f"fqi options {part!r}: the letters x (context coder), h (hysteresis), m (motion), "
                            "each at most once")
        else:
            opts = part
    return FqiCodec(qp, opts, gop)


def _bits(packed, count: int, zstd_d, what: str) -> np.ndarray:
    """`count` flags (bool) from a zstd frame of exactly ceil(count/8) packed bytes; bits beyond: refused."""
    raw = fq_ans.zstd_table(packed, (count + 7) // 8, zstd_d, what)
    bits = np.unpackbits(np.frombuffer(raw, np.uint8)).view(bool)
    if bits[count:].any():
        raise CodecError(f"{NAME}: {what} has bits set beyond its {count} entries")
    return bits[:count]
