"""NMS through OpenCV (cv2.dnn.NMSBoxes / NMSBoxesBatched) keeps exactly what the hand-written numpy greedy
NMS it replaced kept, in the same order, on random boxes: many score ties, tiny and degenerate boxes,
float32 input, one or many classes."""

import numpy as np
import pytest

from splitinfer.common.core.detections import batched_nms, nms


def _old_nms(boxes, scores, thr):
    """The numpy greedy NMS splitinfer used before (kept verbatim as the reference)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        wh = np.clip(rb - lt, 0, None)
        inter = wh[:, 0] * wh[:, 1]
        union = area[i] + area[rest] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = rest[iou <= thr]
    return np.asarray(keep, dtype=np.int64)


def _old_batched(boxes, scores, classes, thr):
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    if boxes.size == 0:
        return np.zeros(0, dtype=np.int64)
    kept = np.concatenate([idx[_old_nms(boxes[idx], scores[idx], thr)]
                           for idx in (np.flatnonzero(classes == c) for c in np.unique(classes))])
    return kept[np.lexsort((kept, -scores[kept]))]


def _random(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 600))
    xy = rng.random((n, 2)) * 320
    wh = rng.random((n, 2)) * rng.choice([2.0, 40.0, 120.0])
    boxes = np.hstack([xy, xy + wh])
    boxes[rng.random(n) < 0.02, 2] -= 500  # a few degenerate (empty) boxes
    scores = np.round(rng.random(n), int(rng.integers(1, 4)))  # coarse scores: many ties
    dtype = rng.choice([np.float32, np.float64])
    return boxes.astype(dtype), scores.astype(dtype), rng.integers(0, int(rng.integers(1, 81)), n), \
        float(rng.choice([0.3, 0.45, 0.5, 0.6, 0.7]))


@pytest.mark.parametrize("seed", range(60))
def test_opencv_nms_keeps_what_the_numpy_nms_kept(seed):
    boxes, scores, classes, thr = _random(seed)
    assert np.array_equal(batched_nms(boxes, scores, classes, thr), _old_batched(boxes, scores, classes, thr))
    assert np.array_equal(nms(boxes, scores, thr), _old_nms(boxes, scores, thr))


def test_empty_and_string_classes():
    assert batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 0.5).tolist() == []
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [1, 1, 10, 10]], dtype=float)
    assert batched_nms(boxes, [0.9, 0.8, 0.7], ["dog", "cat", "dog"], 0.5).tolist() == [0, 1]
