"""Input sizes of a model for the size analysis: image-like inputs, their height x width, and the shapes to analyse.

Defined terms: *image-like input* (rank 3 or 4 with a channel axis of 1, 3 or 4: NCHW, NHWC, CHW or HWC),
*nominal input size* (the size the model was made for: metadata `splitinfer.input_hw`, else its fixed
image dims), *input shapes* (every graph input's dims with the batch set to 1 and height x width set).
"""

from __future__ import annotations

import re

import numpy as np
import onnx

from splitinfer.common.core.errors import UserError


def parse_input_size(text) -> tuple[int, int]:
    """'480x640' (height x width) -> (480, 640); a single number means a square."""
    if isinstance(text, (tuple, list)) and len(text) == 2:
        h, w = text
    else:
        m = re.fullmatch(r"\s*(\d+)\s*(?:[xX*,]\s*(\d+))?\s*", str(text))
        if not m:
            raise UserError(f"bad input size {text!r} (expected HxW, e.g. 480x640, or one number for a square)")
        h, w = int(m.group(1)), int(m.group(2) or m.group(1))
    h, w = int(h), int(w)
    if h < 1 or w < 1:
        raise UserError(f"bad input size {text!r}: height and width must be positive")
    return h, w


def spatial_axes(dims: list) -> tuple[int, int] | None:
    """Axes of height and width of an image-like input: NCHW, NHWC, CHW or HWC; None if not image-like."""
    def is_channels(d):
        return isinstance(d, int) and d in (1, 3, 4)

    if len(dims) == 4:
        if is_channels(dims[1]) or not is_channels(dims[3]):
            return 2, 3
        return 1, 2
    if len(dims) == 3:
        if is_channels(dims[0]) or not is_channels(dims[2]):
            return 1, 2
        return 0, 1
    return None


def input_dims(vi: onnx.ValueInfoProto) -> list:
    tt = vi.type.tensor_type
    return [int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def resolve_input_shapes(model: onnx.ModelProto, size: tuple[int, int] | None) -> dict[str, list]:
    """Input shapes with symbolic dimensions set: batch 1, height x width from `size` on image inputs.

    A fixed spatial size that differs from `size` is an error; dimensions that cannot be resolved stay
    symbolic (strings), and their tensors' sizes stay unknown.
    """
    shapes = {}
    for vi in graph_inputs(model):
        dims = input_dims(vi)
        axes = spatial_axes(dims)
        if axes is not None:
            if size is not None:
                fixed = [dims[a] for a in axes]
                if all(isinstance(d, int) for d in fixed) and tuple(fixed) != tuple(size):
                    raise UserError(f"input {vi.name!r} has a fixed size {fixed[0]}x{fixed[1]}; "
                                    f"cannot analyse it at {size[0]}x{size[1]}")
                for a, v in zip(axes, size):
                    dims[a] = int(v)
            if len(dims) == 4 and not isinstance(dims[0], int):
                dims[0] = 1  # batch
        elif dims and not isinstance(dims[0], int):
            dims[0] = 1
        shapes[vi.name] = dims
    return shapes


def is_dynamic_input(model: onnx.ModelProto) -> bool:
    """True when some image-like input has a symbolic height or width."""
    for vi in graph_inputs(model):
        dims = input_dims(vi)
        axes = spatial_axes(dims)
        if axes and any(not isinstance(dims[a], int) for a in axes):
            return True
    return False


def model_family(model: onnx.ModelProto, model_path=None) -> str | None:
    """The family recorded in the model's metadata or in a `model.json` beside the file, if any."""
    from splitinfer.common.core.models import recorded_family

    return recorded_family(model_path, model=model)


def metadata(model: onnx.ModelProto, key: str) -> str | None:
    return next((p.value for p in model.metadata_props if p.key == key), None)


def nominal_input_size(model: onnx.ModelProto) -> tuple[int, int] | None:
    """The size the model was made for: metadata `splitinfer.input_hw`, else its fixed image dims."""
    hw = metadata(model, "splitinfer.input_hw")
    if hw:
        return parse_input_size(hw)
    for vi in graph_inputs(model):
        dims = input_dims(vi)
        axes = spatial_axes(dims)
        if axes and all(isinstance(dims[a], int) for a in axes):
            return dims[axes[0]], dims[axes[1]]
    return None


def feeds_size(model: onnx.ModelProto, feeds: dict) -> tuple[int, int] | None:
    """Height x width of the first image-like input among the feeds."""
    for vi in graph_inputs(model):
        if vi.name in feeds:
            shape = list(np.shape(feeds[vi.name]))
            axes = spatial_axes(shape)
            if axes:
                return shape[axes[0]], shape[axes[1]]
    return None


def input_8bit_bytes(input_shapes: dict) -> int | None:
    """Bytes of the model inputs as 8-bit images (one byte per element, e.g. 428 x 640 x 3 = 0.82 MB for
    RetinaNet), what the TR's anchor row counts; rank 0's `sent_bytes` is the input tensor as the model takes
    it (float32: 4 bytes per element). None when a dimension is unknown."""
    total = 0
    for shape in input_shapes.values():
        if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
            return None
        total += int(np.prod(shape))
    return total
