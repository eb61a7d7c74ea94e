"""`dzstd[:LEVEL[:GOP]]`: lossless inter coding, each frame's bytes XORed with the previous frame's, then zstd.

Why: the lossless reference of the sequential codecs (sequence.py). Features of a static scene repeat most of
their bits from frame to frame (ReLU zeros stay zero, slowly changing values keep their sign, exponent and top
mantissa bits), so the XOR against the previous frame is mostly zero bytes, which zstd squeezes far better than
the frame itself. Bit-exact for every dtype.

Terms: LEVEL is zstd's (1..22, default 3); GOP the frames from one keyframe to the next (0, the default: a
keyframe at the start and after each restart only). A keyframe's body is zstd of the tensor's bytes; a
predicted frame's body is zstd of (its bytes XOR the reference's bytes). Every body's zstd frame records its
content size, which must be exactly dtype x shape bytes before anything is allocated.
Ids: 700000 + 100 x GOP + LEVEL (GOP 0..999), e.g. 700003 = `dzstd` (level 3, no periodic keyframes).
"""

from __future__ import annotations

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.common.codecs import from_raw, le_contiguous, numel
from splitinfer.common.codecs.sequence import SequentialCodec, SizeCutEncoder, TensorDecoder, TensorEncoder
from splitinfer.common.codecs.zstd import DEFAULT_LEVEL, MAX_LEVEL, MIN_LEVEL, ZstdCodec, _level

NAME = "dzstd"
ORDER = 6  # its place in codec_names() and the help text (codecs/__init__.py)
ID_BASE = 700000
MAX_GOP = 999
HELP = (f"dzstd[:LEVEL[:GOP]] (lossless inter: XOR with the previous frame + zstd; sequential; "
        f"id {ID_BASE} + 100 x GOP + LEVEL)")


class DzstdCodec(SequentialCodec):
    name = NAME
    lossless = True
    concurrent_tensors = True  # XOR and zstd release the GIL; ZstdCodec's contexts are per thread

    def __init__(self, level: int = DEFAULT_LEVEL, gop: int = 0):
        super().__init__(ID_BASE + 100 * int(gop) + int(level), {"level": int(level), "gop": int(gop)})
        self.level, self.gop = int(level), int(gop)
        self._zstd = ZstdCodec(self.level)

    def tensor_encoder(self, dtype, shape) -> TensorEncoder:
        return _Encoder(self._zstd)

    def tensor_decoder(self, dtype, shape) -> TensorDecoder:
        return _Decoder(self._zstd, np.dtype(dtype), tuple(shape))


class _Encoder(SizeCutEncoder):
    def __init__(self, zstd: ZstdCodec):
        self.zstd = zstd
        self.ref: np.ndarray | None = None  # the previous frame's bytes

    def encode(self, arr, key: bool) -> bytes:
        cur = le_contiguous(arr).reshape(-1).view(np.uint8)
        body = self.zstd.encode_bytes(cur if key else np.bitwise_xor(cur, self.ref))
        self.ref = cur.copy()
        if key:
            self.key_bytes = len(body)
        return body

    def close(self) -> None:
        self.ref = None


class _Decoder(TensorDecoder):
    def __init__(self, zstd: ZstdCodec, dtype: np.dtype, shape: tuple):
        self.zstd, self.dtype, self.shape = zstd, dtype, shape
        self.nbytes = numel(shape) * dtype.itemsize
        self.ref: np.ndarray | None = None

    def decode(self, body, key: bool) -> np.ndarray:
        raw = self.zstd.decode_bytes(body, self.nbytes, exact=True, what=f"{self.dtype}{list(self.shape)}")
        cur = np.frombuffer(raw, dtype=np.uint8)
        if not key:
            cur = np.bitwise_xor(cur, self.ref)
        self.ref = cur
        return from_raw(cur, self.dtype, self.shape, NAME)

    def close(self) -> None:
        self.ref = None


def from_id(number: int):
    rest = number - ID_BASE
    if not 0 <= rest <= 100 * MAX_GOP + MAX_LEVEL:
        return None
    gop, level = divmod(rest, 100)
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        return None
    return DzstdCodec(level, gop)


def from_param(param):
    if param in (None, ""):
        return DzstdCodec()
    level_text, _, gop_text = param.partition(":")
    level = DEFAULT_LEVEL if level_text == "" else _level(level_text)
    if not gop_text:
        return DzstdCodec(level)
    if not gop_text.isdecimal() or not 0 <= int(gop_text) <= MAX_GOP:
        raise UserError(f"dzstd GOP {gop_text!r} is not a whole number in 0..{MAX_GOP}")
    return DzstdCodec(level, int(gop_text))
