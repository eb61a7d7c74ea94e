"""COCO results JSON: written from detections and read back to the same detections (to the 4 decimals
written), through a COCO ground truth's image and category ids or through file names without one;
malformed files are one clear error."""

import json

import pytest

from splitinfer.common.core.detections import Detection
from splitinfer.common.core.errors import UserError
from splitinfer.common.eval import coco_results as cr

PREDS = {"b": [Detection("dog", 1.5, 2.25, 30.125, 40.0, 0.875), Detection("zebra crossing", 0, 0, 5, 5, 0.5)],
         "a": [Detection("traffic light", 10, 10, 20, 30, 0.25)]}
COCO = {"images": [{"id": 7, "file_name": "a.jpg"}, {"id": 9, "file_name": "sub/b.png"}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 10, "name": "traffic light"}], "annotations": []}


def _same(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert [(d.label, round(d.x1, 4), round(d.y1, 4), round(d.x2, 4), round(d.y2, 4), d.score) for d in a[k]] == \
               [(d.label, round(d.x1, 4), round(d.y1, 4), round(d.x2, 4), round(d.y2, 4), d.score) for d in b[k]]


def test_round_trip_without_ground_truth(tmp_path):
    entries = cr.to_results(PREDS)
    assert {e["image_id"] for e in entries} == {1, 2} and {e["file_name"] for e in entries} == {"a", "b"}
    assert next(e for e in entries if e["category_id"] == 18)["bbox"] == [1.5, 2.25, 28.625, 37.75]
    assert next(e for e in entries if "category_name" in e)["category_id"] >= 1000
    path = cr.write_results(tmp_path / "r.json", entries)
    _same(cr.to_predictions(cr.load_results(path)), PREDS)


def test_round_trip_through_a_coco_ground_truth():
    preds = {k: [d for d in v if d.label != "zebra crossing"] for k, v in PREDS.items()}
    entries = cr.to_results(preds, COCO, threshold=0.3)
    assert [(e["image_id"], e["category_id"]) for e in entries] == [(9, 18)]  # 'a' scored 0.25 < 0.3
    assert "file_name" not in entries[0]
    _same(cr.to_predictions(entries, COCO), {"b": preds["b"]})


def test_unknown_image_and_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="no image named 'c'"):
        cr.to_results({"c": []}, COCO)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3], "score": 1}]))
    with pytest.raises(UserError, match="entry #0"):
        cr.load_results(bad)
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(COCO))
    with pytest.raises(UserError, match="ground truth"):
        cr.load_results(gt)
    with pytest.raises(UserError, match="image_id 3"):
        cr.to_predictions([{"image_id": 3, "category_id": 18, "bbox": [0, 0, 1, 1], "score": 1}], COCO)
