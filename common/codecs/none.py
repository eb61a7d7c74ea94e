"""`none` (id 0): the tensor's own little-endian bytes, bit-exact and zero-copy on decode."""

from __future__ import annotations

from splitinfer.common.core.errors import UserError
import numpy as np

from splitinfer.common.codecs import Codec, from_raw, norm_dtype, norm_shape, numel, raw_bytes

NAME = "none"
ORDER = 0  # its place in codec_names() and the help text (codecs/__init__.py)
HELP = "none (id 0)"


class NoneCodec(Codec):
    name = NAME
    lossless = True

    def encode(self, arr) -> bytes:
        return raw_bytes(arr)

    def decode(self, payload, dtype, shape, *, trusted: bool = False):
        return from_raw(payload, dtype, shape, NAME)

    def payload_typesize(self, arr) -> int:
        return np.asarray(arr).dtype.itemsize

    def max_payload_bytes(self, dtype, shape) -> int:
        return numel(norm_shape(shape)) * norm_dtype(dtype).itemsize


def from_id(number: int):
    return NoneCodec(0) if number == 0 else None


def from_param(param):
    if param is not None:
        raise UserError("'none' takes no parameter")
    return NoneCodec(0)
