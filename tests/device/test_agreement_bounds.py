"""agreement.py's two edges (issue 23's surviving mutants): a match needs IoU >= 0.5 (0.45 is no match,
exactly 0.5 is), and `close` needs every detection on both sides matched (an extra split detection is not
close)."""

from splitinfer.common.core.detections import Detection
from splitinfer.device.agreement import MATCH_IOU, compare_detections, verdict

A = Detection("dog", 0.0, 0.0, 100.0, 100.0, 0.9)
HALF = Detection("dog", 0.0, 0.0, 50.0, 100.0, 0.9)  # IoU with A exactly 0.5
LOW = Detection("dog", 38.0, 0.0, 138.0, 100.0, 0.9)  # IoU with A 62/138 = 0.449


def test_the_match_threshold_is_iou_one_half():
    assert MATCH_IOU == 0.5
    at = compare_detections([A], [HALF])
    assert at.matched == 1 and at.close and at.min_iou == 0.5
    below = compare_detections([A], [LOW])
    assert below.matched == 0 and not below.close
    assert verdict([below]).word == "no"


def test_an_extra_detection_of_the_split_is_not_close():
    extra = Detection("cat", 300.0, 300.0, 400.0, 400.0, 0.6)
    a = compare_detections([A], [A, extra])
    assert a.matched == 1 and a.anchor_count == 1 and a.split_count == 2
    assert not a.close and verdict([a]).word == "no" and verdict([a]).boxes == "1/2"
    missing = compare_detections([A, extra], [A])
    assert not missing.close
