"""The UE's results CSV: the field's columns (infer_onnx_multi.py) followed by ours, one row per source.

Why these cells: existing spreadsheets read the field's columns, so their names and cell layouts stay:
`avg;std` for times (ms), with a `_steady_state` twin excluding the first inference (onnxruntime's lazy
set-up makes it slow); `min,avg,max` for encoding/decoding times (ms) and data sizes (bytes):
`predictions_size` is the size in bytes of each inference's post-processed predictions (as written to
its predictions file: `label x1 y1 x2 y2 score` lines), as the TR means. A time measured on a
processing unit that did not run is left empty. Our columns add what a two-process system measures:
serialization, transfer, end-to-end latency, crossing tensors, providers, agreement with the anchor and
with the `-ref_split` reference (agreement.py decides: yes = bit for bit; rounding = same detections
within float32 rounding; close = the same objects; no; `Anchor_agreement` = boxes matched / boxes).
A row aggregates every inference of one source (image, video, or image repeated by `-loop`);
`predictions` holds the last inference's detections. `Frames_failed` counts the frames of the source
that were reported failed (their times are left out of every statistic).

`read_results(path)` reads such a file back as typed `ResultRow`s (the reader beside the writer, so callers
such as netexp never spell column names or parse cells).

Beside it, `FrameLog` writes one line per frame as it ends (`<results>_frames.csv`): source, index, frame
id, status (ok / failed), how many times it was sent, the error. Written and flushed frame by frame, so a
crash or Ctrl-C keeps every frame that ended, and a fault test can check that each frame ended exactly once.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from splitinfer.common.core.detections import format_predictions
from splitinfer.common.core.errors import UserError

FIELD_COLUMNS = [
    "Source", "Nodes", "Inference_loop",
    "UE_inference_time_CPU", "UE_inference_time_CPU_steady_state",
    "UE_inference_time_GPU", "UE_inference_time_GPU_steady_state",
    "Server_inference_time_CPU", "Server_inference_time_CPU_steady_state",
    "Server_inference_time_GPU", "Server_inference_time_GPU_steady_state",
    "Total_inference_time_steady_state",
    "Encoding_time", "Decoding_time", "nb_inference",
    "intermediate_data_size", "encoded_intermediate_data_size", "encoding_algo",
    "predictions_size", "predictions",
]
OUR_COLUMNS = [
    "Model", "Split_rank", "Crossing_tensors", "Messages_per_frame",
    "Serialization_time", "Deserialization_time", "Transfer_time",
    "Consolidation_time", "Postprocessing_time",
    "End_to_end_latency", "End_to_end_latency_steady_state",
    "UE_provider", "Server_provider",
    "Anchor_inference_time_CPU", "Anchor_inference_time_GPU", "Equal_to_anchor", "Anchor_agreement",
    "Ref_split", "Equal_to_ref_split", "Frames_failed",
]
COLUMNS = FIELD_COLUMNS + OUR_COLUMNS


def _ms(values) -> np.ndarray:
    return np.asarray(list(values), dtype=np.float64) * 1e3


def avg_std(values_s) -> str:
    v = _ms(values_s)
    return "" if v.size == 0 else f"{v.mean():.3f};{v.std():.3f}"


def steady(values_s) -> list:
    """Every inference but the first (when there is more than one)."""
    values_s = list(values_s)
    return values_s[1:] if len(values_s) > 1 else values_s


def min_avg_max(values, scale: float = 1.0, fmt: str = ".3f") -> str:
    v = np.asarray(list(values), dtype=np.float64) * scale
    return "" if v.size == 0 else f"{v.min():{fmt}},{v.mean():{fmt}},{v.max():{fmt}}"


def predictions_cell(dets, label_of=None) -> str:
    """Detections as `label x1 y1 x2 y2 score` entries joined by ';' (one CSV cell)."""
    if label_of is not None:
        dets = [type(d)(label_of(d.label), d.x1, d.y1, d.x2, d.y2, d.score) for d in dets]
    return format_predictions(dets).strip().replace("\n", ";")


def predictions_bytes(dets) -> int:
    """Size in bytes of post-processed predictions, as their predictions file holds them."""
    return len(format_predictions(dets).encode())


def anchor_only_row(source: str, runs: list, *, loops: int, model: str, devices, label_of=None) -> dict:
    """One CSV row of the `-no_split` mode: (device, seconds, detections) for each whole-model run."""
    first = next(iter(devices))
    mine = [(t, dets) for d, t, dets in runs if d == first]
    row = {c: "" for c in COLUMNS}
    row.update({"Source": source, "Nodes": "whole model", "Inference_loop": loops, "nb_inference": len(mine),
                "encoding_algo": "", "Model": model,
                "predictions_size": min_avg_max((predictions_bytes(dets) for _, dets in mine), fmt=".0f"),
                "predictions": predictions_cell(mine[-1][1] if mine else [], label_of)})
    for dev in devices:
        ts = [t for d, t, _ in runs if d == dev]
        row[f"UE_inference_time_{dev.upper()}"] = avg_std(ts)
        row[f"UE_inference_time_{dev.upper()}_steady_state"] = avg_std(steady(ts))
    return row


def summarize(records, *, source: str, nodes: str, loops: int, encoding_algo: str, ue_provider: str,
              model: str, rank: int, label_of=None, ref_split: str | None = None,
              ref_agreements: list | None = None) -> dict:
    """One CSV row from the FrameRecords of one source (`ref_agreements`: agreement.Agreement of each
    answered frame with the `-ref_split` reference named `ref_split`)."""
    if not records:
        raise ValueError("no records to summarize")
    failed = [r for r in records if getattr(r, "status", "ok") != "ok"]
    records = [r for r in records if getattr(r, "status", "ok") == "ok"]
    if not records:  # every frame of the source failed: what is known, and the count
        row = {c: "" for c in COLUMNS}
        row.update({"Source": source, "Nodes": nodes, "Inference_loop": loops, "nb_inference": 0,
                    "encoding_algo": encoding_algo, "Model": model, "Split_rank": rank, "UE_provider": ue_provider,
                    "Frames_failed": len(failed), "Ref_split": ref_split or ""})
        return row
    part1 = [r.part1_s for r in records]
    part2 = [r.server.get("part2", 0.0) for r in records]
    server_pu = "GPU" if records[-1].server_provider == "cuda" else "CPU"
    ue_pu = "GPU" if ue_provider == "cuda" else "CPU"
    row = {c: "" for c in COLUMNS}
    last = records[-1].detections
    row.update({
        "Source": source, "Nodes": nodes, "Inference_loop": loops,
        f"UE_inference_time_{ue_pu}": avg_std(part1),
        f"UE_inference_time_{ue_pu}_steady_state": avg_std(steady(part1)),
        "Total_inference_time_steady_state": avg_std(steady([a + b for a, b in zip(part1, part2)])),
        "Encoding_time": min_avg_max((r.encode_s for r in records), 1e3),
        "Decoding_time": min_avg_max((r.server.get("decode", 0.0) for r in records), 1e3),
        "nb_inference": len(records),
        "intermediate_data_size": min_avg_max((r.raw_bytes for r in records), fmt=".0f"),
        "encoded_intermediate_data_size": min_avg_max((r.encoded_bytes for r in records), fmt=".0f"),
        "encoding_algo": encoding_algo,
        "predictions_size": min_avg_max((predictions_bytes(r.detections) for r in records), fmt=".0f"),
        "predictions": predictions_cell(last, label_of),
        "Model": model, "Split_rank": rank,
        "Crossing_tensors": records[-1].tensors,
        "Messages_per_frame": min_avg_max((r.messages for r in records), fmt=".0f"),
        "Serialization_time": min_avg_max((r.serialize_s for r in records), 1e3),
        "Deserialization_time": min_avg_max((r.server.get("deserialize", 0.0) for r in records), 1e3),
        "Transfer_time": min_avg_max((r.transfer_s for r in records), 1e3),
        "Consolidation_time": min_avg_max((r.server.get("consolidate", 0.0) for r in records), 1e3),
        "Postprocessing_time": min_avg_max((r.server.get("postprocess", 0.0) for r in records), 1e3),
        "End_to_end_latency": avg_std(r.end_to_end_s for r in records),
        "End_to_end_latency_steady_state": avg_std(steady(r.end_to_end_s for r in records)),
        "UE_provider": ue_provider, "Server_provider": records[-1].server_provider,
        "Frames_failed": len(failed),
    })
    row[f"Server_inference_time_{server_pu}"] = avg_std(part2)
    row[f"Server_inference_time_{server_pu}_steady_state"] = avg_std(steady(part2))
    _reference_columns(row, records, ref_split, ref_agreements)
    return row


def _reference_columns(row: dict, records, ref_split: str | None, ref_agreements: list | None) -> None:
    """The anchor's times and verdict, and the `-ref_split` verdict, into `row` (verdicts: device/reference.py)."""
    from splitinfer.device.agreement import verdict
    from splitinfer.device.reference import anchor_verdict

    for dev in ("cpu", "gpu"):
        row[f"Anchor_inference_time_{dev.upper()}"] = avg_std(r.anchor[dev][0] for r in records if dev in r.anchor)
    v = anchor_verdict(records)
    if v is not None:
        row["Equal_to_anchor"], row["Anchor_agreement"] = v.word, v.boxes
    if ref_split is not None:
        row["Ref_split"] = ref_split
        if ref_agreements:
            row["Equal_to_ref_split"] = verdict(ref_agreements).word


def write_rows(path, rows: list[dict]) -> Path:
    """Append rows to the CSV at `path` (header written when the file is new; it must match otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with path.open(newline="") as fh:
            header = next(csv.reader(fh), [])
        if header != COLUMNS:
            raise UserError(f"{path}: exists with other columns; choose another -results_filename")
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        if new:
            w.writeheader()
        for row in rows:
            w.writerow(row)
    return path


class MinAvgMax(NamedTuple):
    """A `min,avg,max` cell (ms or bytes)."""
    min: float
    avg: float
    max: float


class AvgStd(NamedTuple):
    """An `avg;std` cell (ms)."""
    avg: float
    std: float


@dataclass(frozen=True)
class ResultRow:
    """One row of the results CSV, typed; a cell left empty (not measured) reads as None."""
    source: str
    model: str
    encoding_algo: str
    split_rank: int | None
    nb_inference: int | None
    crossing_tensors: int | None
    frames_failed: int | None
    intermediate_bytes: MinAvgMax | None
    encoded_bytes: MinAvgMax | None
    encoding_ms: MinAvgMax | None
    decoding_ms: MinAvgMax | None
    transfer_ms: MinAvgMax | None
    end_to_end_ms: AvgStd | None
    equal_to_anchor: str
    predictions: str


def _cell(row: dict, column: str, parse, where: str):
    text = (row.get(column) or "").strip()
    if not text:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        raise UserError(f"{where}: column {column}: {text[:80]!r} is not a valid cell ({exc})") from None


def _triple(text: str) -> MinAvgMax:
    parts = [float(x) for x in text.split(",")]
    if len(parts) != 3:
        raise ValueError("expected min,avg,max")
    return MinAvgMax(*parts)


def _pair(text: str) -> AvgStd:
    parts = [float(x) for x in text.split(";")]
    if len(parts) != 2:
        raise ValueError("expected avg;std")
    return AvgStd(*parts)


def read_results(path) -> list[ResultRow]:
    """The rows of a results CSV written by `write_rows`, typed (UserError naming the file, row and column)."""
    path = Path(path)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != COLUMNS:
            raise UserError(f"{path}: not a results CSV of this version (its header differs)")
        rows = []
        for n, row in enumerate(reader, start=2):
            where = f"{path} line {n}"
            rows.append(ResultRow(
                source=row["Source"], model=row["Model"], encoding_algo=row["encoding_algo"],
                split_rank=_cell(row, "Split_rank", int, where), nb_inference=_cell(row, "nb_inference", int, where),
                crossing_tensors=_cell(row, "Crossing_tensors", int, where),
                frames_failed=_cell(row, "Frames_failed", int, where),
                intermediate_bytes=_cell(row, "intermediate_data_size", _triple, where),
                encoded_bytes=_cell(row, "encoded_intermediate_data_size", _triple, where),
                encoding_ms=_cell(row, "Encoding_time", _triple, where),
                decoding_ms=_cell(row, "Decoding_time", _triple, where),
                transfer_ms=_cell(row, "Transfer_time", _triple, where),
                end_to_end_ms=_cell(row, "End_to_end_latency", _pair, where),
                equal_to_anchor=row["Equal_to_anchor"], predictions=row["predictions"]))
    return rows


FRAME_COLUMNS = ["Source", "Index", "Frame_id", "Status", "Attempts", "End_to_end_ms", "Ended_unix_s", "Detections",
                 "Error", "Keyframe", "Encoded_bytes"]


class FrameLog:
    """One CSV line per ended frame, flushed at once (see the module docstring)."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        if not new:
            with self.path.open(newline="") as fh:
                if next(csv.reader(fh), []) != FRAME_COLUMNS:
                    raise UserError(f"{self.path}: exists with other columns; choose another -results_filename")
        self._fh = self.path.open("a", newline="")
        self._w = csv.DictWriter(self._fh, fieldnames=FRAME_COLUMNS)
        if new:
            self._w.writeheader()
            self._fh.flush()
        self.ok = self.failed = 0

    def write(self, rec) -> None:
        ok = getattr(rec, "status", "ok") == "ok"
        self._w.writerow({"Source": rec.source, "Index": rec.index, "Frame_id": rec.frame_id,
                          "Status": "ok" if ok else "failed", "Attempts": rec.attempts,
                          "End_to_end_ms": f"{rec.end_to_end_s * 1e3:.3f}", "Ended_unix_s": f"{time.time():.3f}",
                          "Detections": len(rec.detections) if ok else "", "Error": rec.error[:500],
                          "Keyframe": ("yes" if rec.keyframe else "no") if rec.attempts else "",
                          "Encoded_bytes": rec.encoded_bytes if rec.attempts else ""})
        self._fh.flush()
        if ok:
            self.ok += 1
        else:
            self.failed += 1

    def close(self) -> None:
        self._fh.close()


def frames_path(results_path) -> Path:
    """Where the per-frame log of a results CSV goes: `<stem>_frames.csv` beside it."""
    p = Path(results_path)
    return p.with_name(f"{p.stem}_frames.csv")
