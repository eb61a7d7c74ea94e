"""Split engine: cut an ONNX model at a node rank into Part I (UE) and Part II (network).

Why a graph analysis of its own rather than `onnx.utils.extract_model` per rank: the crossing sets of
*every* rank come from one linear pass over producer / last-consumer ranks, and one extraction is a
plain reachability walk (no shape inference per rank, no inferred `value_info` copied into the parts,
which made onnxruntime fail on RetinaNet; and tensors read by If/Loop/Scan bodies from the outer graph
are followed, which `extract_model` misses).

Terms
- rank r: nodes [0, r) of the topological order are Part I, nodes [r, N) are Part II. A node given by
  name or index k goes to Part II with flag 'before' (r = k) or to Part I with flag 'after' (r = k + 1).
- crossing set at r: every non-constant tensor made in Part I (or a graph input) that a live Part II
  node consumes, including reads from subgraph bodies. Initializers, Constant nodes and everything
  computed only from them never cross: Part II gets its own copy of those nodes.
- a graph input that Part II needs only through Shape/Size is replaced by those small shape tensors:
  the Shape/Size nodes are hoisted into Part I (reported in `passthrough_inputs`, mode 'shape').
- rank 0: Part I only passes inputs through (plus hoisted Shape nodes). Rank N (or any rank where no
  live node is left): nothing crosses, all outputs come from Part I, and Part II is the identity on
  Part I's final outputs so that both files still load in onnxruntime (an empty graph does not).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from splitinfer.common.core.errors import UserError
from splitinfer.common.core.onnx_io import MAX_ORT_IR_VERSION, cap_ir_version, load_model, save_model

FLAGS = ("before", "after")
SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})  # read only the input's shape, never its values
NONDETERMINISTIC_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)
MANIFEST_FORMAT = 1
_PROTOBUF_LIMIT = 2**31 - 1


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _tag(field_number: int) -> bytes:
    """Protobuf key of a length-delimited field (wire type 2)."""
    return _varint(field_number << 3 | 2)


@dataclass
class TensorInfo:
    """A crossing tensor: name, numpy dtype name and shape (ints, symbolic names, None where unknown)."""

    name: str
    dtype: str | None
    shape: list | None


@dataclass
class PassthroughInput:
    """A graph input needed by Part II: sent itself ('tensor') or only as its shape tensors ('shape')."""

    name: str
    mode: str
    shape_tensors: list[str] = field(default_factory=list)


@dataclass
class SplitPlan:
    """Everything needed to build, run and reassemble one split (serialised as the JSON manifest)."""

    rank: int
    node_name: str | None
    flag: str
    num_nodes: int
    crossing: list[TensorInfo]
    passthrough_inputs: list[PassthroughInput]
    part1_inputs: list[str]
    part1_outputs: list[str]
    part2_inputs: list[str]
    part2_outputs: list[str]
    part1_final_outputs: list[str]
    consolidation: list[tuple[str, str]]
    source_sha256: str | None = None
    hoisted_nodes: list[int] = field(default_factory=list)
    files: dict = field(default_factory=dict)

    @property
    def crossing_names(self) -> list[str]:
        return [t.name for t in self.crossing]

    @property
    def part2_identity(self) -> bool:
        """True when Part II has no node of its own (rank N): it only hands Part I's outputs on."""
        return all(part == "I" for _, part in self.consolidation)

    def to_manifest(self) -> dict:
        d = asdict(self)
        d["format"] = MANIFEST_FORMAT
        d["consolidation"] = [[n, p] for n, p in self.consolidation]
        return d

    @classmethod
    def from_manifest(cls, d: dict) -> "SplitPlan":
        try:
            return cls(
                rank=int(d["rank"]),
                node_name=d.get("node_name"),
                flag=d["flag"],
                num_nodes=int(d["num_nodes"]),
                crossing=[TensorInfo(**t) for t in d["crossing"]],
                passthrough_inputs=[PassthroughInput(**p) for p in d["passthrough_inputs"]],
                part1_inputs=list(d["part1_inputs"]),
                part1_outputs=list(d["part1_outputs"]),
                part2_inputs=list(d["part2_inputs"]),
                part2_outputs=list(d["part2_outputs"]),
                part1_final_outputs=list(d["part1_final_outputs"]),
                consolidation=[(n, p) for n, p in d["consolidation"]],
                source_sha256=d.get("source_sha256"),
                hoisted_nodes=[int(i) for i in d.get("hoisted_nodes", [])],
                files=dict(d.get("files", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"split manifest is malformed ({type(exc).__name__}: {exc})") from None

    @classmethod
    def load(cls, path) -> "SplitPlan":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"split manifest not found: {path}")
        try:
            return cls.from_manifest(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not a JSON split manifest ({exc})") from None


# ----------------------------------------------------------------------------------------------
# graph analysis


def _subgraphs(node: onnx.NodeProto):
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _outer_reads(graph: onnx.GraphProto) -> list[str]:
    """Names a subgraph body reads from enclosing scopes (nested bodies included), in first-use order."""
    local = {i.name for i in graph.input}
    local.update(t.name for t in graph.initializer)
    local.update(t.values.name for t in graph.sparse_initializer)
    for n in graph.node:
        local.update(o for o in n.output if o)
    reads: dict[str, None] = {}
    for n in graph.node:
        for name in n.input:
            if name and name not in local:
                reads[name] = None
        for sub in _subgraphs(n):
            for name in _outer_reads(sub):
                if name not in local:
                    reads[name] = None
    return list(reads)


def _node_inputs(node: onnx.NodeProto) -> list[str]:
    """Explicit inputs plus outer-scope reads of the node's subgraphs, unique, in order."""
    names = dict.fromkeys(i for i in node.input if i)
    for sub in _subgraphs(node):
        names.update(dict.fromkeys(_outer_reads(sub)))
    return list(names)


def _np_dtype_name(elem_type: int) -> str | None:
    if not elem_type:
        return None
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _has_rank(tp: onnx.TypeProto | None) -> bool:
    return (tp is not None and tp.HasField("tensor_type") and tp.tensor_type.elem_type != 0
            and tp.tensor_type.HasField("shape"))


def _info_from_type(name: str, tp: onnx.TypeProto | None) -> TensorInfo:
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
    return TensorInfo(name, _np_dtype_name(tt.elem_type), shape)


class SplitGraph:
    """One analysis of a model (order, producers, consumers, constants) serving every rank."""

    def __init__(self, model: onnx.ModelProto, source_sha256: str | None = None):
        self.model = model
        self._sha = source_sha256
        g = model.graph
        self.initializers = {t.name: t for t in g.initializer}
        self.sparse_initializers = {t.values.name: t for t in g.sparse_initializer}
        const_inits = set(self.initializers) | set(self.sparse_initializers)
        # Inputs that are also initializers (old IR) are weights with defaults: treat as constants.
        self.inputs = [vi for vi in g.input if vi.name not in const_inits]
        self.input_names = [vi.name for vi in self.inputs]
        self.output_names = [vi.name for vi in g.output]
        self._input_vi = {vi.name: vi for vi in self.inputs}
        self._output_vi = {vi.name: vi for vi in g.output}

        nodes = list(g.node)
        ins = [_node_inputs(n) for n in nodes]
        order, self.was_sorted = self._topological_order(nodes, ins, const_inits)
        self.nodes = [nodes[i] for i in order]
        self._ins = [ins[i] for i in order]
        self._outs = [[o for o in n.output if o] for n in self.nodes]
        self.num_nodes = n_nodes = len(self.nodes)
        self.node_names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(self.nodes)]
        self._by_name: dict[str, list[int]] = {}
        for i, name in enumerate(self.node_names):
            self._by_name.setdefault(name, []).append(i)

        # producers: -1 for graph inputs and initializers
        self.producer: dict[str, int] = {name: -1 for name in self.input_names}
        self.producer.update({name: -1 for name in const_inits})
        out_index: dict[str, int] = {}
        for i, outs in enumerate(self._outs):
            for j, o in enumerate(outs):
                self.producer[o] = i
                out_index[o] = j

        # constant-derived tensors (never cross; Part II recomputes them)
        self.constants: set[str] = set(const_inits)
        self.const_nodes: set[int] = set()
        for i, n in enumerate(self.nodes):
            if n.op_type in NONDETERMINISTIC_OPS:
                continue
            deps = self._ins[i]
            if (deps and all(d in self.constants for d in deps)) or (not deps and n.op_type == "Constant"):
                self.const_nodes.add(i)
                self.constants.update(self._outs[i])

        # liveness: a node matters only if some graph output depends on it
        needed = set(self.output_names)
        self.live = [False] * n_nodes
        for i in range(n_nodes - 1, -1, -1):
            if any(o in needed for o in self._outs[i]):
                self.live[i] = True
                needed.update(self._ins[i])

        # consumers (live nodes only, ascending ranks)
        self.consumers: dict[str, list[int]] = {}
        for i in range(n_nodes):
            if self.live[i]:
                for t in self._ins[i]:
                    self.consumers.setdefault(t, []).append(i)

        # crossing intervals: tensor t crosses at every rank r in [start, end]
        self._key: dict[str, tuple] = {}
        self._interval: dict[str, tuple[int, int]] = {}
        self._shape_start: dict[str, int] = {}  # input -> first rank from which only Shape/Size need it
        self._shape_nodes: dict[str, list[int]] = {}  # input -> its live Shape/Size consumers
        hoistable_start: dict[str, int] = {}  # shape tensor -> first rank it crosses through hoisting
        for k, x in enumerate(self.input_names):
            cons = self.consumers.get(x)
            self._key[x] = (-1, k)
            if not cons:
                continue
            shape_nodes = [c for c in cons if self.nodes[c].op_type in SHAPE_ONLY_OPS
                           and self.nodes[c].domain in ("", "ai.onnx")]
            shape_set = set(shape_nodes)
            others = [c for c in cons if c not in shape_set]
            s = (max(others) + 1) if others else 0
            self._shape_start[x] = s
            self._shape_nodes[x] = shape_nodes
            if s > 0:
                self._interval[x] = (0, s - 1)
            for c in shape_nodes:
                for y in self._outs[c]:
                    hoistable_start[y] = s
        for t, cons in self.consumers.items():
            p = self.producer.get(t)
            if p is None or p < 0 or t in self.constants:
                continue
            start = p + 1
            if t in hoistable_start:
                start = min(hoistable_start[t], p + 1)
            self._interval[t] = (start, cons[-1])
            self._key[t] = (p, out_index[t])
        self._types: dict[str, onnx.TypeProto] | None = None
        self._init_bytes: dict[str, bytes] | None = None

    # -- order ---------------------------------------------------------------------------------

    @staticmethod
    def _topological_order(nodes, ins, const_inits):
        """Keep the stored order when it is topological, else a stable Kahn sort (ties: stored order)."""
        graph_level = set(const_inits)
        produced_by: dict[str, int] = {}
        for i, n in enumerate(nodes):
            for o in n.output:
                if o:
                    produced_by[o] = i
        known = set()
        ok = True
        for i, n in enumerate(nodes):
            for t in ins[i]:
                if t in produced_by and t not in known:
                    ok = False
                    break
            if not ok:
                break
            known.update(o for o in n.output if o)
        if ok:
            return list(range(len(nodes))), True
        deps = [{produced_by[t] for t in ins[i] if t in produced_by and t not in graph_level}
                for i in range(len(nodes))]
        users: list[list[int]] = [[] for _ in nodes]
        indeg = [0] * len(nodes)
        for i, ds in enumerate(deps):
            ds.discard(i)
            indeg[i] = len(ds)
            for d in ds:
                users[d].append(i)
        heap = [i for i in range(len(nodes)) if indeg[i] == 0]
        heapq.heapify(heap)
        order = []
        while heap:
            i = heapq.heappop(heap)
            order.append(i)
            for u in users[i]:
                indeg[u] -= 1
                if indeg[u] == 0:
                    heapq.heappush(heap, u)
        if len(order) != len(nodes):
            stuck = next(nodes[i] for i in range(len(nodes)) if indeg[i] > 0)
            raise UserError(f"model graph has a cycle (node {stuck.name or stuck.op_type!r} never becomes ready)")
        return order, False

    # -- ranks -----------------------------------------------------------------------------------

    def rank_of(self, name_or_rank, flag: str = "before") -> int:
        """Split rank for a node given by name or index: 'before' puts it in Part II, 'after' in Part I.

        Index N with 'before' is the end of the graph (everything in Part I).
        """
        if flag not in FLAGS:
            raise UserError(f"unknown split flag {flag!r} (expected 'before' or 'after')")
        if isinstance(name_or_rank, (int, np.integer)) and not isinstance(name_or_rank, bool):
            k = int(name_or_rank)
            top = self.num_nodes if flag == "before" else self.num_nodes - 1
            if not 0 <= k <= top:
                raise UserError(
                    f"rank {k} out of range: the model has {self.num_nodes} nodes "
                    f"(valid with flag {flag!r}: 0..{top})"
                )
        else:
            k = self._index_of_name(str(name_or_rank))
        return k if flag == "before" else k + 1

    def _index_of_name(self, name: str) -> int:
        hits = self._by_name.get(name)
        if not hits:
            import difflib

            close = difflib.get_close_matches(name, list(self._by_name), n=3)
            hint = f" (did you mean: {', '.join(close)}?)" if close else ""
            raise UserError(f"no node named {name!r} in the model{hint}")
        if len(hits) > 1:
            raise UserError(f"node name {name!r} is ambiguous (ranks {hits}); give the rank instead")
        return hits[0]

    # -- crossing sets -----------------------------------------------------------------------------

    def crossing_at(self, rank: int) -> list[str]:
        """Names crossing at one rank (deterministic order: graph inputs, then by producer rank)."""
        if not 0 <= rank <= self.num_nodes:
            raise UserError(f"rank {rank} out of range 0..{self.num_nodes}")
        hits = [t for t, (a, b) in self._interval.items() if a <= rank <= b]
        return sorted(hits, key=self._key.__getitem__)

    def all_crossing_sets(self) -> list[list[str]]:
        """Crossing sets for every rank 0..N from one sweep over the intervals."""
        n = self.num_nodes
        add: list[list[str]] = [[] for _ in range(n + 2)]
        drop: list[list[str]] = [[] for _ in range(n + 2)]
        for t, (a, b) in self._interval.items():
            add[a].append(t)
            drop[b + 1].append(t)
        active: dict[str, None] = {}
        out = []
        key = self._key.__getitem__
        for r in range(n + 1):
            for t in drop[r]:
                del active[t]
            for t in add[r]:
                active[t] = None
            out.append(sorted(active, key=key))
        return out

    # -- types -------------------------------------------------------------------------------------

    def _type_map(self) -> dict[str, onnx.TypeProto]:
        """Types of tensors from the model's own value infos, completed by one shape inference.

        Inference runs once per model (not per rank) on a skeleton whose large initializers are
        declared as inputs, so no weight bytes are copied and >2 GB models work.
        """
        if self._types is not None:
            return self._types
        g = self.model.graph
        types: dict[str, onnx.TypeProto] = {}
        for vi in list(g.value_info) + list(g.input) + list(g.output):
            if vi.type.WhichOneof("value"):
                types[vi.name] = vi.type
        missing = [t for t in self._interval if t not in types]
        if missing:
            types.update({k: v for k, v in self._inferred_types().items() if k not in types})
        unresolved = [t for t in self._interval if not _has_rank(types.get(t))]
        if unresolved:
            types.update(self._observed_types(unresolved))
        self._types = types
        return types

    def _observed_types(self, names: list[str]) -> dict[str, onnx.TypeProto]:
        """Element type and rank of tensors onnx shape inference could not resolve (a Reshape whose
        target shape is computed at run time, say), read off one onnxruntime run on random inputs.

        Part files must declare a rank for every input and output to pass `onnx.checker`; dims
        stay unknown there anyway, so the random input's size does not leak into the parts. Where
        the run fails, onnxruntime's static types still give the element type (its unoptimised
        shapes cannot tell a scalar from an unknown rank, so they are not used).
        """
        import onnxruntime as ort

        probe = onnx.ModelProto()
        probe.CopyFrom(self.model)
        del probe.graph.output[:]
        probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
        cap_ir_version(probe)
        try:
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            so.log_severity_level = 4  # a failed probe is expected and handled: no error log
            sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
        except Exception:  # an unusual model: keep the types unknown rather than fail the split
            return {}
        try:
            quiet = ort.RunOptions()
            quiet.log_severity_level = 4
            values = sess.run(names, random_feeds(self.model), quiet)
        except Exception:
            values = [None] * len(names)
        found = {}
        for out, value in zip(sess.get_outputs(), values):
            if isinstance(value, np.ndarray):
                elem = helper.np_dtype_to_tensor_dtype(value.dtype)
                found[out.name] = helper.make_tensor_type_proto(elem, [None] * value.ndim)
            elif out.type.startswith("tensor("):
                ort_name = out.type[len("tensor("):-1]
                try:
                    dtype = np.dtype({"float": "float32", "double": "float64"}.get(ort_name, ort_name))
                except TypeError:
                    continue
                tp = onnx.TypeProto()
                tp.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(dtype)
                found[out.name] = tp
        return found

    def _inferred_types(self) -> dict[str, onnx.TypeProto]:
        g = self.model.graph
        sk = onnx.ModelProto()
        sk.ir_version = self.model.ir_version
        sk.opset_import.extend(self.model.opset_import)
        sk.functions.extend(self.model.functions)
        sg = sk.graph
        sg.name = g.name
        sg.node.extend(self.nodes)
        sg.input.extend(self.inputs)
        for t in g.initializer:
            if int(np.prod(t.dims)) <= 4096 and not t.external_data:
                sg.initializer.append(t)
            else:
                sg.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        sg.sparse_initializer.extend(g.sparse_initializer)
        sg.output.extend(g.output)
        try:
            inferred = onnx.shape_inference.infer_shapes(sk, strict_mode=False, data_prop=True)
        except Exception:
            return {}
        return {vi.name: vi.type for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
                if vi.type.WhichOneof("value")}

    def tensor_info(self, name: str) -> TensorInfo:
        return _info_from_type(name, self._type_map().get(name))

    # -- plans -------------------------------------------------------------------------------------

    def plan(self, rank: int | None = None, name: str | None = None, flag: str = "before") -> SplitPlan:
        """Plan the split at a node index (`rank`) or node `name`, with `flag` before/after."""
        if (rank is None) == (name is None):
            raise UserError("give exactly one of a rank or a node name")
        r = self.rank_of(rank if rank is not None else name, flag)
        k = r if flag == "before" else r - 1
        node_name = self.node_names[k] if k < self.num_nodes else None
        crossing = self.crossing_at(r)

        passthrough, hoisted = [], set()
        for x in self.input_names:
            cons = self.consumers.get(x, [])
            if not cons or cons[-1] < r:
                continue
            if r < self._shape_start[x]:
                passthrough.append(PassthroughInput(x, "tensor"))
            else:
                nodes = [c for c in self._shape_nodes[x] if c >= r]
                hoisted.update(nodes)
                # the hoisted nodes' outputs: each crosses, or is a final output of Part I
                passthrough.append(PassthroughInput(x, "shape", [y for c in nodes for y in self._outs[c]]))

        consolidation, final1 = [], []
        for o in self.output_names:
            p = self.producer.get(o, -1)
            part = "I" if (p < r or p in hoisted) else "II"
            consolidation.append((o, part))
            if part == "I":
                final1.append(o)
        cross_set = set(crossing)
        part1_outputs = crossing + [o for o in dict.fromkeys(final1) if o not in cross_set]
        part2_outputs = [o for o, p in consolidation if p == "II"]
        part2_inputs = list(crossing)
        if not part2_outputs:  # nothing left for Part II: it becomes the identity on Part I's outputs
            part2_inputs = list(dict.fromkeys(final1))
            part2_outputs = list(part2_inputs)
        needed_inputs = self._part1_needed_inputs(r, hoisted, part1_outputs)
        part1_inputs = [x for x in self.input_names if x in needed_inputs]
        return SplitPlan(
            rank=r,
            node_name=node_name,
            flag=flag,
            num_nodes=self.num_nodes,
            crossing=[self.tensor_info(t) for t in crossing],
            passthrough_inputs=passthrough,
            part1_inputs=part1_inputs,
            part1_outputs=part1_outputs,
            part2_inputs=part2_inputs,
            part2_outputs=part2_outputs,
            part1_final_outputs=list(dict.fromkeys(final1)),
            consolidation=consolidation,
            source_sha256=self.source_sha256,
            hoisted_nodes=sorted(hoisted),
        )

    @property
    def source_sha256(self) -> str:
        """sha256 of the source: the file's bytes when split from a file, else of the serialised proto."""
        if self._sha is None:
            h = hashlib.sha256()
            try:
                h.update(self.model.SerializeToString())
            except ValueError:  # > 2 GB in memory: hash piece by piece
                g = self.model.graph
                for part in [*self.model.opset_import, *g.input, *g.output, *g.node, *g.initializer]:
                    h.update(part.SerializeToString())
            self._sha = h.hexdigest()
        return self._sha

    def _part1_needed_inputs(self, r, hoisted, targets) -> set[str]:
        _, _, graph_inputs = self._closure(targets, lambda p: p < r or p in hoisted, stop=set())
        return graph_inputs

    def _closure(self, targets, allowed, stop):
        """Backward walk from `targets`: (node ranks, initializer names, graph inputs) reached."""
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
            if t in self.initializers or t in self.sparse_initializers:
                inits.add(t)
                continue
            p = self.producer.get(t)
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
            stack.extend(self._ins[p])
        return nodes, inits, graph_inputs

    # -- extraction --------------------------------------------------------------------------------

    def _value_info(self, name: str) -> onnx.ValueInfoProto:
        if name in self._input_vi:
            return self._input_vi[name]
        if name in self._output_vi and self._output_vi[name].type.WhichOneof("value"):
            return self._output_vi[name]
        # Inferred types keep their element type and rank, but every dim becomes unknown: a wrong
        # static dim (inference errs on data-dependent, e.g. empty, tensors) would make onnxruntime
        # reject Part II's input. The manifest keeps the inferred dims for information.
        vi = onnx.ValueInfoProto(name=name)
        tp = self._type_map().get(name)
        if tp is not None:
            vi.type.CopyFrom(tp)
            if tp.HasField("tensor_type") and tp.tensor_type.HasField("shape"):
                for d in vi.type.tensor_type.shape.dim:
                    d.Clear()
        return vi

    def _make_part(self, suffix, node_ranks, inits, inputs, outputs, with_initializers=True):
        src = self.model
        m = onnx.ModelProto()
        m.ir_version = max(src.ir_version, 4)  # IR >= 4: initializers need not be graph inputs
        m.opset_import.extend(src.opset_import)
        m.functions.extend(src.functions)
        for attr in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
            setattr(m, attr, getattr(src, attr))
        m.metadata_props.extend(src.metadata_props)
        g = m.graph
        g.name = f"{src.graph.name or 'graph'}_{suffix}"
        g.node.extend(self.nodes[i] for i in sorted(node_ranks))
        init_names = [n for n in self.initializers if n in inits]
        if with_initializers:
            g.initializer.extend(self.initializers[n] for n in init_names)
        g.sparse_initializer.extend(self.sparse_initializers[n] for n in self.sparse_initializers if n in inits)
        g.input.extend(self._value_info(n) for n in inputs)
        g.output.extend(self._value_info(n) for n in outputs)
        return cap_ir_version(m), init_names

    def _parts(self, plan: SplitPlan, with_initializers=True):
        if plan.num_nodes != self.num_nodes or (
            plan.source_sha256 and self._sha and plan.source_sha256 != self._sha
        ):
            raise UserError("split plan was made for a different model (node count or sha256 differ)")
        r, hoisted = plan.rank, set(plan.hoisted_nodes)
        n1, i1, gin1 = self._closure(plan.part1_outputs, lambda p: p < r or p in hoisted, stop=set())
        inputs1 = [x for x in self.input_names if x in gin1 or x in set(plan.part1_outputs)]
        part1, names1 = self._make_part("part_I", n1, i1, inputs1, plan.part1_outputs, with_initializers)
        if plan.part2_identity:
            n2, i2 = set(), set()
        else:
            stop = set(plan.part2_inputs)
            n2, i2, gin2 = self._closure(
                plan.part2_outputs, lambda p: (p >= r and p not in hoisted) or p in self.const_nodes, stop
            )
            if gin2:
                raise AssertionError(f"split engine bug: Part II needs graph inputs {sorted(gin2)} not crossing")
        part2, names2 = self._make_part("part_II", n2, i2, plan.part2_inputs, plan.part2_outputs,
                                        with_initializers)
        return part1, part2, names1, names2

    def extract(self, plan: SplitPlan) -> tuple[onnx.ModelProto, onnx.ModelProto]:
        """Build (Part I, Part II) for a plan made from this model."""
        part1, part2, _, _ = self._parts(plan)
        return part1, part2

    def write_parts(self, plan: SplitPlan, part1_path, part2_path) -> None:
        """Write both parts. Each weight is serialised once per model and its bytes reused for every
        rank (protobuf merges a repeated `graph` field), so writing costs little more than the disk
        write; parts over 2 GB go through `save_model` instead.
        """
        skel1, skel2, names1, names2 = self._parts(plan, with_initializers=False)
        skeletons = [(skel1, names1, part1_path), (skel2, names2, part2_path)]
        blobs = [self._initializer_bytes(names) for _, names, _ in skeletons]
        if any(sum(map(len, b)) + 2**24 > _PROTOBUF_LIMIT for b in blobs):
            for part, path in zip(self.extract(plan), (part1_path, part2_path)):
                save_model(part, path)
            return
        graph_field = _tag(onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number)
        init_field = _tag(onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number)
        for (skel, _, path), blob in zip(skeletons, blobs):
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            body = sum(len(init_field) + len(_varint(len(b))) + len(b) for b in blob)
            with open(path, "wb") as f:
                f.write(skel.SerializeToString())
                if blob:
                    f.write(graph_field + _varint(body))
                    for b in blob:
                        f.write(init_field + _varint(len(b)))
                        f.write(b)

    def _initializer_bytes(self, names) -> list[bytes]:
        if self._init_bytes is None:
            self._init_bytes = {}
        cache = self._init_bytes
        for n in names:
            if n not in cache:
                cache[n] = self.initializers[n].SerializeToString()
        return [cache[n] for n in names]


# ----------------------------------------------------------------------------------------------
# files


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def part_paths(model_path, rank: int, out_dir=None) -> tuple[Path, Path, Path]:
    model_path = Path(model_path)
    d = Path(out_dir) if out_dir else model_path.parent
    stem = model_path.stem
    return (d / f"{stem}_part_I_node_{rank}.onnx", d / f"{stem}_part_II_node_{rank}.onnx",
            d / f"{stem}_split_node_{rank}.json")


def split_model(model_path, rank=None, name=None, flag="before", out_dir=None, graph: SplitGraph | None = None):
    """Split a model file; write both parts and the manifest. Returns (part1, part2, manifest, plan)."""
    model_path = Path(model_path)
    if graph is None:
        model = load_model(model_path)
        graph = SplitGraph(model, source_sha256=file_sha256(model_path))
    plan = graph.plan(rank=rank, name=name, flag=flag)
    p1, p2, mf = part_paths(model_path, plan.rank, out_dir)
    try:
        graph.write_parts(plan, p1, p2)
    except OSError as exc:
        raise UserError(f"cannot write split parts to {p1.parent}: {exc}") from None
    plan.files = {"source": model_path.name, "part1": p1.name, "part2": p2.name}
    mf.write_text(json.dumps(plan.to_manifest(), indent=1))
    return p1, p2, mf, plan


# ----------------------------------------------------------------------------------------------
# running and checking


def _run(session, feeds: dict, names: list[str]) -> dict:
    ort_sess = getattr(session, "ort", session)
    wanted = {i.name for i in ort_sess.get_inputs()}
    outs = ort_sess.run(names, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip(names, outs))


def consolidate(plan: SplitPlan, part1_outputs: dict, part2_outputs: dict) -> list[np.ndarray]:
    """The model's outputs in their original order, taken from Part I or Part II as the plan says."""
    result = []
    for name, part in plan.consolidation:
        src = part1_outputs if part == "I" else part2_outputs
        if name not in src:
            raise KeyError(f"output {name!r} expected from Part {part} is missing")
        result.append(src[name])
    return result


def run_split(part1_session, part2_session, plan: SplitPlan, feeds: dict) -> dict:
    """Run Part I then Part II (sessions from `make_session` or onnxruntime) and reassemble outputs."""
    out1 = _run(part1_session, feeds, plan.part1_outputs)
    out2 = {}
    if not plan.part2_identity:
        out2 = _run(part2_session, {n: out1[n] for n in plan.part2_inputs}, plan.part2_outputs)
    return dict(zip([n for n, _ in plan.consolidation], consolidate(plan, out1, out2)))


def random_feeds(model: onnx.ModelProto, seed: int = 0, free_dim: int = 64) -> dict:
    """Random inputs for every graph input; unknown dims are 1 for the first axis, `free_dim` elsewhere."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        shape = [d.dim_value if d.HasField("dim_value") else (1 if j == 0 else free_dim)
                 for j, d in enumerate(tt.shape.dim)]
        if dtype == np.bool_:
            arr = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            arr = rng.integers(0, 10, size=shape).astype(dtype)
        else:
            arr = rng.random(shape).astype(dtype)
        feeds[vi.name] = arr
    return feeds


def load_feeds(path) -> dict:
    """Inputs from a .npz file (arrays named like the model inputs); never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"input file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:
        raise UserError(f"{path}: not a .npz file of input arrays ({type(exc).__name__}: {exc})") from None


@dataclass
class VerifyRow:
    name: str
    part: str
    shape: list
    dtype: str
    max_abs_diff: float
    equal: bool


@dataclass
class VerifyReport:
    ok: bool
    rows: list[VerifyRow]
    rtol: float
    atol: float
    seconds: float

    def lines(self) -> list[str]:
        mode = "exact" if self.rtol == 0 and self.atol == 0 else f"rtol={self.rtol} atol={self.atol}"
        out = [f"verify ({mode}): {'OK' if self.ok else 'MISMATCH'} in {self.seconds:.2f} s"]
        for r in self.rows:
            out.append(f"  {r.name} [Part {r.part}] {r.dtype}{r.shape}: max|diff|={r.max_abs_diff:.3g} "
                       f"{'equal' if r.equal else 'DIFFERENT'}")
        return out


def _verify_session(model):
    """A CPU session with graph optimizations off (see `verify_split`); model as proto or path."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UserError(f"onnxruntime cannot load model for verification: {exc}") from None


def reference_outputs(model, feeds: dict) -> dict:
    """Outputs of the whole model (proto or path), to compare many splits against one run."""
    if isinstance(model, onnx.ModelProto):
        model = cap_ir_version(model)
    sess = _verify_session(model)
    names = [o.name for o in sess.get_outputs()]
    try:
        return _run(sess, feeds, names)
    except Exception as exc:
        raise UserError(f"the whole model fails on the verification inputs: {exc}") from None


def _compare(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> tuple[float, bool]:
    if a.shape != b.shape or a.dtype != b.dtype:
        return float("inf"), False
    if a.size == 0:
        return 0.0, True
    if a.dtype.kind not in "fciub":
        equal = bool(np.array_equal(a, b))
        return (0.0 if equal else float("inf")), equal
    fa, fb = np.atleast_1d(a).astype(np.float64), np.atleast_1d(b).astype(np.float64)
    diff = np.abs(fa - fb)
    diff[np.isnan(fa) & np.isnan(fb)] = 0.0  # NaN in both places counts as equal
    max_diff = float(np.nan_to_num(diff, nan=np.inf).max())
    if rtol == 0 and atol == 0:
        return max_diff, bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    return max_diff, bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))


def verify_split(model, plan: SplitPlan, feeds: dict | None = None, rtol: float = 0.0, atol: float = 0.0,
                 parts=None, graph: SplitGraph | None = None, seed: int = 0,
                 reference: dict | None = None) -> VerifyReport:
    """Compare the whole model with Part II(Part I(x)) on onnxruntime (CPU), output by output.

    `model` and `parts` may be protos or paths (paths keep external data and >2 GB models working).
    Inputs: `feeds`, else random ones (`random_feeds`, `seed`). `reference`: whole-model outputs
    already computed on the same feeds (saves one run when checking many ranks).

    Default tolerance is zero: a cut changes no arithmetic, so a lossless split must match bit for
    bit. Sessions run with graph optimizations off, because onnxruntime may fuse operators across
    the cut in the whole model but not in the parts, which changes float rounding without any error
    in the split. `rtol`/`atol` (numpy.allclose) exist for lossy transports between the parts.
    """
    t0 = time.perf_counter()
    proto = model if isinstance(model, onnx.ModelProto) else load_model(model, load_external_data=False)
    if parts is None:
        if graph is None:
            full = proto if isinstance(model, onnx.ModelProto) else load_model(model)
            graph = SplitGraph(full)
        parts = graph.extract(plan)
    if feeds is None:
        feeds = random_feeds(proto, seed=seed)
    inits = {t.name for t in proto.graph.initializer}
    missing = [vi.name for vi in proto.graph.input if vi.name not in inits and vi.name not in feeds]
    if missing:
        raise UserError(f"verification inputs lack model input(s) {missing} (have {sorted(feeds)})")
    if reference is None:
        if not isinstance(model, onnx.ModelProto) and proto.ir_version > MAX_ORT_IR_VERSION:
            model = load_model(model)  # onnxruntime refuses the file; load it and cap the IR version
        reference = reference_outputs(model, feeds)
    split = run_split(_verify_session(parts[0]), _verify_session(parts[1]), plan, feeds)
    rows, ok = [], True
    for name, part in plan.consolidation:
        a, b = np.asarray(reference[name]), np.asarray(split[name])
        diff, equal = _compare(a, b, rtol, atol)
        ok &= equal
        rows.append(VerifyRow(name, part, list(b.shape), str(b.dtype), diff, equal))
    return VerifyReport(ok, rows, rtol, atol, time.perf_counter() - t0)
