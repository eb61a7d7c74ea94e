"""Detections helpers: per-class NMS must equal the classic class-offset formulation."""

import numpy as np
import pytest

from splitinfer.common.core.detections import Detection, batched_nms, nms, parse_predictions


def _offset_reference(boxes, scores, classes, thr):
    """The textbook batched NMS: shift each class far apart, then one NMS over everything."""
    boxes = np.asarray(boxes, dtype=np.float64)
    offset = (boxes.max() + 1.0) * np.asarray(classes, dtype=np.float64)[:, None]
    return nms(boxes + offset, scores, thr)


@pytest.mark.parametrize("seed", range(40))
def test_batched_nms_equals_offset_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    xy = rng.random((n, 2)) * 300
    boxes = np.hstack([xy, xy + rng.random((n, 2)) * 80 + 1])
    scores = np.round(rng.random(n), 2)  # many ties: order must still match
    classes = rng.integers(0, 6, n)
    assert np.array_equal(batched_nms(boxes, scores, classes, 0.5),
                          _offset_reference(boxes, scores, classes, 0.5))


def test_nms_hand_computed():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], dtype=float)
    # IoU(0,1) = 90 / 110 = 0.818: suppressed at 0.5, kept at 0.9.
    assert nms(boxes, [0.9, 0.8, 0.7], 0.5).tolist() == [0, 2]
    assert nms(boxes, [0.9, 0.8, 0.7], 0.9).tolist() == [0, 1, 2]
    # Different classes never suppress each other.
    assert batched_nms(boxes, [0.9, 0.8, 0.7], [0, 1, 0], 0.5).tolist() == [0, 1, 2]


def test_predictions_round_trip_keeps_spaces_in_labels():
    dets = [Detection("traffic light", 1, 2, 3, 4, 0.5)]
    text = dets[0].line() + "\n"
    assert text.startswith("traffic_light ")
    assert parse_predictions(text) == dets
