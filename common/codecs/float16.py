"""`float16` (id 1): halves floating tensors (IEEE cast, like the field's `astype(float16)`).

Only real floating tensors are narrowed: float32/float64 go over as float16 and come back in their own
dtype (values beyond +-65504 become +-inf, as with any float16 cast). Integer, bool and complex tensors
(shapes, indices, masks) pass through as their own bytes, bit-exact, since rounding them would change
their meaning. A float16 tensor is sent as is.
"""

from __future__ import annotations

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.common.codecs import (
    Codec, CodecError, from_raw, is_float, le_contiguous, norm_dtype, norm_shape, numel, raw_bytes,
)

NAME = "float16"
ORDER = 1  # its place in codec_names() and the help text (codecs/__init__.py)
HELP = "float16 (id 1; integer/bool tensors pass through exactly)"
_F16 = np.dtype("<f2")


class Float16Codec(Codec):
    name = NAME
    lossless = False

    def encode(self, arr) -> bytes:
        arr = np.asarray(arr)
        if not is_float(arr.dtype):
            return raw_bytes(arr)
        return le_contiguous(arr).astype(_F16).tobytes()

    def decode(self, payload, dtype, shape, *, trusted: bool = False):
        dt, dims = norm_dtype(dtype), norm_shape(shape)
        if not is_float(dt):
            return from_raw(payload, dt, dims, NAME)
        need = numel(dims) * 2
        have = memoryview(payload).nbytes
        if have != need:
            raise CodecError(f"{NAME}: payload has {have} bytes but {dt}{list(dims)} as float16 needs {need}")
        half = np.frombuffer(payload, dtype=_F16, count=numel(dims)).reshape(dims)
        return half.astype(dt, copy=False)

    def payload_typesize(self, arr) -> int:
        dt = np.asarray(arr).dtype
        return 2 if is_float(dt) else dt.itemsize

    def max_payload_bytes(self, dtype, shape) -> int:
        dt = norm_dtype(dtype)
        return numel(norm_shape(shape)) * (2 if is_float(dt) else dt.itemsize)


def from_id(number: int):
    return Float16Codec(1) if number == 1 else None


def from_param(param):
    if param is not None:
        raise UserError("'float16' takes no parameter")
    return Float16Codec(1)
