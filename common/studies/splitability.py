"""Which models can be split, and is the split right? A survey table over many models.

For each model: its task, whether a split is possible at all (an interior rank whose two parts
onnxruntime loads), whether it is *verified with inference* (at sampled ranks Part II(Part I(x)) equals
the whole model on a real photo, bit for bit, via the split engine's `verify_split`), whether some cut
is multi-branch, and the largest number of crossing tensors over the interior ranks (and the first
rank where it occurs).

Sampled ranks: evenly spaced live, non-constant nodes plus the rank with the most branches, because a
multi-tensor cut is where a split goes wrong if anything does.
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from splitinfer.common.core.errors import UserError
from splitinfer.common.core.models import find_model

COLUMNS = ("model", "task", "nodes", "split_possible", "verified", "multi_branch", "max_branches",
           "max_branches_rank", "max_branches_node", "ranks_checked", "ranks_ok", "seconds", "note")


@dataclass
class SplitabilityRow:
    model: str
    task: str
    nodes: int
    split_possible: bool
    verified: bool
    multi_branch: bool
    max_branches: int
    max_branches_rank: int
    max_branches_node: str
    ranks_checked: list[int] = field(default_factory=list)
    ranks_ok: list[int] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""


def model_label(path: Path) -> str:
    """'nanodet' for DIR/nanodet/model.onnx (a model repository), else the file's stem."""
    path = Path(path)
    return path.parent.name if path.name == "model.onnx" else path.stem


def model_task(model: onnx.ModelProto, path=None) -> str:
    """Task from metadata (`splitinfer.task`), else 'detection' for a model of a detector family, else
    'classification' for one 2-D output (batch x classes), else 'unknown'."""
    from splitinfer.common.studies.inputs import metadata, model_family

    task = metadata(model, "splitinfer.task")
    if task:
        return task
    if model_family(model, path):
        return "detection"
    outs = model.graph.output
    if len(outs) == 1 and outs[0].type.HasField("tensor_type") and len(outs[0].type.tensor_type.shape.dim) == 2:
        return "classification"
    return "unknown"


def candidate_ranks(graph, branches: list[int]) -> list[int]:
    """Interior ranks worth cutting: before a live, non-constant node, with something crossing.

    (A cut before a Constant or dead node crosses the same tensors as the next cut, so the
    maximum number of branches is always reached at one of these.)
    """
    return [r for r in range(1, graph.num_nodes)
            if graph.live[r] and r not in graph.const_nodes and branches[r] > 0]


def widest_rank(candidates: list[int], branches: list[int]) -> int | None:
    """The first candidate rank with the most crossing tensors."""
    return max(candidates, key=lambda r: (branches[r], -r)) if candidates else None


def sample_ranks(graph, branches: list[int], samples: int) -> list[int]:
    """Interior ranks to verify: `samples` evenly spaced candidate ranks + the widest cut."""
    candidates = candidate_ranks(graph, branches)
    if not candidates:
        return []
    picks = set()
    if samples > 0:
        idx = np.linspace(0, len(candidates) - 1, samples + 2)[1:-1] if len(candidates) > samples else \
            np.arange(len(candidates))
        picks.update(candidates[int(round(i))] for i in idx)
    picks.add(widest_rank(candidates, branches))
    return sorted(picks)


def assess(path, samples: int = 4, image=None, progress: bool = False) -> SplitabilityRow:
    """Survey one model file (see the module docstring)."""
    from splitinfer.common.studies.feeds import image_feeds, load_image
    from splitinfer.common.split.graph import SplitGraph, reference_outputs, verify_split
    from splitinfer.common.core.onnx_io import load_model

    t0 = time.perf_counter()
    path = Path(path)
    model = load_model(path)
    label, task = model_label(path), model_task(model, path)
    graph = SplitGraph(model)
    branches = [len(s) for s in graph.all_crossing_sets()]
    top = widest_rank(candidate_ranks(graph, branches), branches)
    most = branches[top] if top is not None else 0
    row = SplitabilityRow(label, task, graph.num_nodes, False, False, most > 1, most,
                          top if top is not None else -1, graph.node_names[top] if top is not None else "")
    ranks = sample_ranks(graph, branches, samples)
    row.ranks_checked = ranks
    if not ranks:
        row.note = "no interior split point with a live node on each side"
        row.seconds = round(time.perf_counter() - t0, 2)
        return row
    img, _ = load_image(image)
    feeds, _ = image_feeds(model, img, None, path)
    try:
        reference = reference_outputs(model, feeds)  # the whole model once, compared with every sampled split
    except UserError as exc:
        row.note = f"the whole model does not run: {exc}"
        row.seconds = round(time.perf_counter() - t0, 2)
        return row
    notes, loaded = [], 0
    iterator = ranks
    if progress:
        from splitinfer.common.core.progress import bar as tqdm

        iterator = tqdm(ranks, desc=f"verify {label}", unit="rank", leave=False)
    for r in iterator:
        try:
            plan = graph.plan(rank=r)
            report = verify_split(model, plan, feeds=feeds, graph=graph, reference=reference)
        except UserError as exc:
            notes.append(f"rank {r}: {exc}")
            continue
        loaded += 1
        if report.ok:
            row.ranks_ok.append(r)
        else:
            bad = [v.name for v in report.rows if not v.equal]
            notes.append(f"rank {r}: outputs differ ({', '.join(bad)})")
    row.split_possible = loaded > 0
    row.verified = len(row.ranks_ok) == len(ranks)
    row.note = "; ".join(notes)
    row.seconds = round(time.perf_counter() - t0, 2)
    return row


def find_models(paths) -> list[Path]:
    """ONNX files from files, bundled model ids and folders (folders searched recursively, sorted)."""
    found = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            hits = sorted(q for q in p.rglob("*.onnx") if q.is_file() and not q.name.startswith("."))
            if not hits:
                raise UserError(f"no .onnx model found in folder {p}")
            found.extend(hits)
        else:
            found.append(find_model(p))  # a file, or a bundled model id
    return list(dict.fromkeys(found))


def _yes(b: bool) -> str:
    return "yes" if b else "no"


def to_markdown(rows: list[SplitabilityRow]) -> str:
    head = ("| model | task | nodes | split possible | verified with inference | multi-branch | max branches "
            "| at rank (node) |\n|---|---|---:|---|---|---|---:|---|\n")
    lines = []
    for r in rows:
        verified = f"{_yes(r.verified)} ({len(r.ranks_ok)}/{len(r.ranks_checked)} ranks: " \
                   f"{', '.join(map(str, r.ranks_checked))})" if r.ranks_checked else "no (nothing to check)"
        lines.append(f"| {r.model} | {r.task} | {r.nodes} | {_yes(r.split_possible)} | {verified} | "
                     f"{_yes(r.multi_branch)} | {r.max_branches} | {r.max_branches_rank} "
                     f"(`{r.max_branches_node}`) |")
    notes = [f"- {r.model}: {r.note}" for r in rows if r.note]
    return head + "\n".join(lines) + "\n" + ("\nNotes:\n" + "\n".join(notes) + "\n" if notes else "")


def write_csv(rows: list[SplitabilityRow], path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in rows:
            d = asdict(r)
            d["ranks_checked"] = " ".join(map(str, r.ranks_checked))
            d["ranks_ok"] = " ".join(map(str, r.ranks_ok))
            for k in ("split_possible", "verified", "multi_branch"):
                d[k] = _yes(d[k])
            w.writerow([d[c] for c in COLUMNS])
    return path
