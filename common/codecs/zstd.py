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

NAME = "zstd"
DEFAULT_LEVEL = 3
MIN_LEVEL, MAX_LEVEL = 1, 22
HELP = f"zstd[:LEVEL] (id 2 = level {DEFAULT_LEVEL}, 2LL = level LL in {MIN_LEVEL}..{MAX_LEVEL})"


class ZstdCodec(Codec):
    name = NAME
    lossless = True

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

    def decode(self, payload, dtype, shape, *, trusted: bool = False):
        import zstandard

        dt, dims = norm_dtype(dtype), norm_shape(shape)
        need = numel(dims) * dt.itemsize
        try:
            size = zstandard.frame_content_size(payload)
        except zstandard.ZstdError as exc:
            raise CodecError(f"{NAME}: not a zstd frame ({exc})") from None
        if size != need:
            raise CodecError(f"{NAME}: frame holds {size} bytes but {dt}{list(dims)} needs {need}")
        ctx = self._contexts()
        try:
            raw = ctx.d.decompress(payload, max_output_size=need, allow_extra_data=False)
        except ctx.error as exc:
            raise CodecError(f"{NAME}: corrupt payload ({exc})") from None
        return from_raw(raw, dt, dims, NAME)


def _level(text: str) -> int:
    try:
        level = int(text)
    except ValueError:
        raise UserError(f"zstd level {text!r} is not an integer") from None
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
