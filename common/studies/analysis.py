"""What crosses the network at each split point, how big it is, and what sending it would cost.

For every split rank of a model (rank r: nodes [0, r) on the UE, the rest on the network; rank 0 is the
whole-model anchor where the raw input is sent) this module reports the crossing tensors (branches), their
total size from the model alone (*static*), their size measured on a real image (*dynamic*), whether
the two agree, and the transfer time at given bandwidths.

The analysis is split by job: input sizes (`inputs.py`), static types (`static_types.py`: why a pass of
our own), feeds from a photo (`feeds.py`), measured sizes (`measure.py`: why one run for all ranks), and
the CSV/JSON/plots/summary written from an `Analysis` (`analysis_report.py`). This module joins them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from splitinfer.common.core.errors import UserError
from splitinfer.common.core.rates import parse_rate, rate_label
from splitinfer.common.studies.feeds import image_feeds, load_image
from splitinfer.common.studies.inputs import (feeds_size, graph_inputs, input_8bit_bytes, nominal_input_size,
                                              parse_input_size, resolve_input_shapes)
from splitinfer.common.studies.measure import DEFAULT_MAX_EXPOSED_BYTES, measure_tensors
from splitinfer.common.studies.static_types import dtype_name, infer_static_types, static_bytes, type_dims

DEFAULT_BANDWIDTHS = ("500M", "1G", "5G")



def transfer_seconds(nbytes: int | None, bps: float) -> float | None:
    """Time to send `nbytes` at `bps` bit/s: bytes x 8 / rate (no protocol overhead)."""
    return None if nbytes is None else nbytes * 8.0 / bps


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
    Steps: load, input shapes (and feeds), static types, measured sizes, one row per rank.
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
    inp = _inputs(model, label, model_path, size, image, feeds, measure)

    t0 = time.perf_counter()
    types = infer_static_types(model, graph.nodes, inp.shapes, progress=progress)
    sets = graph.all_crossing_sets()
    seconds["static"] = time.perf_counter() - t0

    outputs = [o for o in graph.output_names if o]
    tensors = {n: TensorSize(n, dtype_name(types.get(n)), type_dims(types.get(n)), static_bytes(types.get(n)))
               for n in dict.fromkeys([t for s in sets for t in s] + outputs)}
    runs = 0
    if measure:
        t0 = time.perf_counter()
        runs = _measure(model, tensors, inp.feeds, device, types, max_exposed_bytes, progress)
        seconds["measure"] = time.perf_counter() - t0
    rows = _rank_rows(graph, sets, tensors, outputs, measure, bws)
    return Analysis(model=label, num_nodes=graph.num_nodes, input_shapes=inp.shapes, input_size=inp.size,
                    image=inp.image, feeds_from=inp.how, bandwidths=bws, rows=rows, tensors=tensors,
                    seconds={k: round(v, 3) for k, v in seconds.items()}, measure_runs=runs,
                    input_8bit_bytes=input_8bit_bytes(inp.shapes))


@dataclass
class _Inputs:
    """What the model is analysed on: input shapes, feeds (None without measuring), size, image, how fed."""

    shapes: dict
    feeds: dict | None
    size: tuple[int, int] | None
    image: str | None
    how: str | None


def _inputs(model, label: str, model_path, size, image, feeds: dict | None, measure: bool) -> _Inputs:
    """Input shapes from `feeds`, else from feeds made of `image`, else (no measuring) from the size alone."""
    image_label, how = None, None
    if feeds is None and measure:
        img, image_label = load_image(image)
        try:
            feeds, how = image_feeds(model, img, size, model_path)
        except UserError as exc:
            raise UserError(f"{label}: {exc}") from None
    if feeds is not None:
        feeds = {k: np.asarray(v) for k, v in feeds.items()}
        shapes = {vi.name: list(np.shape(feeds[vi.name])) for vi in graph_inputs(model) if vi.name in feeds}
        return _Inputs(shapes, feeds, size or feeds_size(model, feeds), image_label, how or "given")
    try:
        shapes = resolve_input_shapes(model, size or nominal_input_size(model))
    except UserError as exc:
        raise UserError(f"{label}: {exc}") from None
    return _Inputs(shapes, None, size or nominal_input_size(model), image_label, how)


def _measure(model, tensors: dict, feeds: dict, device: str, types: dict, max_exposed_bytes: int,
             progress: bool) -> int:
    """Fill the measured shape and bytes of `tensors` from one inference (a few when chunked); the run count."""
    measured, runs = measure_tensors(model, list(tensors), feeds, device=device, types=types,
                                     max_exposed_bytes=max_exposed_bytes, progress=progress)
    for n, (shape, dtype, nbytes) in measured.items():
        t = tensors[n]
        t.measured_shape, t.measured_bytes = shape, nbytes
        t.dtype = t.dtype or dtype
    return runs


def _rank_rows(graph, sets: list, tensors: dict, outputs: list[str], measure: bool, bws: dict) -> list[RankRow]:
    """One `RankRow` per split rank: crossing sizes, agreement, Part I's finished outputs, transfer times."""
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
        final_sizes = [(tensors[o].measured_bytes if measure else tensors[o].static_bytes) for o in final1]
        sent = None if crossing_total is None or None in final_sizes else crossing_total + sum(final_sizes)
        rows.append(RankRow(
            rank=r, node=node, op_type=op, branches=len(names), tensors=list(names),
            static_bytes=None if unknown else known, static_known_bytes=known, unknown=unknown,
            measured_bytes=measured_total, agree=agree, part1_outputs=final1, sent_bytes=sent,
            redundant=0 < r < graph.num_nodes and (r in graph.const_nodes or not graph.live[r]),
            transfer_s={lab: transfer_seconds(sent, bps) for lab, bps in bws.items()}))
    return rows
