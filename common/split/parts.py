"""Part I and Part II as ONNX models: which nodes and weights each needs, and writing them fast.

Why a backward walk per part (rather than `onnx.utils.extract_model` per rank): it follows reads from
If/Loop/Scan bodies, copies no inferred `value_info` (which made onnxruntime fail on RetinaNet), and
needs no shape inference per rank.

Why writing goes through cached weight fragments: a model's weights are most of each part file, and
the same weight appears in the parts of every rank. Each initializer is serialised once per model as
its own tiny `ModelProto(graph=GraphProto(initializer=[t]))`; a part file is the serialised skeleton
(nodes, inputs, outputs) followed by those fragments. Protobuf merges repeated occurrences of an
embedded message field (`graph`) and appends repeated fields (`initializer`), so the file parses as
one model. protobuf writes every byte itself: no hand-made field framing. Measured in
bench/bench_split.py against building the full ModelProto and `onnx_io.save_model` per rank.

Defined terms: *skeleton* (a part without its initializers), *fragment* (one weight's serialised
wrapper model, see above), *allowed* (which producer ranks belong to the part being walked).
"""

from __future__ import annotations

from pathlib import Path

import onnx

from splitinfer.common.core.errors import UserError
from splitinfer.common.core.onnx_io import cap_ir_version, save_model

PROTOBUF_LIMIT = 2**31 - 1
_MODEL_FIELDS = ("producer_name", "producer_version", "domain", "model_version", "doc_string")


def backward_closure(graph, targets, allowed, stop) -> tuple[set[int], set[str], set[str]]:
    """(node ranks, initializer names, graph inputs) reached walking back from `targets`.

    The walk stops at names in `stop` (a part's own inputs) and at graph inputs and initializers;
    reaching a node `allowed(rank)` refuses is an engine bug, reported as such.
    """
    nodes: set[int] = set()
    inits: set[str] = set()
    graph_inputs: set[str] = set()
    seen: set[str] = set()
    stack = list(targets)
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in stop:
            continue
        if t in graph.initializers or t in graph.sparse_initializers:
            inits.add(t)
            continue
        p = graph.producer.get(t)
        if p is None:
            raise UserError(f"tensor {t!r} is used but never produced in the model")
        if p < 0:
            graph_inputs.add(t)
            continue
        if p in nodes:
            continue
        if not allowed(p):
            raise AssertionError(f"split engine bug: tensor {t!r} (node {p}) reached outside its part")
        nodes.add(p)
        stack.extend(graph.ins[p])
    return nodes, inits, graph_inputs


def part_value_info(graph, name: str) -> onnx.ValueInfoProto:
    """The declared input/output of a part: the model's own when it has one, else the inferred type
    with every dim unknown (a wrong static dim from inference, e.g. on data-dependent sizes, would make
    onnxruntime reject the part; the manifest keeps the inferred dims for information)."""
    if name in graph.input_vi:
        return graph.input_vi[name]
    if name in graph.output_vi and graph.output_vi[name].type.WhichOneof("value"):
        return graph.output_vi[name]
    vi = onnx.ValueInfoProto(name=name)
    tp = graph.type_map().get(name)
    if tp is not None:
        vi.type.CopyFrom(tp)
        if tp.HasField("tensor_type") and tp.tensor_type.HasField("shape"):
            for d in vi.type.tensor_type.shape.dim:
                d.Clear()
    return vi


def build_part(graph, suffix: str, node_ranks, inits, inputs, outputs,
               with_initializers: bool = True) -> tuple[onnx.ModelProto, list[str]]:
    """(part model, names of its dense initializers in model order); without them it is a skeleton."""
    src = graph.model
    m = onnx.ModelProto()
    m.ir_version = max(src.ir_version, 4)  # IR >= 4: initializers need not be graph inputs
    m.opset_import.extend(src.opset_import)
    m.functions.extend(src.functions)
    for attr in _MODEL_FIELDS:
        setattr(m, attr, getattr(src, attr))
    m.metadata_props.extend(src.metadata_props)
    g = m.graph
    g.name = f"{src.graph.name or 'graph'}_{suffix}"
    g.node.extend(graph.nodes[i] for i in sorted(node_ranks))
    init_names = [n for n in graph.initializers if n in inits]
    if with_initializers:
        g.initializer.extend(graph.initializers[n] for n in init_names)
    g.sparse_initializer.extend(graph.sparse_initializers[n] for n in graph.sparse_initializers if n in inits)
    g.input.extend(part_value_info(graph, n) for n in inputs)
    g.output.extend(part_value_info(graph, n) for n in outputs)
    return cap_ir_version(m), init_names


class WeightFragments:
    """Serialised one-weight wrapper models, made once per initializer and reused for every part."""

    def __init__(self, initializers: dict):
        self._initializers = initializers
        self._cache: dict[str, bytes] = {}

    def get(self, names) -> list[bytes]:
        out = []
        for n in names:
            blob = self._cache.get(n)
            if blob is None:
                wrapper = onnx.ModelProto()
                wrapper.graph.initializer.append(self._initializers[n])
                blob = self._cache[n] = wrapper.SerializeToString()
            out.append(blob)
        return out


def write_part(skeleton: onnx.ModelProto, fragments: list[bytes], path) -> Path:
    """Write a skeleton and its weight fragments as one ONNX file (see the module's why)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(skeleton.SerializeToString())
        for blob in fragments:
            f.write(blob)
    return path


def fits_one_protobuf(fragments: list[bytes], skeleton: onnx.ModelProto) -> bool:
    return sum(map(len, fragments)) + skeleton.ByteSize() + 2**20 < PROTOBUF_LIMIT


def save_part(part: onnx.ModelProto, path) -> Path:
    """A complete part (>2 GB ones go to external data through `save_model`)."""
    return save_model(part, path)


def part_paths(model_path, rank: int, out_dir=None) -> tuple[Path, Path, Path]:
    """(Part I, Part II, manifest) file paths: `<stem>_part_I_node_<rank>.onnx`, ..."""
    model_path = Path(model_path)
    d = Path(out_dir) if out_dir else model_path.parent
    stem = model_path.stem
    return (d / f"{stem}_part_I_node_{rank}.onnx", d / f"{stem}_part_II_node_{rank}.onnx",
            d / f"{stem}_split_node_{rank}.json")
