"""The resolved cut: both parts' inputs and outputs, what crosses, where each model output comes from.

Why a plan of its own: the UE process, the network process, the sweep and the manifest all need the
same answer to "what crosses and how are outputs reassembled", without the graph analysis; the plan is
that answer, serialised as the JSON manifest.

Defined terms
- passthrough input: a graph input Part II needs: sent itself ('tensor'), or only through its
  Shape/Size nodes hoisted into Part I ('shape', their outputs cross instead).
- consolidation: for each model output in order, the part ('I' or 'II') that yields it.
- Part II identity: at rank N (or wherever no live node is left) Part II has no node of its own and
  hands Part I's final outputs on, so both files still load in onnxruntime (an empty graph does not).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from splitinfer.common.core.errors import UserError
from splitinfer.common.split.types import TensorInfo

MANIFEST_FORMAT = 1


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
    def output_names(self) -> list[str]:
        """The model's outputs, in order."""
        return [name for name, _ in self.consolidation]

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


def passthrough_and_hoisted(graph, r: int) -> tuple[list[PassthroughInput], set[int]]:
    """Graph inputs Part II needs at rank r, and the Shape/Size nodes hoisted into Part I for them."""
    passthrough, hoisted = [], set()
    for x in graph.input_names:
        cons = graph.consumers.get(x, [])
        if not cons or cons[-1] < r:
            continue
        if r < graph.crossings.shape_start[x]:
            passthrough.append(PassthroughInput(x, "tensor"))
        else:
            nodes = [c for c in graph.crossings.shape_nodes[x] if c >= r]
            hoisted.update(nodes)
            # the hoisted nodes' outputs: each crosses, or is a final output of Part I
            passthrough.append(PassthroughInput(x, "shape", [y for c in nodes for y in graph.outs[c]]))
    return passthrough, hoisted


def consolidation_at(graph, r: int, hoisted: set[int]) -> list[tuple[str, str]]:
    """For each model output, the part that yields it at rank r."""
    return [(o, "I" if (graph.producer.get(o, -1) < r or graph.producer.get(o, -1) in hoisted) else "II")
            for o in graph.output_names]


def part_io(crossing: list[str], consolidation) -> tuple[list[str], list[str], list[str], list[str]]:
    """(part1_outputs, part2_inputs, part2_outputs, part1_final_outputs) of a cut."""
    final1 = list(dict.fromkeys(o for o, p in consolidation if p == "I"))
    cross_set = set(crossing)
    part1_outputs = crossing + [o for o in final1 if o not in cross_set]
    part2_outputs = [o for o, p in consolidation if p == "II"]
    part2_inputs = list(crossing)
    if not part2_outputs:  # nothing left for Part II: it becomes the identity on Part I's outputs
        part2_inputs = list(final1)
        part2_outputs = list(final1)
    return part1_outputs, part2_inputs, part2_outputs, final1
