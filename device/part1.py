"""Part I on the UE and the anchor (the whole model), and where the cut is.

Why the UE builds Part I itself: the device and the network process cut the same model file with the same
split engine, so both agree on the crossing list (`plan.part1_outputs`: the tensors crossing the cut, then
the model outputs Part I already yields; the server checks the same list at set-up) without shipping files.
Terms:
- split: given as a rank or node name (`--split`, `--flag`), or read off the part files the field's
  scripts give (`-partI`/`-partII`): the split manifest written beside them (`*_split_node_N.json`) names
  the rank; without one, the rank whose Part I has exactly the file's outputs.
- anchor: the whole model run locally, the reference the split's detections are compared with
  (agreement.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from splitinfer.common.core.errors import UserError
from splitinfer.common.core.whole_model import WholeModel


def parse_split(text: str | None) -> tuple[int | None, str | None]:
    """`--split` as (rank, None) for an integer, (None, node name) otherwise, (None, None) when absent."""
    from splitinfer.common.split.cut import parse_cut

    if text is None or not str(text).strip():
        return None, None
    cut = parse_cut(text)
    return (cut, None) if isinstance(cut, int) else (None, cut)


def _manifest_beside(part_path: Path, role: str) -> dict | None:
    """The split manifest next to a part file that names it as its `role` ('part1' or 'part2')."""
    for candidate in sorted(part_path.parent.glob("*.json")):
        try:
            d = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and isinstance(d.get("files"), dict) and d["files"].get(role) == part_path.name:
            return d
    return None


def _rank_from_outputs(graph, outputs: list[str], node_count: int, where: Path) -> int:
    """The rank whose Part I yields exactly `outputs` (a Part I file without a manifest)."""
    wanted = set(outputs)
    found = []
    for r, crossing in enumerate(graph.all_crossing_sets()):
        if set(crossing) <= wanted and set(graph.plan(rank=r).part1_outputs) == wanted:
            found.append(r)
    if not found:
        raise UserError(f"{where}: its outputs {outputs} are not the crossing tensors of any split of the anchor "
                        "(is it Part I of this model? give --split)")
    exact = [r for r in found if r <= node_count]  # a Part I holds the nodes before its rank (minus dead ones)
    return max(exact) if exact else found[0]


def _rank_from_inputs(graph, inputs: list[str], where: Path) -> int:
    """The rank whose Part II takes exactly `inputs` (a Part II file without a manifest)."""
    wanted = set(inputs)
    for r, crossing in enumerate(graph.all_crossing_sets()):
        if set(crossing) == wanted and set(graph.plan(rank=r).part2_inputs) == wanted:
            return r
    raise UserError(f"{where}: its inputs {inputs} are not the crossing tensors of any split of the anchor "
                    "(is it Part II of this model? give --split)")


def rank_of_part(graph, part_path, role: str, sha256: str | None) -> int:
    """Where a part file was cut: from its manifest, else from the file's own inputs/outputs."""
    from splitinfer.common.core.onnx_io import load_model

    part_path = Path(part_path)
    manifest = _manifest_beside(part_path, role)
    if manifest is not None:
        made_from = manifest.get("source_sha256")
        if made_from and sha256 and made_from != sha256:
            raise UserError(f"{part_path}: cut from another model than the anchor (its manifest's sha256 "
                            f"{made_from[:12]} vs {sha256[:12]})")
        try:
            return int(manifest["rank"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{part_path}: its split manifest has no rank") from None
    part = load_model(part_path)
    if role == "part1":
        return _rank_from_outputs(graph, [o.name for o in part.graph.output], len(part.graph.node), part_path)
    initializers = {i.name for i in part.graph.initializer}
    return _rank_from_inputs(graph, [i.name for i in part.graph.input if i.name not in initializers], part_path)


def plan_split(graph, rank: int | None = None, name: str | None = None, flag: str = "before", part1_path=None,
               part2_path=None, sha256=None):
    """The split plan: at a rank or node name when given, else where the part files were cut."""
    if rank is not None or name is not None:
        return graph.plan(rank=rank, name=name, flag=flag)
    for path, role in ((part1_path, "part1"), (part2_path, "part2")):
        if path:
            return graph.plan(rank=rank_of_part(graph, path, role, sha256))
    raise UserError("give the split with --split RANK or --split NODE_NAME, or the part files with -partI "
                    "(or -no_split)")


def check_onnx(path, model) -> None:
    import onnx

    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise UserError(f"{path}: fails the ONNX checker (-no_check_model skips it): {exc}") from None


class Part1:
    """Part I of a split, cut locally with the split engine (or loaded from a `-partI` file).

    The split: `rank` or node `name` (with `flag`); neither to read it off `part1_path` (or `part2_path`).
    """

    def __init__(self, model_path, rank: int | None = None, name: str | None = None, flag: str = "before",
                 device: str = "cpu", threads: int | None = None, part1_path=None, check_model: bool = True,
                 part2_path=None):
        from splitinfer.common.core.onnx_io import load_model
        from splitinfer.common.core.runtime import make_session
        from splitinfer.common.core.files import file_sha256
        from splitinfer.common.split.graph import SplitGraph

        self.model_path = Path(model_path)
        self.model = load_model(self.model_path)
        self.sha256 = file_sha256(self.model_path)
        self.graph = SplitGraph(self.model, source_sha256=self.sha256)
        self.plan = plan_split(self.graph, rank, name, flag, part1_path, part2_path, self.sha256)
        if part1_path:
            part1 = load_model(part1_path)
            outs = [o.name for o in part1.graph.output]
            missing = [n for n in self.plan.part1_outputs if n not in outs]
            if missing:
                raise UserError(f"{part1_path}: not Part I of split {self.plan.rank}: outputs {missing} missing")
        else:
            part1, _ = self.graph.extract(self.plan)
        if check_model:  # the files a user gives; Part I cut here inherits the whole model's validity
            check_onnx(self.model_path, self.model)
            if part1_path:
                check_onnx(part1_path, part1)
        self.session = make_session(part1, device=device, threads=threads)
        self.provider = self.session.provider

    @property
    def input_names(self) -> list[str]:
        """The model's real inputs (initializers listed as inputs by old IR versions left out)."""
        return list(self.graph.input_names)

    def run(self, feeds: dict) -> dict:
        """Part I on the family's feeds: {name: array} for every name of `plan.part1_outputs`."""
        from splitinfer.common.core.runtime import keep_feeds

        values = self.session.run(keep_feeds(feeds, self.session.input_names), self.plan.part1_outputs)
        return dict(zip(self.plan.part1_outputs, values))

    def part2_session(self, part2_path=None, device: str = "cpu", threads: int | None = None, check_model=True):
        """Part II of the same split run locally (the -ref_split reference); None when Part II is empty."""
        from splitinfer.common.core.onnx_io import load_model
        from splitinfer.common.core.runtime import make_session

        if self.plan.part2_identity:
            return None
        if part2_path:
            part2 = load_model(part2_path)
            initializers = {i.name for i in part2.graph.initializer}
            inputs = [i.name for i in part2.graph.input if i.name not in initializers]
            if set(inputs) != set(self.plan.part2_inputs):
                raise UserError(f"{part2_path}: not Part II of split {self.plan.rank}: inputs {inputs}, "
                                f"expected {self.plan.part2_inputs}")
            if check_model:
                check_onnx(part2_path, part2)
        else:
            part2 = self.graph.extract(self.plan)[1]
        return make_session(part2, device=device, threads=threads)


def check_family(model_path, family, input_names) -> None:
    """The family's preprocessing must feed the model's inputs (else onnxruntime fails on the first frame)."""
    missing = [n for n in family.input_names if n not in input_names]
    if missing:
        raise UserError(f"{model_path}: inputs {list(input_names)} do not match family {family.name} "
                        f"(expects {list(family.input_names)}; give the right one with -f)")


# The anchor: the whole model run locally (CPU or GPU), the reference the split's detections are compared
# with; the one whole-model implementation (common/core/whole_model.py), the same `detect` runs.
Anchor = WholeModel
