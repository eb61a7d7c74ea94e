"""Split engine facade: cut an ONNX model at a node rank into Part I (UE) and Part II (network).

Why a graph analysis of its own rather than `onnx.utils.extract_model` per rank: the crossing sets of
*every* rank come from one linear pass (crossing.py), and one extraction is a plain reachability walk
(parts.py). `SplitGraph` runs the shared analysis once per model, in named steps, and serves every rank:

    order -> producers -> constants -> liveness -> consumers -> crossing intervals   (once per model)
    cut -> plan (crossing set, passthrough inputs, consolidation) -> parts -> files  (per rank)

Terms (details in each module)
- rank r: nodes [0, r) of the topological order (order.py) are Part I, nodes [r, N) are Part II. A node
  given by name or index k goes to Part II with flag 'before' (r = k) or to Part I with 'after' (r = k+1).
- crossing set at r (crossing.py): every non-constant tensor made in Part I (or a graph input) that a
  live Part II node consumes, including reads from subgraph bodies. Constants never cross: Part II gets
  its own copy of the nodes computing them. A graph input Part II needs only through Shape/Size crosses
  as those small shape tensors instead (plan.py, mode 'shape').
- rank 0: Part I only passes inputs through (plus hoisted Shape nodes). Rank N: nothing crosses, Part II
  is the identity on Part I's final outputs.

The public names of the split layer stay importable from here (and from `splitinfer.common.split`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx

from splitinfer.common.core.errors import UserError
from splitinfer.common.core.files import file_sha256
from splitinfer.common.core.onnx_io import load_model
from splitinfer.common.split import order
from splitinfer.common.split.crossing import SHAPE_ONLY_OPS, Crossings, crossing_intervals
from splitinfer.common.split.cut import FLAGS, check_flag
from splitinfer.common.split.order import NONDETERMINISTIC_OPS
from splitinfer.common.split.parts import (WeightFragments, backward_closure, build_part, fits_one_protobuf,
                                           part_paths, save_part, write_part)
from splitinfer.common.split.plan import (MANIFEST_FORMAT, PassthroughInput, SplitPlan, consolidation_at, part_io,
                                          passthrough_and_hoisted)
from splitinfer.common.split.types import TensorInfo, info_from_type, random_feeds, resolve_types
from splitinfer.common.split.consolidate import consolidate, consolidated_outputs, run_split
from splitinfer.common.split.verify import VerifyReport, VerifyRow, load_feeds, reference_outputs, verify_split

__all__ = [
    "FLAGS", "MANIFEST_FORMAT", "NONDETERMINISTIC_OPS", "SHAPE_ONLY_OPS", "PassthroughInput", "SplitGraph",
    "SplitPlan", "TensorInfo", "VerifyReport", "VerifyRow", "consolidate", "consolidated_outputs", "file_sha256",
    "load_feeds", "part_paths", "random_feeds", "reference_outputs", "run_split", "split_model", "verify_split",
]


class SplitGraph:
    """One analysis of a model (order, producers, consumers, constants, crossing intervals) for every rank."""

    def __init__(self, model: onnx.ModelProto, source_sha256: str | None = None):
        self.model, self._sha = model, source_sha256
        g = model.graph
        self.initializers = {t.name: t for t in g.initializer}
        self.sparse_initializers = {t.values.name: t for t in g.sparse_initializer}
        const_inits = set(self.initializers) | set(self.sparse_initializers)
        # Inputs that are also initializers (old IR) are weights with defaults: constants.
        self.inputs = [vi for vi in g.input if vi.name not in const_inits]
        self.input_names = [vi.name for vi in self.inputs]
        self.output_names = [vi.name for vi in g.output]
        self.input_vi = {vi.name: vi for vi in self.inputs}
        self.output_vi = {vi.name: vi for vi in g.output}

        stored = list(g.node)
        stored_ins = [order.node_inputs(n) for n in stored]
        ranks, self.was_sorted = order.topological_order(stored, stored_ins, const_inits)
        self.nodes = [stored[i] for i in ranks]
        self.ins = [stored_ins[i] for i in ranks]
        self.outs = [order.node_outputs(n) for n in self.nodes]
        self.num_nodes = len(self.nodes)
        self.node_names = order.display_names(self.nodes)
        self._by_name = order.ranks_by_name(self.node_names)
        self.producer, out_index = order.producers(self.outs, [*self.input_names, *const_inits])
        self.constants, self.const_nodes = order.constants(self.nodes, self.ins, self.outs, const_inits)
        self.live = order.live_nodes(self.ins, self.outs, self.output_names)
        self.consumers = order.consumers(self.ins, self.live)
        self.crossings: Crossings = crossing_intervals(self.input_names, self.nodes, self.outs, self.consumers,
                                                       self.producer, out_index, self.constants)
        self._types: dict[str, onnx.TypeProto] | None = None
        self._fragments = WeightFragments(self.initializers)

    # -- cuts --------------------------------------------------------------------------------------

    def rank_of(self, name_or_rank, flag: str = "before") -> int:
        """Split rank for a node given by name or index: 'before' puts it in Part II, 'after' in Part I.

        Index N with 'before' is the end of the graph (everything in Part I).
        """
        check_flag(flag)
        if isinstance(name_or_rank, (int, np.integer)) and not isinstance(name_or_rank, bool):
            k = int(name_or_rank)
            top = self.num_nodes if flag == "before" else self.num_nodes - 1
            if not 0 <= k <= top:
                raise UserError(f"rank {k} out of range: the model has {self.num_nodes} nodes "
                                f"(valid with flag {flag!r}: 0..{top})")
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

    # -- crossing sets and types ---------------------------------------------------------------------

    def crossing_at(self, rank: int) -> list[str]:
        """Names crossing at one rank (deterministic order: graph inputs, then by producer rank)."""
        return self.crossings.at(rank)

    def all_crossing_sets(self) -> list[list[str]]:
        """Crossing sets for every rank 0..N from one sweep over the intervals."""
        return self.crossings.every_rank()

    def type_map(self) -> dict[str, onnx.TypeProto]:
        """Types of every tensor that crosses somewhere (types.py), resolved once per model."""
        if self._types is None:
            self._types = resolve_types(self.model, self.nodes, self.inputs, list(self.crossings.interval))
        return self._types

    def tensor_info(self, name: str) -> TensorInfo:
        return info_from_type(name, self.type_map().get(name))

    # -- plans ---------------------------------------------------------------------------------------

    def plan(self, rank: int | None = None, name: str | None = None, flag: str = "before") -> SplitPlan:
        """Plan the split at a node index (`rank`) or node `name`, with `flag` before/after."""
        if (rank is None) == (name is None):
            raise UserError("give exactly one of a rank or a node name")
        r = self.rank_of(rank if rank is not None else name, flag)
        k = r if flag == "before" else r - 1
        crossing = self.crossing_at(r)
        passthrough, hoisted = passthrough_and_hoisted(self, r)
        consolidation = consolidation_at(self, r, hoisted)
        part1_outputs, part2_inputs, part2_outputs, final1 = part_io(crossing, consolidation)
        _, _, needed_inputs = backward_closure(self, part1_outputs, lambda p: p < r or p in hoisted, stop=set())
        return SplitPlan(
            rank=r, node_name=self.node_names[k] if k < self.num_nodes else None, flag=flag,
            num_nodes=self.num_nodes, crossing=[self.tensor_info(t) for t in crossing],
            passthrough_inputs=passthrough, part1_inputs=[x for x in self.input_names if x in needed_inputs],
            part1_outputs=part1_outputs, part2_inputs=part2_inputs, part2_outputs=part2_outputs,
            part1_final_outputs=final1, consolidation=consolidation, source_sha256=self.source_sha256,
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

    # -- parts ---------------------------------------------------------------------------------------

    def _check_plan(self, plan: SplitPlan) -> None:
        if plan.num_nodes != self.num_nodes or (plan.source_sha256 and self._sha and plan.source_sha256 != self._sha):
            raise UserError("split plan was made for a different model (node count or sha256 differ)")

    def _parts(self, plan: SplitPlan, with_initializers: bool = True):
        """(Part I, Part II, Part I's initializer names, Part II's); skeletons without initializers."""
        self._check_plan(plan)
        r, hoisted = plan.rank, set(plan.hoisted_nodes)
        n1, i1, gin1 = backward_closure(self, plan.part1_outputs, lambda p: p < r or p in hoisted, stop=set())
        inputs1 = [x for x in self.input_names if x in gin1 or x in set(plan.part1_outputs)]
        part1, names1 = build_part(self, "part_I", n1, i1, inputs1, plan.part1_outputs, with_initializers)
        n2, i2 = set(), set()
        if not plan.part2_identity:
            in_part2 = lambda p: (p >= r and p not in hoisted) or p in self.const_nodes  # noqa: E731
            n2, i2, gin2 = backward_closure(self, plan.part2_outputs, in_part2, set(plan.part2_inputs))
            if gin2:
                raise AssertionError(f"split engine bug: Part II needs graph inputs {sorted(gin2)} not crossing")
        part2, names2 = build_part(self, "part_II", n2, i2, plan.part2_inputs, plan.part2_outputs,
                                   with_initializers)
        return part1, part2, names1, names2

    def extract(self, plan: SplitPlan) -> tuple[onnx.ModelProto, onnx.ModelProto]:
        """Build (Part I, Part II) for a plan made from this model."""
        part1, part2, _, _ = self._parts(plan)
        return part1, part2

    def write_parts(self, plan: SplitPlan, part1_path, part2_path) -> None:
        """Write both parts: skeletons plus weight fragments serialised once per model (parts.py);
        parts over 2 GB go through `save_model` (external data) instead."""
        skel1, skel2, names1, names2 = self._parts(plan, with_initializers=False)
        written = [(skel1, self._fragments.get(names1), part1_path), (skel2, self._fragments.get(names2), part2_path)]
        if all(fits_one_protobuf(frags, skel) for skel, frags, _ in written):
            for skel, frags, path in written:
                write_part(skel, frags, path)
            return
        for part, path in zip(self.extract(plan), (part1_path, part2_path)):
            save_part(part, path)


def split_model(model_path, rank=None, name=None, flag="before", out_dir=None, graph: SplitGraph | None = None,
                paths: tuple | None = None):
    """Split a model file; write both parts and the manifest. Returns (part1, part2, manifest, plan).
    `paths`: (part1, part2, manifest) file paths instead of `part_paths`' names."""
    model_path = Path(model_path)
    if graph is None:
        graph = SplitGraph(load_model(model_path), source_sha256=file_sha256(model_path))
    plan = graph.plan(rank=rank, name=name, flag=flag)
    p1, p2, mf = (Path(p) for p in paths) if paths else part_paths(model_path, plan.rank, out_dir)
    try:
        graph.write_parts(plan, p1, p2)
    except OSError as exc:
        raise UserError(f"cannot write split parts to {p1.parent}: {exc}") from None
    plan.files = {"source": model_path.name, "part1": p1.name, "part2": p2.name}
    mf.write_text(json.dumps(plan.to_manifest(), indent=1))
    return p1, p2, mf, plan
