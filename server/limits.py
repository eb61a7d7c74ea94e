"""Bounds on what one frame may make the network process allocate, fixed per split before any byte is decoded.

Why: a tensor header announces dtype, shape and encoded length, and reassembly and the decoders (zstd, NNC's
helper processes) size their buffers from it. Where Part II's input has open dimensions (NanoDet's ranks
113-135 pass tensors shaped [None, None, None]) any shape would match the model, so the bound must come from
the model, never from the client. A header beyond a bound is refused at part 0, before a reassembly buffer
exists or a codec runs: RESOURCE_EXHAUSTED naming the tensor for a size, INVALID_ARGUMENT for a tensor
that does not fit the split (name, dtype, rank, a static dimension).

Terms:
- `TensorBound`: one tensor a frame must carry (a crossing tensor or a final output of Part I): its dtype,
  per dimension the `static` size (None where open) and an `upper` bound, and `max_elements`.
- reference shape: the tensor's shape in one run of the whole model at its input size (`reference_shapes`;
  the family's fixed input size, else model.json's "input" shape, else `DEFAULT_PROBE_HW`).
- model.json may set "open_dim_slack" (an open dimension may be up to reference x slack; default 1 for a
  family with a fixed input size, 2 otherwise) and "max_crossing_elements" (a cap on every tensor).
  Without a reference shape an open tensor gets `DEFAULT_OPEN_ELEMENTS`.
- encoded bound: 2 x the raw bytes + 64 KiB, room for any codec's overhead on incompressible data; a
  frame's limit (`SplitBounds.frame_bytes`) is the sum over its tensors (the server's own limit still applies).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splitinfer.server.errors import exhausted, invalid

DEFAULT_OPEN_ELEMENTS = 1 << 23  # 32 MiB of float32: for an open tensor the model run could not measure
DEFAULT_PROBE_HW = (800, 1333)  # torchvision detectors' largest resize, for models without a fixed input
CODEC_SLACK_BYTES = 64 << 10


def encoded_bound(raw_bytes: int) -> int:
    """Most encoded bytes a tensor of `raw_bytes` may arrive as."""
    return 2 * raw_bytes + CODEC_SLACK_BYTES


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


@dataclass(frozen=True)
class TensorBound:
    name: str
    dtype: str | None
    static: tuple | None  # per dim: its size, or None where open; None: rank unknown
    upper: tuple | None  # per dim: the most it may be
    max_elements: int

    @property
    def max_raw_bytes(self) -> int:
        return self.max_elements * (np.dtype(self.dtype).itemsize if self.dtype else 8)

    def shown(self) -> list:
        if self.static is None:
            return ["?"]
        return [d if d is not None else f"<={u}" for d, u in zip(self.static, self.upper)]


def tensor_bound(info, reference: tuple | None, slack: int, cap: int | None) -> TensorBound:
    """The bound of one expected tensor (`info`: the split engine's TensorInfo) given its reference shape."""
    shape = info.shape
    static = None if shape is None else tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)
    if static is not None and reference is not None and len(reference) != len(static):
        reference = None  # the run disagrees with the graph's rank: trust neither for the open dims
    if static is None and reference is not None:
        static = (None,) * len(reference)
    if static is not None and all(d is not None for d in static):
        upper, elements = static, _prod(static)
    elif static is not None and reference is not None:
        upper = tuple(d if d is not None else max(1, int(r)) * slack for d, r in zip(static, reference))
        elements = _prod(upper)
    else:
        elements = DEFAULT_OPEN_ELEMENTS
        upper = None if static is None else tuple(d if d is not None else elements for d in static)
    if cap is not None:
        elements = min(elements, int(cap))
    return TensorBound(info.name, info.dtype, static, upper, elements)


class SplitBounds:
    """The bounds of one split's frames; `check(frame_part)` refuses a header before anything is allocated."""

    def __init__(self, where: str, bounds: dict[str, TensorBound]):
        self.where = where  # e.g. "split 60 of 'nanodet'"
        self.tensors = bounds
        self.frame_bytes = sum(encoded_bound(b.max_raw_bytes) for b in bounds.values())  # encoded, all tensors
        self.raw_bytes = sum(b.max_raw_bytes for b in bounds.values())

    def check(self, fp) -> None:
        """Raise RequestError unless every tensor header of frame part 0 fits this split."""
        got = [h.name for h in fp.tensors]
        missing = [n for n in self.tensors if n not in got]
        extra = [n for n in got if n not in self.tensors]
        if missing or extra:
            raise invalid(f"frame {fp.frame_id}: tensors do not match {self.where}: missing {missing[:8]}, "
                          f"unexpected {[e[:80] for e in extra[:8]]}")
        for h in fp.tensors:
            self._check_tensor(fp.frame_id, h, self.tensors[h.name])

    def _check_tensor(self, frame_id: int, h, b: TensorBound) -> None:
        where = f"frame {frame_id}: tensor {h.name!r}"
        shape = list(h.shape)
        if b.dtype and h.dtype != b.dtype:
            raise invalid(f"{where} has dtype {h.dtype}, Part II expects {b.dtype}")
        if b.static is not None:
            fits = len(shape) == len(b.static) and all(s is None or s == g for s, g in zip(b.static, shape))
            if not fits:
                raise invalid(f"{where} has shape {shape[:16]}, Part II expects {b.shown()}")
            for k, (g, u) in enumerate(zip(shape, b.upper)):
                if g > u:
                    raise exhausted(f"{where} announces shape {shape}: dimension {k} is {g}, but {self.where} "
                                    f"can need at most {u} there")
        elements = _prod(shape)
        if elements > b.max_elements:
            raise exhausted(f"{where} announces shape {shape[:16]} ({elements} elements), but {self.where} can "
                            f"need at most {b.max_elements}")
        limit = encoded_bound(b.max_raw_bytes)
        if h.encoded_length > limit:
            raise exhausted(f"{where}: {h.encoded_length} encoded bytes exceed what {self.where} can need "
                            f"({limit})")


def split_bounds(where: str, expected: dict, references: dict, slack: int, cap: int | None) -> SplitBounds:
    """Bounds of every expected tensor (name -> TensorInfo) of a split."""
    return SplitBounds(where, {name: tensor_bound(info, references.get(name), slack, cap)
                               for name, info in expected.items()})


def is_open(info) -> bool:
    return info.shape is None or not all(isinstance(d, int) and d >= 0 for d in info.shape)


# -- reference shapes: one run of the whole model ------------------------------------------------------


def probe_feeds(model, input_hw=None, seed: int = 0) -> dict:
    """Random inputs for the model's graph inputs: static dims as they are; open ones 1 for the batch, 3 for
    channels and `input_hw` (height, width) for the last two."""
    from splitinfer.common.split.types import random_feeds

    return random_feeds(model, seed=seed, image_hw=input_hw or DEFAULT_PROBE_HW)


def reference_shapes(model, names: list[str], input_hw=None) -> dict[str, tuple]:
    """Shapes of `names` in one onnxruntime run of the whole model on `probe_feeds` ({} where it fails)."""
    from splitinfer.common.core.runtime import exposed_values

    feeds = probe_feeds(model, input_hw)
    found = {n: tuple(int(d) for d in feeds[n].shape) for n in names if n in feeds}
    rest = [n for n in names if n not in found]
    if not rest:
        return found
    try:
        values = exposed_values(model, rest, feeds, optimize=False, threads=1, quiet=True)
    except Exception:  # an unusual model: its open tensors get the default bound
        return found
    found.update({n: tuple(int(d) for d in v.shape()) for n, v in values.items() if v.is_tensor()})
    return found
