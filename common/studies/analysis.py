"""What crosses the network at each split point, how big it is, and what sending it would cost.

For every split rank of a model (rank r: nodes [0, r) on the UE, the rest on the network; rank 0 is the
whole-model anchor where the raw input is sent) this module reports the crossing tensors (branches), their
total size from the model alone (*static*), their size measured on a real image (*dynamic*), whether
the two agree, and the transfer time at given bandwidths.

Why a static pass of our own: onnx's whole-model shape inference stops at the first shape that depends
on a computed value (torchvision's transform resizes by a scale it computes from the input shape, so
every tensor after it stays symbolic). Here one topological pass runs onnx's per-node inference *and*
evaluates the small shape computations (Shape, Gather, Concat, float scale arithmetic...) with the
onnx reference runtime, feeding the values to the next node's inference. What is still unknown after
that depends on the image itself (NonZero, TopK over scores, NMS) and is listed as unknown.

Why one run for all ranks: every tensor that crosses somewhere is exposed as a graph output of one
onnxruntime session, so measuring all ranks costs one inference, not one per rank. Exposed outputs stay
in memory until the run ends; when the static estimate of their total exceeds `max_exposed_bytes` they
are measured in a few chunks (still independent of the number of ranks).
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from splitinfer.common.core.errors import UserError
from splitinfer.common.core.rates import parse_rate, rate_label
from splitinfer.common.split.graph import NONDETERMINISTIC_OPS

DEFAULT_BANDWIDTHS = ("500M", "1G", "5G")
DEFAULT_MAX_EXPOSED_BYTES = 6 * 10**9
SMALL_VALUE = 1 << 16  # elements: tensors up to this size are evaluated statically (shape arithmetic)


# ----------------------------------------------------------------------------------------------
# small parsers (rates: `splitinfer.common.core.rates`, tc's units)


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


def transfer_seconds(nbytes: int | None, bps: float) -> float | None:
    """Time to send `nbytes` at `bps` bit/s: bytes x 8 / rate (no protocol overhead)."""
    return None if nbytes is None else nbytes * 8.0 / bps


# ----------------------------------------------------------------------------------------------
# static sizes


def _dims(tp: onnx.TypeProto | None) -> list | None:
    """Shape of a tensor type: ints where known, None where not; None when even the rank is unknown."""
    if tp is None or not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    return [int(d.dim_value) if d.HasField("dim_value") else None for d in tp.tensor_type.shape.dim]


def _np_dtype(elem_type: int):
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)) if elem_type else None
    except Exception:
        return None


def _dtype_name(tp: onnx.TypeProto | None) -> str | None:
    if tp is None or not tp.HasField("tensor_type"):
        return None
    dt = _np_dtype(tp.tensor_type.elem_type)
    if dt is not None and dt.kind in "OUS":
        return "string"
    return dt.name if dt is not None else None


def static_bytes(tp: onnx.TypeProto | None) -> int | None:
    """Bytes of a tensor from its type when dtype and every dimension are known, else None."""
    dims = _dims(tp)
    if dims is None or any(d is None for d in dims):
        return None
    dt = _np_dtype(tp.tensor_type.elem_type)
    if dt is None or dt.kind in "OUS":
        return None
    return int(np.prod(dims, dtype=np.int64)) * dt.itemsize


def _tensor_type(elem_type: int, shape) -> onnx.TypeProto:
    return helper.make_tensor_type_proto(elem_type, list(shape) if shape is not None else None)


def infer_static_types(model: onnx.ModelProto, nodes, input_shapes: dict, progress: bool = False) -> dict:
    """Types (dtype + shape) of every tensor for fixed input shapes, by one pass in topological order.

    `nodes` must be topologically sorted (a `SplitGraph`'s `.nodes`). Returns {name: TypeProto}.
    """
    g = model.graph
    opsets = {(o.domain or ""): o.version for o in model.opset_import}
    types: dict[str, onnx.TypeProto] = {}
    values: dict[str, np.ndarray] = {}
    protos: dict[str, onnx.TensorProto] = {}
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
            shape = input_shapes[vi.name]
            tp.tensor_type.ClearField("shape")
            for d in shape:
                dim = tp.tensor_type.shape.dim.add()
                if isinstance(d, (int, np.integer)):
                    dim.dim_value = int(d)
                elif d is not None:
                    dim.dim_param = str(d)
        types[vi.name] = tp

    def proto(name):
        if name not in protos:
            protos[name] = numpy_helper.from_array(np.asarray(values[name]), name)
        return protos[name]

    iterator = nodes
    if progress:
        from splitinfer.common.core.progress import bar as tqdm

        iterator = tqdm(nodes, desc="static shapes", unit="node", leave=False)
    for node in iterator:
        ins = [n for n in node.input if n]
        if any(n not in types for n in ins):
            continue
        has_subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
        domain = node.domain or ""
        try:
            schema = onnx.defs.get_schema(node.op_type, opsets.get(domain, 1), domain)
            in_types = types if has_subgraph else {n: types[n] for n in ins}
            out = onnx.shape_inference.infer_node_outputs(
                schema, node, in_types, {n: proto(n) for n in ins if n in values}, list(model.opset_import))
        except Exception:
            continue  # unknown op or inference error: its outputs stay unknown
        types.update(out)
        if node.op_type in ("Shape", "Size") and domain in ("", "ai.onnx"):
            _shape_value(node, types, values)
            continue
        if node.op_type in NONDETERMINISTIC_OPS or has_subgraph or not all(n in values for n in ins):
            continue
        sizes = [_dims(out.get(o)) for o in node.output if o]
        if any(s is not None and None not in s and np.prod(s, dtype=np.int64) > SMALL_VALUE for s in sizes):
            continue
        try:
            from onnx.reference import ReferenceEvaluator

            results = ReferenceEvaluator(node, opsets=opsets).run(None, {n: values[n] for n in ins})
        except Exception:
            continue
        for name, r in zip(node.output, results):
            r = np.asarray(r)
            if name and r.size <= SMALL_VALUE:
                values[name] = r
                if name not in types or static_bytes(types[name]) is None:
                    types[name] = _tensor_type(helper.np_dtype_to_tensor_dtype(r.dtype), r.shape)
    return types


def _shape_value(node, types, values):
    """Value of Shape/Size when the input's shape is fully known (what makes later Reshapes resolvable)."""
    dims = _dims(types.get(node.input[0]))
    if dims is None or None in dims:
        return
    if node.op_type == "Size":
        values[node.output[0]] = np.array(int(np.prod(dims, dtype=np.int64)), dtype=np.int64)
        return
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    start, end = attrs.get("start", 0), attrs.get("end", None)
    values[node.output[0]] = np.array(dims[start:end], dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# inputs and feeds


def _spatial_axes(dims: list) -> tuple[int, int] | None:
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


def _input_dims(vi: onnx.ValueInfoProto) -> list:
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
        dims = _input_dims(vi)
        axes = _spatial_axes(dims)
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
        dims = _input_dims(vi)
        axes = _spatial_axes(dims)
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
        dims = _input_dims(vi)
        axes = _spatial_axes(dims)
        if axes and all(isinstance(dims[a], int) for a in axes):
            return dims[axes[0]], dims[axes[1]]
    return None


def load_image(image) -> tuple[np.ndarray, str]:
    """(BGR uint8 image, label) from a path, an array, or None (the first bundled photo)."""
    from splitinfer.common.core.images import read_image

    if isinstance(image, np.ndarray):
        from splitinfer.common.families import check_image

        return check_image(image), "array"
    if image is None:
        from splitinfer.common.assets import bundled_images

        found = bundled_images()
        if not found:
            raise UserError("no bundled image found; pass --image FILE")
        image = found[0]
    return read_image(image), str(image)


def generic_feeds(model: onnx.ModelProto, image_bgr: np.ndarray, input_shapes: dict) -> dict:
    """Feeds for image-like inputs from a photo resized to the input size (RGB; floats in [0, 1])."""
    import cv2

    feeds = {}
    for vi in graph_inputs(model):
        dims = list(input_shapes.get(vi.name, _input_dims(vi)))
        if any(not isinstance(d, int) for d in dims):
            raise UserError(f"input {vi.name!r} has unresolved dimensions {dims}; give --input-size HxW")
        dtype = _np_dtype(vi.type.tensor_type.elem_type)
        if dtype is None or dtype.kind in "OUS":
            raise UserError(f"input {vi.name!r}: unsupported element type for an image")
        axes = _spatial_axes(dims)
        if axes is None:
            feeds[vi.name] = np.zeros(dims, dtype=dtype)
            continue
        h, w = dims[axes[0]], dims[axes[1]]
        chan_axis = next(a for a in range(len(dims)) if a not in axes and not (len(dims) == 4 and a == 0))
        c = dims[chan_axis]
        img = cv2.resize(image_bgr, (w, h), interpolation=cv2.INTER_LINEAR)
        img = img[:, :, ::-1]  # RGB, as torchvision models expect
        if c == 1:
            img = img.mean(axis=2, keepdims=True)
        elif c == 4:
            img = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, img.dtype)], axis=2)
        arr = img.astype(np.float32) / 255.0 if dtype.kind == "f" else img
        if chan_axis < axes[0]:
            arr = np.transpose(arr, (2, 0, 1))
        if len(dims) == 4:
            arr = arr[None]
        feeds[vi.name] = np.ascontiguousarray(arr.astype(dtype))
    return feeds


def image_feeds(model: onnx.ModelProto, image_bgr: np.ndarray, size: tuple[int, int] | None = None,
                model_path=None) -> tuple[dict, str]:
    """Feeds from a real photo: the model family's own preprocessing when it yields the wanted size,
    else a plain resize (`generic_feeds`). Returns (feeds, how) with how 'family:<name>' or 'resize'."""
    fam_name = model_family(model, model_path)
    if fam_name:
        try:
            from splitinfer.common.families import family_for_model, get_family

            fam = family_for_model(model_path, fam_name) if model_path else get_family(fam_name)
            fam_feeds, _ = fam.preprocess(image_bgr)
        except UserError:
            fam_feeds = None
        if fam_feeds is not None:
            wanted = resolve_input_shapes(model, size) if size is not None else None
            names = {vi.name for vi in graph_inputs(model)}
            if set(fam_feeds) == names and (wanted is None or all(
                    list(np.shape(fam_feeds[k])) == wanted[k] for k in names)):
                return fam_feeds, f"family:{fam_name}"
    if size is None:
        size = nominal_input_size(model) or image_bgr.shape[:2]
    return generic_feeds(model, image_bgr, resolve_input_shapes(model, size)), "resize"


def feeds_size(model: onnx.ModelProto, feeds: dict) -> tuple[int, int] | None:
    """Height x width of the first image-like input among the feeds."""
    for vi in graph_inputs(model):
        if vi.name in feeds:
            shape = list(np.shape(feeds[vi.name]))
            axes = _spatial_axes(shape)
            if axes:
                return shape[axes[0]], shape[axes[1]]
    return None


# ----------------------------------------------------------------------------------------------
# measured sizes


def _ort_dtype_name(type_str: str) -> str:
    inner = type_str[len("tensor("):-1] if type_str.startswith("tensor(") else type_str
    return {"float": "float32", "double": "float64"}.get(inner, inner)


def measure_tensors(model: onnx.ModelProto, names: list[str], feeds: dict, device: str = "cpu",
                    types: dict | None = None, max_exposed_bytes: int = DEFAULT_MAX_EXPOSED_BYTES,
                    progress: bool = False) -> tuple[dict, int]:
    """Shapes and bytes of the named tensors on a real inference: {name: (shape, dtype, bytes)}, runs.

    Every wanted tensor is declared a graph output of one session and fetched as an OrtValue (shape and
    size read without copying the data). Graph inputs are taken from `feeds`.
    """
    from splitinfer.common.core.onnx_io import with_outputs
    from splitinfer.common.core.runtime import make_session

    types = types or {}
    result = {}
    inputs = {vi.name for vi in graph_inputs(model)}
    for n in names:
        if n in inputs and n in feeds:
            a = np.asarray(feeds[n])
            result[n] = (list(a.shape), a.dtype.name, int(a.nbytes))
    wanted = [n for n in dict.fromkeys(names) if n not in result]
    if not wanted:
        return result, 0
    chunks, current, current_bytes = [], [], 0
    for n in wanted:
        b = static_bytes(types.get(n)) or 0
        if current and current_bytes + b > max_exposed_bytes:
            chunks.append(current)
            current, current_bytes = [], 0
        current.append(n)
        current_bytes += b
    chunks.append(current)
    import onnxruntime as ort

    ort_feeds = {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()
                 if k in inputs}
    iterator = chunks
    if progress and len(chunks) > 1:
        from splitinfer.common.core.progress import bar as tqdm

        iterator = tqdm(chunks, desc="measuring", unit="run", leave=False)
    for chunk in iterator:
        elem_types = {n: tp.tensor_type.elem_type for n in chunk
                      if (tp := types.get(n)) is not None and tp.HasField("tensor_type")}
        m = with_outputs(model, chunk, elem_types)
        sess = make_session(m, device=device)
        del m
        try:
            values = sess.ort.run_with_ort_values(chunk, ort_feeds)
        except Exception as exc:
            raise UserError(f"inference failed while measuring intermediate tensors: {exc}") from None
        for n, v in zip(chunk, values):
            if v.is_tensor():
                result[n] = (list(v.shape()), _ort_dtype_name(v.data_type()), int(v.tensor_size_in_bytes()))
        del values, sess
    return result, len(chunks)


# ----------------------------------------------------------------------------------------------
# the analysis


@dataclass
class TensorSize:
    """One crossing tensor: static dtype/shape/bytes (None where unknown) and measured shape/bytes."""

    name: str
    dtype: str | None
    static_shape: list | None
    static_bytes: int | None
    measured_shape: list | None = None
    measured_bytes: int | None = None

    @property
    def agree(self) -> bool | None:
        if self.static_bytes is None or self.measured_bytes is None:
            return None
        return self.static_bytes == self.measured_bytes and (
            self.static_shape is None or self.measured_shape is None
            or list(self.static_shape) == list(self.measured_shape))


@dataclass
class RankRow:
    """One split rank: rank 0 sends the raw input (whole model on the network)."""

    rank: int
    node: str
    op_type: str
    branches: int
    tensors: list[str]
    static_bytes: int | None  # None when some crossing tensor's size is unknown
    static_known_bytes: int
    unknown: list[str]  # crossing tensors whose size stays unknown without running the model
    measured_bytes: int | None
    agree: bool | None  # None: not measured, or static total unknown and no known tensor disagrees
    part1_outputs: list[str] = field(default_factory=list)  # model outputs Part I already made
    sent_bytes: int | None = None  # crossing + Part I's final outputs (the network consolidates them)
    redundant: bool = False  # node is a constant or dead: this cut crosses what the next one does
    transfer_s: dict[str, float | None] = field(default_factory=dict)  # sent_bytes * 8 / bandwidth


@dataclass
class Analysis:
    model: str
    num_nodes: int
    input_shapes: dict
    input_size: tuple[int, int] | None
    image: str | None
    feeds_from: str | None
    bandwidths: dict[str, float]
    rows: list[RankRow]
    tensors: dict[str, TensorSize]
    seconds: dict[str, float]
    measure_runs: int
    input_8bit_bytes: int | None = None  # the model input as an 8-bit image (the TR's anchor row), see `rank0_note`

    @property
    def size_label(self) -> str:
        return f"{self.input_size[0]}x{self.input_size[1]}" if self.input_size else "default"

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("rows", "tensors")}
        d["input_size"] = list(self.input_size) if self.input_size else None
        d["bytes_unit_note"] = "bytes; MB = 10^6 bytes; transfer_s = bytes * 8 / bandwidth (bit/s)"
        d["rows"] = [asdict(r) for r in self.rows]
        d["tensors"] = {k: {**asdict(t), "agree": t.agree} for k, t in self.tensors.items()}
        return d


def analyze(model, *, input_size=None, image=None, feeds: dict | None = None, bandwidths=DEFAULT_BANDWIDTHS,
            measure: bool = True, device: str = "cpu", graph=None, model_path=None,
            max_exposed_bytes: int = DEFAULT_MAX_EXPOSED_BYTES, progress: bool = False) -> Analysis:
    """Per-rank crossing tensors, static and measured sizes, and transfer times for one input size.

    `model`: path or ModelProto. Input shapes come from `feeds` when given, else from the family's
    preprocessing of `image` (or a plain resize to `input_size`); with `measure=False` only from
    `input_size` (no image, no inference). `graph`: a prepared `SplitGraph` of the same model.
    """
    from splitinfer.common.split.graph import SplitGraph
    from splitinfer.common.core.onnx_io import load_model

    if not isinstance(model, onnx.ModelProto):
        model_path = Path(model)
        model = load_model(model_path)
    label = str(model_path) if model_path is not None else (model.graph.name or "model")
    size = parse_input_size(input_size) if input_size is not None else None
    bws = {rate_label(parse_rate(b)): parse_rate(b) for b in bandwidths}
    seconds = {}
    t0 = time.perf_counter()
    graph = graph or SplitGraph(model)
    seconds["graph"] = time.perf_counter() - t0

    image_label, how = None, None
    if feeds is None and measure:
        img, image_label = load_image(image)
        try:
            feeds, how = image_feeds(model, img, size, model_path)
        except UserError as exc:
            raise UserError(f"{label}: {exc}") from None
    if feeds is not None:
        feeds = {k: np.asarray(v) for k, v in feeds.items()}
        input_shapes = {vi.name: list(np.shape(feeds[vi.name])) for vi in graph_inputs(model) if vi.name in feeds}
        size = size or feeds_size(model, feeds)
        how = how or "given"
    else:
        try:
            input_shapes = resolve_input_shapes(model, size or nominal_input_size(model))
        except UserError as exc:
            raise UserError(f"{label}: {exc}") from None
        size = size or nominal_input_size(model)

    t0 = time.perf_counter()
    types = infer_static_types(model, graph.nodes, input_shapes, progress=progress)
    sets = graph.all_crossing_sets()
    seconds["static"] = time.perf_counter() - t0

    crossing = list(dict.fromkeys(t for s in sets for t in s))
    outputs = [o for o in graph.output_names if o]
    tensors = {n: TensorSize(n, _dtype_name(types.get(n)), _dims(types.get(n)), static_bytes(types.get(n)))
               for n in dict.fromkeys(crossing + outputs)}
    runs = 0
    if measure:
        t0 = time.perf_counter()
        measured, runs = measure_tensors(model, list(tensors), feeds, device=device, types=types,
                                         max_exposed_bytes=max_exposed_bytes, progress=progress)
        seconds["measure"] = time.perf_counter() - t0
        for n, (shape, dtype, nbytes) in measured.items():
            t = tensors[n]
            t.measured_shape, t.measured_bytes = shape, nbytes
            t.dtype = t.dtype or dtype

    def tensor_bytes(t: TensorSize):
        return t.measured_bytes if measure else t.static_bytes

    by_producer = sorted((graph.producer.get(o, -1), k, o) for k, o in enumerate(outputs))
    rows = []
    for r, names in enumerate(sets):
        ts = [tensors[n] for n in names]
        unknown = [t.name for t in ts if t.static_bytes is None]
        known = sum(t.static_bytes for t in ts if t.static_bytes is not None)
        measured_total = sum(t.measured_bytes for t in ts) if measure and all(
            t.measured_bytes is not None for t in ts) else None
        if measured_total is None:
            agree = None
        elif any(t.agree is False for t in ts):
            agree = False
        else:
            agree = None if unknown else True
        if r == 0:
            node, op = "(whole model: raw input)", "input"
        elif r < graph.num_nodes:
            node, op = graph.node_names[r], graph.nodes[r].op_type
        else:
            node, op = "(whole model on UE)", "end"
        crossing_total = measured_total if measure else (None if unknown else known)
        final1 = [o for p, _, o in by_producer if p < r and o not in names]
        final_sizes = [tensor_bytes(tensors[o]) for o in final1]
        sent = None if crossing_total is None or None in final_sizes else crossing_total + sum(final_sizes)
        rows.append(RankRow(
            rank=r, node=node, op_type=op, branches=len(names), tensors=list(names),
            static_bytes=None if unknown else known, static_known_bytes=known, unknown=unknown,
            measured_bytes=measured_total, agree=agree, part1_outputs=final1, sent_bytes=sent,
            redundant=0 < r < graph.num_nodes and (r in graph.const_nodes or not graph.live[r]),
            transfer_s={lab: transfer_seconds(sent, bps) for lab, bps in bws.items()}))
    return Analysis(model=label, num_nodes=graph.num_nodes, input_shapes=input_shapes, input_size=size,
                    image=image_label, feeds_from=how, bandwidths=bws, rows=rows, tensors=tensors,
                    seconds={k: round(v, 3) for k, v in seconds.items()}, measure_runs=runs,
                    input_8bit_bytes=input_8bit_bytes(input_shapes))


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


BRANCHES_NOTE = ("branches are the tensors that really cross a cut: constants (initializers, Constant nodes) and "
                 "shape tensors are not sent, as Part II holds or recomputes them, so a count can be lower than "
                 "the TR's split_onnx_multi.py, which lists every Part I tensor that Part II reads")


def rank0_note(analysis: "Analysis") -> str:
    """What rank 0's bytes are: the input tensor as the model takes it, and the 8-bit image beside it."""
    sent = analysis.rows[0].sent_bytes if analysis.rows else None
    return (f"rank 0 = the model input as the model takes it ({_fmt_bytes(sent)}, {_rank0_dtype(analysis)}); as an "
            f"8-bit image (the TR's anchor row) {_fmt_bytes(analysis.input_8bit_bytes)}")


def _rank0_dtype(analysis: "Analysis") -> str:
    dtypes = {analysis.tensors[n].dtype for n in analysis.rows[0].tensors if n in analysis.tensors} if analysis.rows \
        else set()
    return "/".join(sorted(d for d in dtypes if d)) or "dtype unknown"


# ----------------------------------------------------------------------------------------------
# writers


def _mb(nbytes):
    return "" if nbytes is None else f"{nbytes / 1e6:.6f}"


def csv_columns(analysis: Analysis) -> list[str]:
    return (["rank", "node", "op_type", "branches", "static_bytes", "static_MB", "unknown_tensors",
             "measured_bytes", "measured_MB", "agree", "part1_outputs", "sent_bytes", "sent_MB"]
            + [f"t_{lab}_ms" for lab in analysis.bandwidths] + ["tensors", "note"])


def write_csv(analysis: Analysis, path) -> Path:
    """One row per rank; empty cells where unknown; agree is yes/no/unknown; MB = 10^6 bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(csv_columns(analysis))
        for r in analysis.rows:
            w.writerow([r.rank, r.node, r.op_type, r.branches,
                        "" if r.static_bytes is None else r.static_bytes, _mb(r.static_bytes),
                        " ".join(r.unknown),
                        "" if r.measured_bytes is None else r.measured_bytes, _mb(r.measured_bytes),
                        {True: "yes", False: "no", None: "unknown"}[r.agree], len(r.part1_outputs),
                        "" if r.sent_bytes is None else r.sent_bytes, _mb(r.sent_bytes)]
                       + ["" if r.transfer_s[lab] is None else f"{r.transfer_s[lab] * 1e3:.6f}"
                          for lab in analysis.bandwidths]
                       + [" ".join(r.tensors), rank0_note(analysis) if r.rank == 0 else
                          (BRANCHES_NOTE if r.rank == 1 else "")])
    return path


def write_json(analysis: Analysis, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(analysis.to_dict(), indent=1))
    return path


# ----------------------------------------------------------------------------------------------
# plots


def _row_mb(r: RankRow) -> float:
    """MB at a rank for plotting: measured when available, else the static total (NaN if unknown)."""
    b = r.measured_bytes if r.measured_bytes is not None else r.static_bytes
    return float("nan") if b is None else b / 1e6


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_per_node(analysis: Analysis, path) -> Path:
    """Two panels over the split ranks: crossing size (MB) and number of crossing tensors (branches)."""
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ranks = [r.rank for r in analysis.rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True,
                                   gridspec_kw={"height_ratios": [2, 1]})
    measured = [float("nan") if r.measured_bytes is None else r.measured_bytes / 1e6 for r in analysis.rows]
    static = [float("nan") if r.static_bytes is None else r.static_bytes / 1e6 for r in analysis.rows]
    if any(not math.isnan(v) for v in measured):
        ax1.plot(ranks, measured, drawstyle="steps-post", lw=1.2, label="measured (inference)")
    ax1.plot(ranks, static, drawstyle="steps-post", lw=1.0, ls="--", label="static (shape inference)")
    unknown = [r.rank for r in analysis.rows if r.static_bytes is None]
    if unknown:
        ax1.plot(unknown, [0] * len(unknown), "|", color="tab:red", ms=6,
                 label=f"static size unknown ({len(unknown)} ranks)")
    anchor = analysis.rows[0]
    sent = [float("nan") if r.sent_bytes is None else r.sent_bytes / 1e6 for r in analysis.rows]
    if any(r.part1_outputs for r in analysis.rows[:-1]):
        ax1.plot(ranks, sent, drawstyle="steps-post", lw=0.8, ls="-.", color="tab:purple", zorder=1,
                 label="sent (crossing + outputs Part I already made)")
    ax1.axhline(_row_mb(anchor), color="gray", lw=0.8, ls=":", label="raw input (whole model)")
    ax1.set_ylabel("crossing size (MB)")
    ax1.legend(loc="upper right", fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.step(ranks, [r.branches for r in analysis.rows], where="post", color="tab:green", lw=1.0)
    ax2.set_ylabel("branches")
    ax2.yaxis.get_major_locator().set_params(integer=True)
    ax2.set_xlabel("split rank (node index; 0 = raw input)")
    ax2.grid(alpha=0.3)
    fig.suptitle(f"{Path(analysis.model).name if analysis.model else ''}: data crossing each split point "
                 f"(input {analysis.size_label})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bar_ranks(analysis: Analysis, max_bars: int = 24) -> list[int]:
    """Ranks shown as bars: rank 0 and evenly spaced cuts before live, non-constant nodes."""
    rows = analysis.rows[:-1] if len(analysis.rows) > 1 else analysis.rows
    candidates = [r.rank for r in rows if not r.redundant]
    if len(candidates) <= max_bars:
        return candidates
    picks = np.linspace(0, len(candidates) - 1, max_bars).round().astype(int)
    return sorted({candidates[i] for i in picks})


def plot_sizes_by_input(analyses: list[Analysis], lines_path, bars_path, max_bars: int = 24) -> tuple[Path, Path]:
    """Crossing size per node for several input sizes of one dynamic-input model: lines and bars."""
    plt = _plt()
    lines_path, bars_path = Path(lines_path), Path(bars_path)
    lines_path.parent.mkdir(parents=True, exist_ok=True)
    name = Path(analyses[0].model).name
    fig, ax = plt.subplots(figsize=(12, 5))
    for a in analyses:
        ax.plot([r.rank for r in a.rows], [_row_mb(r) for r in a.rows], drawstyle="steps-post", lw=1.0,
                label=a.size_label)
    ax.set_xlabel("split rank (node index; 0 = raw input)")
    ax.set_ylabel("crossing size (MB)")
    ax.set_title(f"{name}: crossing size per node for several input sizes")
    ax.legend(title="input HxW", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(lines_path, dpi=110)
    plt.close(fig)

    ranks = bar_ranks(analyses[0], max_bars)
    by_rank = [{r.rank: r for r in a.rows} for a in analyses]
    fig, ax = plt.subplots(figsize=(min(16, max(10, 0.5 * len(ranks))), 5.5))
    width = 0.8 / len(analyses)
    x = np.arange(len(ranks))
    for i, (a, rows) in enumerate(zip(analyses, by_rank)):
        ax.bar(x + (i - (len(analyses) - 1) / 2) * width, [_row_mb(rows[k]) for k in ranks], width,
               label=a.size_label)
    names = [by_rank[0][k].node if k else "raw input" for k in ranks]
    ax.set_xticks(x, [f"{k}: {'...' + n[-22:] if len(n) > 25 else n}" for k, n in zip(ranks, names)],
                  rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("crossing size (MB)")
    ax.set_title(f"{name}: crossing size at selected split points for several input sizes")
    ax.legend(title="input HxW", fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(bars_path, dpi=110)
    plt.close(fig)
    return lines_path, bars_path


# ----------------------------------------------------------------------------------------------
# summary


def summary_lines(analysis: Analysis, top: int = 5) -> list[str]:
    """A few lines for the terminal: anchor, timings, agreement and the smallest interior cuts."""
    rows = analysis.rows
    anchor = rows[0]
    interior = [r for r in rows[1:-1] if r.branches > 0 and not r.redundant]
    n_unknown = sum(1 for r in rows if r.static_bytes is None)
    checked = [r for r in rows if r.agree is not None]
    disagree = [r for r in rows if r.agree is False]
    lines = [
        f"{analysis.model}: {analysis.num_nodes} nodes, {len(rows)} split ranks, input "
        f"{analysis.size_label} ({analysis.feeds_from or 'no inference'}), image {analysis.image or '-'}",
        f"  raw input (rank 0): {_fmt_bytes(anchor.sent_bytes)} {_rank0_dtype(analysis)} input tensor"
        + "".join(f", {lab}bit/s {_fmt_s(anchor.transfer_s[lab])}" for lab in analysis.bandwidths)
        + f"; as an 8-bit image (the TR's anchor row): {_fmt_bytes(analysis.input_8bit_bytes)}",
        f"  note: {BRANCHES_NOTE}",
        f"  static size unknown at {n_unknown} ranks; static == measured at {len(checked) - len(disagree)} of "
        f"{len(checked)} fully known ranks" + (f"; DISAGREE at {len(disagree)}" if disagree else ""),
        "  time: " + ", ".join(f"{k} {v:.2f} s" for k, v in analysis.seconds.items())
        + f" ({analysis.measure_runs} inference run{'s' if analysis.measure_runs != 1 else ''})",
    ]
    key = sorted((r for r in interior if r.sent_bytes is not None), key=lambda r: (r.sent_bytes, r.rank))
    if key:
        first = next(iter(analysis.bandwidths))
        lines.append("  smallest interior cuts (bytes sent = crossing tensors + outputs Part I already made):")
        for r in key[:top]:
            lines.append(f"    rank {r.rank:>5} {r.node[:40]:<40} {r.op_type:<12} branches {r.branches:>2} "
                         f"sent {_fmt_bytes(r.sent_bytes)} ({first}bit/s {_fmt_s(r.transfer_s[first])})")
    return lines


def _fmt_bytes(b):
    return "unknown" if b is None else f"{b / 1e6:.3f} MB"


def _fmt_s(s):
    return "-" if s is None else f"{s * 1e3:.3f} ms"
