"""Sample tensors the codec tests share: every dtype at full range, and ReLU-like activations."""

from __future__ import annotations

import numpy as np

DTYPES = ["float32", "float16", "float64", "int64", "int32", "int16", "int8",
          "uint8", "uint16", "uint32", "uint64", "bool"]


def sample(dtype: str, shape, seed: int = 0) -> np.ndarray:
    """Values that use the whole range of the dtype (incl. NaN/inf bit patterns for floats)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape, dtype=np.int64))
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return (rng.integers(0, 2, n) == 1).reshape(shape)
    raw = rng.integers(0, 256, n * dt.itemsize, dtype=np.uint8).tobytes()
    return np.frombuffer(raw, dtype=dt).reshape(shape).copy()


def relu_activation(shape=(1, 64, 52, 52), seed: int = 0) -> np.ndarray:
    """A float32 activation after ReLU: half zeros, the rest half-normal."""
    rng = np.random.default_rng(seed)
    return np.maximum(rng.standard_normal(shape).astype(np.float32), 0)


def bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()
