"""Detections and the predictions-file layout shared by every tool.

A detection is `label x1 y1 x2 y2 score` in pixels of the original image. Files hold one
detection per line, labels with spaces written with '_' (so fields split on whitespace);
ground-truth files use the same layout without the score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.common.core.labels import canonical_label, file_label


@dataclass(frozen=True)
class Detection:
    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    score: float = 1.0

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    def line(self, with_score: bool = True) -> str:
        s = f"{file_label(self.label)} {self.x1:.2f} {self.y1:.2f} {self.x2:.2f} {self.y2:.2f}"
        return f"{s} {self.score:.5f}" if with_score else s


def format_predictions(dets: list[Detection], with_score: bool = True) -> str:
    return "".join(d.line(with_score) + "\n" for d in dets)


def write_predictions(path: str | Path, dets: list[Detection], with_score: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_predictions(dets, with_score))
    return path


def parse_predictions(text: str, source: str = "<text>", with_score: bool | None = None) -> list[Detection]:
    """Parse `label x1 y1 x2 y2 [score]` lines; `with_score=None` accepts both (missing score = 1)."""
    dets = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        n = len(parts)
        expected = {True: (6,), False: (5,), None: (5, 6)}[with_score]
        if n not in expected:
            want = " or ".join(str(e) for e in expected)
            raise UserError(f"{source}:{lineno}: expected {want} fields 'label x1 y1 x2 y2 [score]', got {n}")
        try:
            nums = [float(v) for v in parts[1:]]
        except ValueError:
            raise UserError(f"{source}:{lineno}: non-numeric coordinate or score in {line!r}") from None
        score = nums[4] if n == 6 else 1.0
        dets.append(Detection(canonical_label(parts[0]), *nums[:4], score))
    return dets


def read_predictions(path: str | Path, with_score: bool | None = None) -> list[Detection]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"predictions file not found: {path}")
    return parse_predictions(path.read_text(), str(path), with_score)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between boxes a [N,4] and b [M,4] in x1y1x2y2."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _xywh(boxes: np.ndarray) -> np.ndarray:
    """x1y1x2y2 -> x, y, w, h as OpenCV's NMS takes them (negative extents count as empty boxes)."""
    return np.column_stack([boxes[:, :2], np.clip(boxes[:, 2:] - boxes[:, :2], 0, None)])


def _by_score(kept: np.ndarray, scores: np.ndarray) -> np.ndarray:
    kept = np.asarray(kept, dtype=np.int64).reshape(-1)
    return kept[np.lexsort((kept, -scores[kept]))]  # by descending score, ties by index


def _opencv_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray | None, iou_threshold: float) -> np.ndarray:
    """OpenCV's greedy NMS on the boxes with an area; empty boxes (IoU 0 with anything) are all kept, as IoU
    says (OpenCV would count two empty boxes as overlapping fully)."""
    import cv2

    xywh = _xywh(boxes)
    solid = np.flatnonzero((xywh[:, 2] > 0) & (xywh[:, 3] > 0))
    empty = np.setdiff1d(np.arange(len(boxes)), solid)
    kept = np.zeros(0, dtype=np.int64)
    if solid.size:
        # OpenCV sees ranks, not scores: distinct, positive (its score threshold must be >= 0 and drops
        # scores at it), in the order of descending score with ties by index, the greedy order itself.
        order = np.lexsort((solid, -scores[solid]))
        rank = np.empty(solid.size, dtype=np.float32)
        rank[order] = np.arange(solid.size, 0, -1, dtype=np.float32)
        thr = float(iou_threshold)
        if classes is None:
            k = cv2.dnn.NMSBoxes(xywh[solid], rank, 0.0, thr)
        else:  # one NMS per class: OpenCV's NMSBoxesBatched compares across classes too (slower past ~5,000)
            _, ids = np.unique(classes[solid], return_inverse=True)  # any labels (strings too) -> small ints
            groups = np.split(np.argsort(ids, kind="stable"), np.cumsum(np.bincount(ids))[:-1])
            k = np.concatenate([g[np.asarray(cv2.dnn.NMSBoxes(xywh[solid[g]], rank[g], 0.0, thr),
                                            dtype=np.int64).reshape(-1)] for g in groups])
        kept = solid[np.asarray(k, dtype=np.int64).reshape(-1)]
    return _by_score(np.concatenate([kept, empty]), scores)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression (OpenCV's cv2.dnn.NMSBoxes); kept indices by descending score, ties by
    index. A box is dropped when its IoU with a kept, better box is above `iou_threshold`."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if boxes.size == 0:
        return np.zeros(0, dtype=np.int64)
    return _opencv_nms(boxes, scores, None, iou_threshold)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Per-class NMS (boxes of different classes never suppress each other): one OpenCV cv2.dnn.NMSBoxes per
    class, the same kept set in the same order as the numpy greedy NMS it replaced, 6-18x faster at 100-10,000
    candidates (bench/bench_nms.py; NMSBoxesBatched, which compares across classes, falls behind past ~5,000)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    if boxes.size == 0:
        return np.zeros(0, dtype=np.int64)
    return _opencv_nms(boxes, scores, classes, iou_threshold)
