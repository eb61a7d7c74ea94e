"""`video[:QP][:OPT...]`: each crossing tensor coded as a video with inter prediction (FCM-style), through PyAV.

Why: the features of consecutive video frames change little, and a standard video encoder's inter
prediction sends only what changed, with decades of rate-distortion tuning behind it (MPEG's Feature
Coding for Machines codes packed feature channels this way). Each float tensor is quantised to N bits and
its channels tiled into one gray picture (video_pack.py: range, layout); one encoder per tensor stays open
across the frames of a stream (sequence.py), one decoder per tensor per session.

Spec: `video[:QP][:OPT...]`, the QP and options in any order:
- encoder: `x265` (default; libx265, decoded by FFmpeg's hevc), `av1` (libsvtav1, decoded by libdav1d),
  `vp9` (libvpx-vp9, decoded by FFmpeg's vp9);
- QP: constant quantiser, x265 0..51, av1 1..63, vp9 0..63 (libvpx's CRF, constant quality, no bitrate);
  default 6 (x265 at NanoDet's split 95 on 10 vtest frames: 99.5 % relative mAP at 25x);
- preset: x265 by name (`ultrafast` default, `superfast`, `veryfast`, `faster`, `fast`, `medium`);
  av1 `pN` (SVT-AV1 preset 0..13, default 11), vp9 `pN` (cpu-used 0..8, default 8; higher is faster);
- `bN`: bit depth of the samples, 8/10/12 for x265, 8/10 for av1, 8 for vp9 (default 10, vp9 8);
- `gN`: GOP, frames from one keyframe to the next (0..999; 0, the default: a keyframe at the start and
  after each restart only); `intra`: every frame a keyframe (the same as `g1`): intra-only coding.
Canonical spec: QP then the options that differ from the defaults, e.g. `video:30`, `video:40:av1:b8:g50`.
Ids: 1,000,000,000 + 1,000,000 x GOP + 100,000 x E + 1,000 x P + 100 x D + QP, E the encoder (0 x265,
1 av1, 2 vp9), P the preset's index, D the bit depth's (0: 8, 1: 10, 2: 12): 1000000130 = `video:30`.

Zero latency: no B-frames, no look-ahead, one thread per encoder ($SPLITINFER_VIDEO_THREADS: more, within a
picture), a frame's tensors (one encoder each) coded at once on up to as many cores (sequence.py); each
`encode` call returns the one packet of THAT picture (checked). Keyframes are IDR pictures
carrying their parameter sets (forced with the picture type I), so a fresh decoder starts at any keyframe;
the decoder is made anew at each one. Scene cuts: an encoder cannot take back a picture it coded, so the
cut is found before coding, on the tensor itself: a mean squared change from the previous frame above
CUT_CHANGE times that frame's variance (uncorrelated frames give 2; a static camera 0.01..0.1), or more than
CUT_CLIPPED of the values outside the keyframe's range, makes the picture a keyframe (with a new range).
Tuned on features (vtest.avi, NanoDet split 95, BD-rate on output PSNR, bench/bench_video.py): x265 codes
with 8x8 coding units and transform depth 2 over every preset (ultrafast's 16x16 and depth 1 cost 34 % and
12 % more bits); 10-bit samples (8-bit: +5 %; 12-bit: level); SVT-AV1 in its real-time mode (`rtc`: 40 %
fewer bits than its low-delay default). x265 takes QP >= 0 only (a negative QP crashes libx265 4.2).

Payload body (after the sequence header): a kind byte, then
- `V` (keyframe): the layout and range (video_pack.KEY_INFO: channels, tile, cell, grid, picture size,
  bits, lo, hi), CRC-32 of the packet, the packet;
- `v` (predicted frame): CRC-32 of the packet, the packet;
- `Z`: a non-float tensor (ints, bools) or one of fewer than MIN_PICTURED elements (empty, scalars), coded
  losslessly and alone: zstd of its bytes (every frame; ints that cross a split are shapes and indices).
Decoding checks, before any decoder sees a byte: the kind against the header's keyframe flag, the layout
and bit depth against those dtype x shape gives (video_pack.layout_for), the CRC (decoders conceal
damage rather than report it); the decoder is opened with `max_pixels` = the picture's samples (sides
rounded up to 64), so a bitstream announcing a larger picture is refused before anything is allocated for
it; the decoded picture must have exactly the size and sample format expected. Any failure: CodecError.
"""

from __future__ import annotations

import os
import struct
import zlib
from fractions import Fraction

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.common.codecs import CodecError, from_raw, is_float, le_contiguous, numel
from splitinfer.common.codecs import video_pack as vp
from splitinfer.common.codecs.params import parse_int
from splitinfer.common.codecs.sequence import MissingReference, SequentialCodec, TensorDecoder, TensorEncoder
from splitinfer.common.codecs.zstd import ZstdCodec

NAME = "video"
ORDER = 8  # its place in codec_names() and the help text (codecs/__init__.py)
ID_BASE = 1_000_000_000
MAX_GOP = 999
X265_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")
DEPTHS = (8, 10, 12)
# encoder name -> (index in ids, FFmpeg encoder, FFmpeg decoder, QP range, preset count, default preset, depths)
ENCODERS = {
    "x265": (0, "libx265", "hevc", (0, 51), len(X265_PRESETS), 0, (8, 10, 12)),
    "av1": (1, "libsvtav1", "libdav1d", (1, 63), 14, 11, (8, 10)),
    "vp9": (2, "libvpx-vp9", "vp9", (0, 63), 9, 8, (8,)),
}
BY_INDEX = {v[0]: k for k, v in ENCODERS.items()}
DEFAULT_QP = 6
HELP = (f"video[:QP][:OPT...] (features tiled into pictures coded as a video with inter prediction, PyAV; "
        f"sequential, lossy; QP default {DEFAULT_QP}; OPT: x265/av1/vp9, preset (ultrafast.. for x265, pN), "
        f"b8/b10/b12, gN (GOP), intra; ids {ID_BASE} + ..., e.g. {ID_BASE + 130} = video:30)")
CRC = struct.Struct("<I")
MIN_PICTURED = 256  # smaller float tensors (scalars, shapes' worth) go losslessly: a picture is 64x64 at least
KEY_KIND, PRED_KIND, RAW_KIND = b"V", b"v", b"Z"
CUT_CHANGE = 1.0  # scene cut: mean squared change from the previous frame above this times its variance
CUT_SAMPLE = 65536  # values of a tensor looked at for a scene cut
CUT_CLIPPED = 0.01  # scene cut: more than this share of the values outside the keyframe's range

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its configuration to stderr unless told errors only


class VideoCodec(SequentialCodec):
    name = NAME
    lossless = False
    concurrent_tensors = True  # PyAV releases the GIL while an encoder codes: a frame's pictures at once

    def __init__(self, qp: int = DEFAULT_QP, encoder: str = "x265", preset: int | None = None,
                 bits: int | None = None, gop: int = 0):
        index, self.ff_encoder, self.ff_decoder, qps, presets, default_preset, depths = ENCODERS[encoder]
        self.encoder, self.qp, self.gop = encoder, int(qp), int(gop)
        self.preset = default_preset if preset is None else int(preset)
        self.bits = (10 if 10 in depths else depths[0]) if bits is None else int(bits)
        if not qps[0] <= self.qp <= qps[1]:
            raise UserError(f"video {encoder} QP {self.qp} is outside {qps[0]}..{qps[1]}")
        if not 0 <= self.preset < presets:
            raise UserError(f"video {encoder} preset {self.preset} is outside 0..{presets - 1}")
        if self.bits not in depths:
            raise UserError(f"video {encoder} codes {'/'.join(map(str, depths))}-bit samples, not {self.bits}")
        if not 0 <= self.gop <= MAX_GOP:
            raise UserError(f"video GOP {self.gop} is outside 0..{MAX_GOP}")
        codec_id = (ID_BASE + 1_000_000 * self.gop + 100_000 * index + 1_000 * self.preset
                    + 100 * DEPTHS.index(self.bits) + self.qp)
        super().__init__(codec_id, {"qp": self.qp, "encoder": encoder, "preset": self.preset_name,
                                    "bits": self.bits, "gop": self.gop})
        self._zstd = ZstdCodec()

    @property
    def preset_name(self) -> str:
        return X265_PRESETS[self.preset] if self.encoder == "x265" else f"p{self.preset}"

    @property
    def spec(self) -> str:
        _, _, _, _, _, default_preset, depths = ENCODERS[self.encoder]
        parts = [str(self.qp)]
        if self.encoder != "x265":
            parts.append(self.encoder)
        if self.preset != default_preset:
            parts.append(self.preset_name)
        if self.bits != (10 if 10 in depths else depths[0]):
            parts.append(f"b{self.bits}")
        if self.gop:
            parts.append("intra" if self.gop == 1 else f"g{self.gop}")
        return NAME + ":" + ":".join(parts)

    def warm_up(self) -> None:
        import av  # noqa: F401  (loads FFmpeg's libraries: tens of ms)

    def tensor_encoder(self, dtype, shape) -> TensorEncoder:
        if not pictured(np.dtype(dtype), tuple(shape)):
            return _RawEncoder(self._zstd)
        return _Encoder(self, vp.layout_for(tuple(shape)))

    def tensor_decoder(self, dtype, shape) -> TensorDecoder:
        dtype, shape = np.dtype(dtype), tuple(shape)
        if not pictured(dtype, shape):
            return _RawDecoder(self._zstd, dtype, shape)
        return _Decoder(self, dtype, shape, vp.layout_for(shape))

    # the picture formats: what the encoder is fed, what its decoder gives back
    def pix_fmt(self) -> str:
        if self.encoder == "x265":
            return {8: "gray", 10: "gray10le", 12: "gray12le"}[self.bits]
        return "yuv420p" if self.bits == 8 else f"yuv420p{self.bits}le"

    def encoder_options(self) -> dict:
        keyint = 1 if self.gop == 1 else 100_000  # keyframes are forced by the stream (gop, restarts)
        threads = encoder_threads()
        if self.encoder == "x265":
            pools = "none" if threads == 1 else f"{threads}:wpp=1"  # wavefronts: CTU rows in parallel
            params = (f"qp={self.qp}:keyint={keyint}:min-keyint=1:scenecut=0:bframes=0:rc-lookahead=0:"
                      "min-cu-size=8:tu-inter-depth=2:tu-intra-depth=2:repeat-headers=1:info=0:log-level=error:"
                      f"frame-threads=1:pools={pools}")
            return {"preset": self.preset_name, "tune": "zerolatency", "forced-idr": "1", "x265-params": params}
        if self.encoder == "av1":
            return {"preset": str(self.preset), "qp": str(self.qp), "svtav1-params":
                    f"rtc=1:pred-struct=1:lookahead=0:lp={threads}:keyint={1 if self.gop == 1 else -1}"}
        return {"deadline": "realtime", "cpu-used": str(self.preset), "lag-in-frames": "0", "auto-alt-ref": "0",
                "crf": str(self.qp), "b": "0", "threads": str(threads), "row-mt": "0" if threads == 1 else "1"}


def encoder_threads() -> int:
    """Threads per encoder: $SPLITINFER_VIDEO_THREADS (1..16, default 1). Within one picture only (x265's
    wavefronts, SVT-AV1's and libvpx's rows), so latency stays one picture; not part of the spec (the
    decoder needs nothing of it)."""
    text = os.environ.get("SPLITINFER_VIDEO_THREADS") or "1"
    if not text.isdecimal() or not 1 <= int(text) <= 16:
        raise UserError(f"SPLITINFER_VIDEO_THREADS={text!r}: give a whole number of threads in 1..16")
    return int(text)


_REALTIME = tuple(getattr(os, name) for name in ("SCHED_FIFO", "SCHED_RR") if hasattr(os, name))


def open_time_shared(ctx) -> None:
    """Open an encoder without letting it make this process real-time. SVT-AV1 (v4.1 in PyAV's wheels),
    run as root, switches the calling thread to SCHED_FIFO priority 99 when it opens, and every thread it
    then starts inherits that: a few busy threads of that priority starve everything else on the machine
    (seen here: after one av1 test, the test process and the Docker engine it started ran real-time, and
    two spinning build threads stopped a 2-core machine for good). Threads that turned real-time during the
    open are set back to the policy they had (new ones: time-shared)."""
    before = _thread_policies()
    try:
        ctx.open()
    finally:
        for tid, policy in _thread_policies().items():
            was = before.get(tid, os.SCHED_OTHER)  # policies are listed only where the OS has them
            if policy in _REALTIME and was not in _REALTIME:
                try:
                    os.sched_setscheduler(tid, was, os.sched_param(0))
                except OSError:  # the thread ended meanwhile
                    pass


def _thread_policies() -> dict[int, int]:
    """{thread id: scheduling policy} of this process's threads (empty where the OS does not tell)."""
    if not _REALTIME or not os.path.isdir("/proc/self/task"):
        return {}
    out = {}
    for name in os.listdir("/proc/self/task"):
        try:
            out[int(name)] = os.sched_getscheduler(int(name))
        except OSError:  # ended meanwhile
            pass
    return out


def pictured(dtype: np.dtype, shape: tuple) -> bool:
    """Whether a tensor is coded as pictures: floats of at least MIN_PICTURED elements (the rest: zstd)."""
    return is_float(dtype) and numel(shape) >= MIN_PICTURED


def _av():
    import av

    return av


# -- float tensors: pictures --------------------------------------------------------------------------


class _Encoder(TensorEncoder):
    def __init__(self, codec: VideoCodec, lay: vp.Layout):
        self.codec, self.lay = codec, lay
        self.ctx = None
        self.pts = 0
        self.lo = self.hi = 0.0
        self.canvas: np.ndarray | None = None  # the picture (yuv: luma then constant chroma), kept
        self.luma: np.ndarray | None = None
        self.prev: np.ndarray | None = None  # the previous frame as given (float32), to see scene cuts

    def encode_choosing(self, arr, key: bool) -> tuple[bool, bytes]:
        x = np.asarray(arr, dtype=np.float32)
        key = key or self.ctx is None or scene_cut(x, self.prev, self.lo, self.hi)
        body = self.encode(arr, key)
        self.prev = x if x is not arr else x.copy()
        return key, body

    def _open(self) -> None:
        av = _av()
        c = self.codec
        ctx = av.CodecContext.create(c.ff_encoder, "w")
        ctx.width, ctx.height, ctx.pix_fmt = self.lay.width, self.lay.height, c.pix_fmt()
        ctx.time_base = Fraction(1, 25)
        ctx.gop_size = 1 if c.gop == 1 else 100_000
        ctx.options = c.encoder_options()
        try:
            open_time_shared(ctx)
        except av.FFmpegError as exc:
            raise CodecError(f"video: cannot open {c.ff_encoder} for a {self.lay.width}x{self.lay.height} "
                             f"picture ({exc})") from None
        self.ctx, self.pts = ctx, 0

    def encode(self, arr, key: bool) -> bytes:
        av = _av()
        from av.video.frame import PictureType

        if self.ctx is None:
            self._open()
            key = True
        if key:
            self.lo, self.hi = vp.choose_range(np.asarray(arr))
            self._new_canvas()
        vp.tile(vp.quantise(arr, self.codec.bits, self.lo, self.hi), self.lay, self.luma)
        frame = av.VideoFrame.from_ndarray(self.canvas, format=self.codec.pix_fmt())
        frame.pts = self.pts
        self.pts += 1
        if key:
            frame.pict_type = PictureType.I
        try:
            packets = self.ctx.encode(frame)
        except av.FFmpegError as exc:
            raise CodecError(f"video: {self.codec.ff_encoder} failed on a picture ({exc})") from None
        if len(packets) != 1:
            raise CodecError(f"video: {self.codec.ff_encoder} gave {len(packets)} packets for one picture "
                             "(a zero-latency encoder gives exactly one)")
        packet = bytes(packets[0])
        head = KEY_KIND + vp.pack_key_info(self.lay, self.codec.bits, self.lo, self.hi) if key else PRED_KIND
        return head + CRC.pack(zlib.crc32(packet)) + packet

    def _new_canvas(self) -> None:
        lay, bits = self.lay, self.codec.bits
        luma = vp.blank(lay, bits, self.lo, self.hi)
        if self.codec.pix_fmt().startswith("gray"):
            self.canvas = self.luma = luma
            return
        self.canvas = np.full((lay.height * 3 // 2, lay.width), 1 << (bits - 1), luma.dtype)
        self.canvas[:lay.height] = luma
        self.luma = self.canvas[:lay.height]

    def close(self) -> None:
        ctx, self.ctx, self.prev = self.ctx, None, None
        if ctx is not None:
            try:
                ctx.encode(None)  # end of stream (SVT-AV1 complains without it); nothing is pending
            except Exception:
                pass


def scene_cut(x: np.ndarray, prev: np.ndarray | None, lo: float, hi: float) -> bool:
    """Whether `x` (float32) starts a new scene after `prev` (see the module's scene cuts); measured on an
    evenly strided sample of CUT_SAMPLE values (a cut changes the whole tensor, the sample sees it)."""
    if prev is None or prev.shape != x.shape:
        return True
    stride = max(1, x.size // CUT_SAMPLE)
    x, prev = x.reshape(-1)[::stride], prev.reshape(-1)[::stride]
    with np.errstate(all="ignore"):
        change = float(np.mean(np.square(x - prev)))
        var = float(prev.var())
        clipped = float(np.count_nonzero((x < lo) | (x > hi))) / max(x.size, 1)
    if not np.isfinite(change):
        return False  # NaN/inf: quantised as the keyframe's range says; not a reason by itself
    return change > CUT_CHANGE * var or clipped > CUT_CLIPPED


class _Decoder(TensorDecoder):
    def __init__(self, codec: VideoCodec, dtype: np.dtype, shape: tuple, lay: vp.Layout):
        self.codec, self.dtype, self.shape, self.lay = codec, dtype, shape, lay
        self.ctx = None
        self.lo = self.hi = 0.0
        self.what = f"video {dtype}{list(shape)}"
        self.formats = {codec.pix_fmt()}

    def decode(self, body, key: bool) -> np.ndarray:
        body = memoryview(body).cast("B")
        kind = bytes(body[:1])
        if kind != (KEY_KIND if key else PRED_KIND):
            raise CodecError(f"{self.what}: body kind {kind!r} does not match a "
                             f"{'keyframe' if key else 'predicted frame'}")
        rest = body[1:]
        if key:
            self.lo, self.hi, rest = vp.read_key_info(rest, self.lay, self.codec.bits, self.what)
        elif self.ctx is None:
            raise MissingReference(f"{self.what}: a predicted frame and no decoder state (restart at a keyframe)")
        if rest.nbytes <= CRC.size:
            raise CodecError(f"{self.what}: body holds no packet")
        (crc,) = CRC.unpack_from(rest)
        packet = rest[CRC.size:]
        if zlib.crc32(packet) != crc:
            raise CodecError(f"{self.what}: packet CRC-32 mismatch (corrupt bitstream)")
        if key:
            self._open()
        pic = self._picture(bytes(packet))
        q = vp.untile(pic, self.lay)
        return vp.dequantise(q, self.codec.bits, self.lo, self.hi, self.dtype).reshape(self.shape)

    def _open(self) -> None:
        av = _av()
        self.close()
        ctx = av.CodecContext.create(self.codec.ff_decoder, "r")
        ctx.thread_count = 1  # frame threads would hold pictures back
        ctx.options = {"max_pixels": str(self.lay.max_pixels), "flags": "low_delay"}
        self.ctx = ctx

    def _picture(self, packet: bytes) -> np.ndarray:
        av = _av()
        try:
            frames = self.ctx.decode(av.Packet(packet))
        except (av.FFmpegError, MemoryError, OverflowError) as exc:
            raise CodecError(f"{self.what}: {self.codec.ff_decoder} refused the packet ({exc})") from None
        if len(frames) != 1:
            raise CodecError(f"{self.what}: the packet decoded to {len(frames)} pictures, not one")
        f = frames[0]
        lay = self.lay
        if (f.width, f.height) != (lay.width, lay.height) or f.format.name not in self.formats:
            raise CodecError(f"{self.what}: decoded a {f.width}x{f.height} {f.format.name} picture; expected "
                             f"{lay.width}x{lay.height} {self.codec.pix_fmt()}")
        plane = f.planes[0]
        dt = np.uint16 if self.codec.bits > 8 else np.uint8
        rows = np.frombuffer(plane, dt).reshape(lay.height, plane.line_size // np.dtype(dt).itemsize)
        return rows[:, :lay.width]

    def close(self) -> None:
        self.ctx = None


# -- other tensors: zstd, each frame alone -----------------------------------------------------------


class _RawEncoder(TensorEncoder):
    def __init__(self, zstd: ZstdCodec):
        self.zstd = zstd

    def encode(self, arr, key: bool) -> bytes:
        return RAW_KIND + self.zstd.encode_bytes(le_contiguous(arr).reshape(-1).view(np.uint8))


class _RawDecoder(TensorDecoder):
    def __init__(self, zstd: ZstdCodec, dtype: np.dtype, shape: tuple):
        self.zstd, self.dtype, self.shape = zstd, dtype, shape

    def decode(self, body, key: bool) -> np.ndarray:
        body = memoryview(body).cast("B")
        if bytes(body[:1]) != RAW_KIND:
            raise CodecError(f"video {self.dtype}{list(self.shape)}: body kind {bytes(body[:1])!r}; a "
                             f"non-float tensor's is {RAW_KIND!r}")
        need = numel(self.shape) * self.dtype.itemsize
        raw = self.zstd.decode_bytes(body[1:], need, exact=True, what=f"{self.dtype}{list(self.shape)}")
        return from_raw(raw, self.dtype, self.shape, NAME).copy()


# -- spec and ids -------------------------------------------------------------------------------------


def from_id(number: int):
    rest = number - ID_BASE
    if not 0 <= rest < 1_000_000 * (MAX_GOP + 1):
        return None
    gop, rest = divmod(rest, 1_000_000)
    index, rest = divmod(rest, 100_000)
    preset, rest = divmod(rest, 1_000)
    depth, qp = divmod(rest, 100)
    if index not in BY_INDEX or depth >= len(DEPTHS):
        return None
    try:
        return VideoCodec(qp, BY_INDEX[index], preset, DEPTHS[depth], gop)
    except UserError:
        return None


def from_param(param):
    if param in (None, ""):
        return VideoCodec()
    qp = encoder = preset = bits = gop = None
    presets = []
    for tok in param.split(":"):
        if tok.lstrip("-").isdecimal():
            qp = _once(qp, parse_int(tok, "video QP"), "QP")
        elif tok in ENCODERS:
            encoder = _once(encoder, tok, "encoder")
        elif tok in X265_PRESETS or (tok[:1] == "p" and tok[1:].isdecimal()):
            presets.append(tok)
        elif tok[:1] == "b" and tok[1:].isdecimal():
            bits = _once(bits, parse_int(tok[1:], "video bit depth"), "bit depth")
        elif tok[:1] == "g" and tok[1:].isdecimal():
            gop = _once(gop, parse_int(tok[1:], "video GOP"), "GOP")
        elif tok == "intra":
            gop = _once(gop, 1, "GOP")
        else:
            raise UserError(f"video option {tok!r} is none of: a QP, x265/av1/vp9, a preset "
                            f"({'/'.join(X265_PRESETS)} for x265, pN otherwise), bN, gN, intra")
    encoder = encoder or "x265"
    if len(presets) > 1:
        raise UserError(f"video: give one preset, not {' and '.join(presets)}")
    if presets:
        preset = _preset(presets[0], encoder)
    return VideoCodec(DEFAULT_QP if qp is None else qp, encoder, preset, bits, gop or 0)


def _once(old, new, what: str):
    if old is not None:
        raise UserError(f"video: {what} given twice")
    return new


def _preset(tok: str, encoder: str) -> int:
    if encoder == "x265":
        if tok not in X265_PRESETS:
            raise UserError(f"video x265 preset {tok!r} is not one of {'/'.join(X265_PRESETS)}")
        return X265_PRESETS.index(tok)
    if tok in X265_PRESETS:
        raise UserError(f"video {encoder} presets are numbers pN, not {tok!r}")
    return parse_int(tok[1:], f"video {encoder} preset")
