"""`zstd[:LEVEL]` (id 2 = level 3, 2LL = level LL in 1..22): fast lossless general-purpose compression.

Bit-exact for every dtype. Frames carry their content size and a checksum, so a decoder refuses a
payload whose size does not match dtype x shape before allocating, and detects corruption.
Compressor contexts are not thread-safe, hence one per thread.
"""

from __future__ import annotations

import threading

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.common.codecs import Codec, CodecError, from_raw, le_contiguous, norm_dtype, norm_shape, numel
from splitinfer.common.codecs.params import parse_int

NAME = "zstd"
ORDER = 2  # its place in codec_names() and the help text (codecs/__init__.py)
DEFAULT_LEVEL = 3
MIN_LEVEL, MAX_LEVEL = 1, 22
HELP = f"zstd[:LEVEL] (id 2 = level {DEFAULT_LEVEL}, 2LL = level LL in {MIN_LEVEL}..{MAX_LEVEL})"


class ZstdCodec(Codec):
    name = NAME
    lossless = True
    byte_stage = True

    def __init__(self, level: int = DEFAULT_LEVEL):
        super().__init__(2 if level == DEFAULT_LEVEL else 200 + level, {"level": int(level)})
        self.level = int(level)
        self._local = threading.local()

    def _contexts(self):
        local = self._local
        if not hasattr(local, "c"):
            import zstandard

            local.c = zstandard.ZstdCompressor(level=self.level, write_checksum=True, write_content_size=True)
            local.d = zstandard.ZstdDecompressor()
            local.error = zstandard.ZstdError
        return local

    def encode(self, arr) -> bytes:
        flat = le_contiguous(arr).reshape(-1).view(np.uint8)
        return self._contexts().c.compress(memoryview(flat))

    def encode_bytes(self, buf, typesize: int = 1) -> bytes:
        """As a chain stage: one frame of the previous stage's bytes."""
        return self._contexts().c.compress(memoryview(buf).cast("B"))

    def decode(self, payload, dtype, shape, *, trusted: bool = False):
        dt, dims = norm_dtype(dtype), norm_shape(shape)
        need = numel(dims) * dt.itemsize
        raw = self.decode_bytes(payload, need, exact=True, what=f"{dt}{list(dims)}")
        return from_raw(raw, dt, dims, NAME)

    def decode_bytes(self, payload, limit: int, exact: bool = False, what: str = "this stage") -> bytes:
        """The frame's bytes; its content size (read before anything is allocated) must be exactly
        `limit` (`exact`) or at most `limit` (a chain stage: what the previous stage can produce)."""
        import zstandard

        try:
            size = zstandard.frame_content_size(payload)
        except zstandard.ZstdError as exc:
            raise CodecError(f"{NAME}: not a zstd frame ({exc})") from None
        if size < 0 or ((size != limit) if exact else size > limit):
            shown = "an unknown number of" if size < 0 else size
            raise CodecError(f"{NAME}: frame holds {shown} bytes but {'exactly' if exact else 'at most'} "
                             f"{limit} fit {what}")
        ctx = self._contexts()
        try:
            raw = ctx.d.decompress(payload, max_output_size=max(size, 1), allow_extra_data=False)
        except ctx.error as exc:
            raise CodecError(f"{NAME}: corrupt payload ({exc})") from None
        if len(raw) != size:
            raise CodecError(f"{NAME}: frame decompressed to {len(raw)} bytes, its header said {size}")
        return raw


def _level(text: str) -> int:
    level = parse_int(text, "zstd level")
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        raise UserError(f"zstd level {level} is outside {MIN_LEVEL}..{MAX_LEVEL}")
    return level


def from_id(number: int):
    if number == 2:
        return ZstdCodec(DEFAULT_LEVEL)
    if 200 + MIN_LEVEL <= number <= 200 + MAX_LEVEL:
        return ZstdCodec(number - 200)
    return None


def from_param(param):
    return ZstdCodec(DEFAULT_LEVEL if param in (None, "") else _level(param))
