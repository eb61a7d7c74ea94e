"""Static tensor types for the size analysis: dtype and shape of every tensor at fixed input shapes, no inference.

Why a pass of our own (and not split/types.py's): onnx's whole-model shape inference stops at the first
shape that depends on a computed value (torchvision's transform resizes by a scale it computes from the
input shape, so every tensor after it stays symbolic). Here one topological pass runs onnx's per-node
inference *and* evaluates the small shape computations (Shape, Gather, Concat, float scale arithmetic...)
with the onnx reference runtime, feeding the values to the next node's inference. What is still unknown
after that depends on the image itself (NonZero, TopK over scores, NMS). split/types.py only needs dtype
and rank of the crossing tensors, for any input size, so it never fixes the input shapes.
Defined terms: *small value* (a tensor of at most `SMALL_VALUE` elements, evaluated statically).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from splitinfer.common.split.graph import NONDETERMINISTIC_OPS

SMALL_VALUE = 1 << 16  # elements: tensors up to this size are evaluated statically (shape arithmetic)


def type_dims(tp: onnx.TypeProto | None) -> list | None:
    """Shape of a tensor type: ints where known, None where not; None when even the rank is unknown."""
    if tp is None or not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    return [int(d.dim_value) if d.HasField("dim_value") else None for d in tp.tensor_type.shape.dim]


def np_dtype(elem_type: int):
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)) if elem_type else None
    except Exception:
        return None


def dtype_name(tp: onnx.TypeProto | None) -> str | None:
    if tp is None or not tp.HasField("tensor_type"):
        return None
    dt = np_dtype(tp.tensor_type.elem_type)
    if dt is not None and dt.kind in "OUS":
        return "string"
    return dt.name if dt is not None else None


def static_bytes(tp: onnx.TypeProto | None) -> int | None:
    """Bytes of a tensor from its type when dtype and every dimension are known, else None."""
    dims = type_dims(tp)
    if dims is None or any(d is None for d in dims):
        return None
    dt = np_dtype(tp.tensor_type.elem_type)
    if dt is None or dt.kind in "OUS":
        return None
    return int(np.prod(dims, dtype=np.int64)) * dt.itemsize


def _tensor_type(elem_type: int, shape) -> onnx.TypeProto:
    return helper.make_tensor_type_proto(elem_type, list(shape) if shape is not None else None)


def infer_static_types(model: onnx.ModelProto, nodes, input_shapes: dict, progress: bool = False) -> dict:
    """Types (dtype + shape) of every tensor for fixed input shapes, by one pass in topological order.

    `nodes` must be topologically sorted (a `SplitGraph`'s `.nodes`). Returns {name: TypeProto}.
    """
    types, values = _seed_types(model, input_shapes)
    pass_ = _StaticPass(model, types, values)
    iterator = nodes
    if progress:
        from splitinfer.common.core.progress import bar as tqdm

        iterator = tqdm(nodes, desc="static shapes", unit="node", leave=False)
    for node in iterator:
        pass_.visit(node)
    return types


def _seed_types(model: onnx.ModelProto, input_shapes: dict) -> tuple[dict, dict]:
    """Types of initializers and graph inputs (inputs at `input_shapes`), and the values of small initializers."""
    g = model.graph
    types: dict[str, onnx.TypeProto] = {}
    values: dict[str, np.ndarray] = {}
    for init in g.initializer:
        types[init.name] = _tensor_type(init.data_type, init.dims)
        if int(np.prod(init.dims, dtype=np.int64)) <= SMALL_VALUE:
            try:
                values[init.name] = numpy_helper.to_array(init)
            except Exception:
                pass
    for sp in g.sparse_initializer:
        types[sp.values.name] = _tensor_type(sp.values.data_type, sp.dims)
    for vi in g.input:
        if vi.name in types:
            continue
        tp = onnx.TypeProto()
        tp.CopyFrom(vi.type)
        if vi.name in input_shapes and tp.HasField("tensor_type"):
            tp.tensor_type.ClearField("shape")
            for d in input_shapes[vi.name]:
                dim = tp.tensor_type.shape.dim.add()
                if isinstance(d, (int, np.integer)):
                    dim.dim_value = int(d)
                elif d is not None:
                    dim.dim_param = str(d)
        types[vi.name] = tp
    return types, values


class _StaticPass:
    """The pass's state: types and small values found so far, updated node by node (`visit`)."""

    def __init__(self, model: onnx.ModelProto, types: dict, values: dict):
        self.model = model
        self.opsets = {(o.domain or ""): o.version for o in model.opset_import}
        self.types, self.values = types, values
        self.protos: dict[str, onnx.TensorProto] = {}

    def proto(self, name: str) -> onnx.TensorProto:
        if name not in self.protos:
            self.protos[name] = numpy_helper.from_array(np.asarray(self.values[name]), name)
        return self.protos[name]

    def visit(self, node) -> None:
        """Infer the node's output types, then evaluate it when all its inputs are small known values."""
        ins = [n for n in node.input if n]
        if any(n not in self.types for n in ins):
            return
        has_subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
        domain = node.domain or ""
        out = self._infer(node, ins, has_subgraph, domain)
        if out is None:
            return  # unknown op or inference error: its outputs stay unknown
        self.types.update(out)
        if node.op_type in ("Shape", "Size") and domain in ("", "ai.onnx"):
            _shape_value(node, self.types, self.values)
            return
        if node.op_type in NONDETERMINISTIC_OPS or has_subgraph or not all(n in self.values for n in ins):
            return
        sizes = [type_dims(out.get(o)) for o in node.output if o]
        if any(s is not None and None not in s and np.prod(s, dtype=np.int64) > SMALL_VALUE for s in sizes):
            return
        self._evaluate(node, ins)

    def _infer(self, node, ins: list, has_subgraph: bool, domain: str) -> dict | None:
        try:
            schema = onnx.defs.get_schema(node.op_type, self.opsets.get(domain, 1), domain)
            in_types = self.types if has_subgraph else {n: self.types[n] for n in ins}
            return onnx.shape_inference.infer_node_outputs(
                schema, node, in_types, {n: self.proto(n) for n in ins if n in self.values},
                list(self.model.opset_import))
        except Exception:
            return None

    def _evaluate(self, node, ins: list) -> None:
        try:
            from onnx.reference import ReferenceEvaluator

            results = ReferenceEvaluator(node, opsets=self.opsets).run(None, {n: self.values[n] for n in ins})
        except Exception:
            return
        for name, r in zip(node.output, results):
            r = np.asarray(r)
            if name and r.size <= SMALL_VALUE:
                self.values[name] = r
                if name not in self.types or static_bytes(self.types[name]) is None:
                    self.types[name] = _tensor_type(helper.np_dtype_to_tensor_dtype(r.dtype), r.shape)


def _shape_value(node, types, values):
    """Value of Shape/Size when the input's shape is fully known (what makes later Reshapes resolvable)."""
    dims = type_dims(types.get(node.input[0]))
    if dims is None or None in dims:
        return
    if node.op_type == "Size":
        values[node.output[0]] = np.array(int(np.prod(dims, dtype=np.int64)), dtype=np.int64)
        return
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    start, end = attrs.get("start", 0), attrs.get("end", None)
    values[node.output[0]] = np.array(dims[start:end], dtype=np.int64)
