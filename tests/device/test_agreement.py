"""agreement.py: the one place that decides whether split detections agree with a reference."""

from splitinfer.common.core.detections import Detection
from splitinfer.device.agreement import ROUNDING_BOX_PX, ROUNDING_SCORE, compare_detections, verdict

DOG = Detection("dog", 10.0, 20.0, 110.0, 220.0, 0.9)
CAT = Detection("cat", 200.0, 20.0, 300.0, 120.0, 0.8)


def shifted(d: Detection, px: float = 0.0, score: float = 0.0) -> Detection:
    return Detection(d.label, d.x1 + px, d.y1, d.x2 + px, d.y2, d.score + score)


def test_identical_detections_are_equal():
    a = compare_detections([DOG, CAT], [DOG, CAT])
    assert a.equal and a.rounding and a.close
    assert (a.matched, a.anchor_count, a.split_count) == (2, 2, 2)
    assert verdict([a]).word == "yes" and verdict([a]).describe() == "yes"


def test_float_rounding_is_not_equal_but_rounding():
    a = compare_detections([DOG, CAT], [shifted(DOG, ROUNDING_BOX_PX / 2), shifted(CAT, score=ROUNDING_SCORE / 2)])
    assert not a.equal and a.rounding and a.close
    v = verdict([a])
    assert v.word == "rounding" and v.describe() == "yes, to float rounding"


def test_beyond_rounding_the_same_objects_are_close():
    a = compare_detections([DOG, CAT], [shifted(DOG, 3.0), shifted(CAT, score=-0.1)])
    assert not a.rounding and a.close and a.max_score_diff > 0.09 and 0.9 < a.min_iou < 1.0
    v = verdict([a])
    assert v.word == "close" and v.describe() == "close (2/2 boxes match)"


def test_a_missed_or_relabelled_object_is_no():
    missed = compare_detections([DOG, CAT], [DOG])
    relabelled = compare_detections([DOG], [Detection("cat", *DOG.box, DOG.score)])
    assert missed.matched == 1 and not missed.close
    assert relabelled.matched == 0 and not relabelled.close
    v = verdict([missed, relabelled])
    assert v.word == "no" and v.boxes == "1/3"  # per frame the larger count: 2 + 1


def test_the_weakest_frame_decides_and_empty_frames_agree():
    equal = compare_detections([DOG], [DOG])
    rounding = compare_detections([DOG], [shifted(DOG, ROUNDING_BOX_PX / 2)])
    assert verdict([equal, rounding]).word == "rounding"
    assert verdict([equal, compare_detections([DOG], [])]).word == "no"
    assert compare_detections([], []).equal and verdict([]).word == "yes"
