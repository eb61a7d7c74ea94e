"""Tests for mutants that survived issue 23's spot-check in the evaluation code: the relative-ground-truth
rule has one copy (the sweep's anchor count follows it), the sweep/map/visualize commands default to the
anchor threshold 0.5, and per-class AP75 is read at IoU 0.75."""

from __future__ import annotations

import pytest

from splitinfer.common.core.detections import Detection
from splitinfer.common.eval.evaluation import evaluate
from splitinfer.common.studies.sweep.evaluate import anchor_metrics


def test_the_sweeps_anchor_count_uses_the_inclusive_rule():
    anchor = {"a": [Detection("dog", 0, 0, 50, 50, 0.5), Detection("cat", 60, 60, 90, 90, 0.4999)],
              "b": [Detection("dog", 0, 0, 10, 10, 0.7)]}
    d = anchor_metrics(anchor, None, 0.5)
    assert d["predictions"] == 3 and d["relative_gt_boxes"] == 2  # the box scored exactly 0.5 counts
    assert anchor_metrics(anchor, None, 0.4999)["relative_gt_boxes"] == 3


@pytest.mark.parametrize("argv", [["sweep", "nanodet"], ["map", "preds", "--anchor", "a"],
                                  ["visualize", "photos", "preds"]])
def test_commands_default_to_the_anchor_threshold_one_half(argv):
    from splitinfer.common.cli import build_parser

    args = build_parser().parse_args(argv)
    assert args.anchor_threshold == 0.5


def _shifted(d: float, score: float) -> tuple[Detection, Detection]:
    """A ground-truth box 100 x 100 and a prediction shifted by d: IoU (100 - d) / (100 + d)."""
    return Detection("dog", 0, 0, 100, 100, 1.0), Detection("dog", d, 0, 100 + d, 100, score)


def test_per_class_ap75_is_read_at_iou_075():
    """IoUs 1.0, 0.77 and 0.72: AP at IoU .70 is 1, at .75 two thirds of the boxes match, at .80 one third;
    with one class the per-class AP75 is the AP75 COCOeval reports."""
    pairs = {"a": _shifted(0, 0.9), "b": _shifted(13, 0.8), "c": _shifted(16, 0.7)}
    r = evaluate({k: [p] for k, (_, p) in pairs.items()}, {k: [g] for k, (g, _) in pairs.items()})
    assert r.ap50 == pytest.approx(1.0) and r.ap75 < 0.9 and r.ap75 > 0.5
    assert r.per_class_ap75["dog"] == pytest.approx(r.ap75)
    assert r.per_class_ap50["dog"] == pytest.approx(r.ap50)
    assert r.per_class["dog"] == pytest.approx(r.ap)
