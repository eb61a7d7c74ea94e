"""Element type and rank of every crossing tensor: declared, inferred, or observed in one run.

Why three sources: part files must declare an element type and a rank for every input and output to
pass `onnx.checker`. The model's own value infos come first; one onnx shape inference per model (not
per rank) fills most gaps; what inference leaves open (a Reshape whose target shape is computed at run
time, say) is read off one onnxruntime run on random inputs (the *probe*).

Defined terms: *type map* (tensor name -> onnx TypeProto), *skeleton* (the model with its large weights
declared as inputs instead of copied, so inference copies no weight bytes and >2 GB models work).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper


SKELETON_MAX_ELEMENTS = 4096  # initializers up to this size stay in the skeleton (shape arithmetic needs them)


@dataclass
class TensorInfo:
    """A crossing tensor: name, numpy dtype name and shape (ints, symbolic names, None where unknown)."""

    name: str
    dtype: str | None
    shape: list | None


def np_dtype_name(elem_type: int) -> str | None:
    if not elem_type:
        return None
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def has_rank(tp: onnx.TypeProto | None) -> bool:
    return (tp is not None and tp.HasField("tensor_type") and tp.tensor_type.elem_type != 0
            and tp.tensor_type.HasField("shape"))


def info_from_type(name: str, tp: onnx.TypeProto | None) -> TensorInfo:
    if tp is None or not tp.HasField("tensor_type"):
        kind = None if tp is None else tp.WhichOneof("value")
        return TensorInfo(name, kind if kind else None, None)
    tt = tp.tensor_type
    shape = None
    if tt.HasField("shape"):
        shape = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                shape.append(d.dim_param)
            else:
                shape.append(None)
    return TensorInfo(name, np_dtype_name(tt.elem_type), shape)


def declared_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Types the model itself states (value_info, inputs, outputs)."""
    g = model.graph
    return {vi.name: vi.type for vi in [*g.value_info, *g.input, *g.output] if vi.type.WhichOneof("value")}


def inferred_types(model: onnx.ModelProto, nodes, inputs) -> dict[str, onnx.TypeProto]:
    """One onnx shape inference on the skeleton of `model` (nodes in our order, `inputs` = real inputs)."""
    g = model.graph
    sk = onnx.ModelProto()
    sk.ir_version = model.ir_version
    sk.opset_import.extend(model.opset_import)
    sk.functions.extend(model.functions)
    sg = sk.graph
    sg.name = g.name
    sg.node.extend(nodes)
    sg.input.extend(inputs)
    for t in g.initializer:
        if int(np.prod(t.dims)) <= SKELETON_MAX_ELEMENTS and not t.external_data:
            sg.initializer.append(t)
        else:
            sg.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    sg.sparse_initializer.extend(g.sparse_initializer)
    sg.output.extend(g.output)
    try:
        inferred = onnx.shape_inference.infer_shapes(sk, strict_mode=False, data_prop=True)
    except Exception:
        return {}
    return {vi.name: vi.type for vi in [*inferred.graph.value_info, *inferred.graph.output]
            if vi.type.WhichOneof("value")}


def _ort_static_type(ort_type: str) -> onnx.TypeProto | None:
    """TypeProto with only the element type of onnxruntime's 'tensor(float)' spelling, or None."""
    if not ort_type.startswith("tensor("):
        return None
    name = ort_type[len("tensor("):-1]
    try:
        dtype = np.dtype({"float": "float32", "double": "float64"}.get(name, name))
    except TypeError:
        return None
    tp = onnx.TypeProto()
    tp.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(dtype)
    return tp


def observed_types(model: onnx.ModelProto, names: list[str]) -> dict[str, onnx.TypeProto]:
    """Element type and rank of `names` read off one onnxruntime run of `model` on random inputs.

    Dims stay unknown (the random input's size must not leak into the parts). Where the run fails,
    onnxruntime's static types still give the element type (its unoptimised shapes cannot tell a
    scalar from an unknown rank, so they are not used).
    """
    from splitinfer.common.core.runtime import exposing_session, run_exposed

    try:
        sess = exposing_session(model, names, optimize=False, quiet=True)
    except Exception:  # an unusual model: keep the types unknown rather than fail the split
        return {}
    try:
        values = [v.numpy() if v.is_tensor() else None for v in run_exposed(sess, random_feeds(model), quiet=True)]
    except Exception:
        values = [None] * len(sess.output_names)
    found = {}
    for out, value in zip(sess.ort.get_outputs(), values):
        if isinstance(value, np.ndarray):
            elem = helper.np_dtype_to_tensor_dtype(value.dtype)
            found[out.name] = helper.make_tensor_type_proto(elem, [None] * value.ndim)
        else:
            tp = _ort_static_type(out.type)
            if tp is not None:
                found[out.name] = tp
    return found


def resolve_types(model: onnx.ModelProto, nodes, inputs, wanted) -> dict[str, onnx.TypeProto]:
    """The type map: declared types, then inference where `wanted` names lack one, then the probe
    where they still lack a rank."""
    types = declared_types(model)
    if any(t not in types for t in wanted):
        types.update({k: v for k, v in inferred_types(model, nodes, inputs).items() if k not in types})
    unresolved = [t for t in wanted if not has_rank(types.get(t))]
    if unresolved:
        types.update(observed_types(model, unresolved))
    return types


def random_feeds(model: onnx.ModelProto, seed: int = 0, free_dim: int = 64, image_hw=None) -> dict:
    """Random inputs for every graph input. Unknown dims: 1 for the first axis and `free_dim` elsewhere; with
    `image_hw` = (height, width), an image layout instead: batch 1, 3 channels, that height and width last."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        shape = _open_dims_filled(dims, free_dim, image_hw)
        if dtype == np.bool_:
            arr = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            arr = rng.integers(0, 10, size=shape).astype(dtype)
        else:
            arr = rng.random(shape).astype(dtype)
        feeds[vi.name] = arr
    return feeds


def _open_dims_filled(dims: list, free_dim: int, image_hw) -> list[int]:
    n = len(dims)
    if image_hw is None:
        fill = {k: (1 if k == 0 else free_dim) for k in range(n)}
    else:
        fill = {n - 1: image_hw[1], n - 2: image_hw[0], n - 3: 3}
    return [d if d is not None else fill.get(k, 1) for k, d in enumerate(dims)]
