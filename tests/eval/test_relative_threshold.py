"""Relative mAP's anchor threshold: inclusive (>=) and 0.5 by default, in every entry point.

The anchor's detections scored at or above the threshold are the truth. These tests fail if `>=`
became `>` (a box scored exactly 0.5 would drop out) or if the default moved either way.
"""

import math

import pytest

from splitinfer.common.core.detections import Detection, write_predictions
from splitinfer.common.eval.evaluation import (DEFAULT_ANCHOR_THRESHOLD, evaluate_folders, evaluate_relative,
                                               relative_ground_truth)

AT = Detection("dog", 0, 0, 50, 50, 0.5)          # exactly at the default threshold: truth
BELOW = Detection("cat", 60, 60, 90, 90, 0.4999)  # just below it: not truth
ANCHOR = {"a": [AT, BELOW]}
FOUND = {"a": [Detection("dog", 0, 0, 50, 50, 0.9)]}  # a split that finds the dog only


def test_default_is_one_half():
    assert DEFAULT_ANCHOR_THRESHOLD == 0.5


def test_a_box_at_the_threshold_is_truth_and_one_below_is_not():
    assert relative_ground_truth(ANCHOR) == {"a": [Detection("dog", 0, 0, 50, 50, 1.0)]}
    assert relative_ground_truth(ANCHOR, 0.4999) == {"a": [Detection("dog", 0, 0, 50, 50, 1.0),
                                                           Detection("cat", 60, 60, 90, 90, 1.0)]}
    assert relative_ground_truth(ANCHOR, 0.50001) == {"a": []}


def test_relative_map_with_the_default_threshold():
    # dog is the only truth: found exactly -> AP 1. With '>' there is no truth (AP undefined, NaN);
    # with a lower default the cat becomes truth and is missed (AP 0.5).
    r = evaluate_relative(FOUND, ANCHOR)
    assert not math.isnan(r.ap) and r.ap == pytest.approx(1.0)
    assert r.per_class_gt == {"dog": 1}


def test_folders_and_map_command_use_the_same_rule(tmp_path, capsys):
    from splitinfer.common.cli import main

    anchor_dir, split_dir = tmp_path / "anchor", tmp_path / "split"
    anchor_dir.mkdir()
    split_dir.mkdir()
    write_predictions(anchor_dir / "a.txt", ANCHOR["a"])
    write_predictions(split_dir / "a.txt", FOUND["a"])
    r = evaluate_folders(split_dir, anchor_dir=anchor_dir)
    assert r.ap == pytest.approx(1.0) and r.num_gt == 1
    assert main(["map", str(split_dir), "--anchor", str(anchor_dir)]) == 0
    out = capsys.readouterr().out
    assert "relative to anchor: AP 100.0" in out and "gt boxes 1," in out
