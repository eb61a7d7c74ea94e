"""`map` and `detect` paper cuts: the whole COCO summary printed (APs/APm/APl, AR), per-class AP75 in the CSV,
COCO results JSON written (by `detect` and `map`) and read back with the same numbers, a hint when the
predictions were cut at a display threshold, and partial ground truth scored on the images it covers.
Real bundled model and photos; the ground truth is the bundled terrain2_coco.json plus the model's own
confident detections on three photos."""

from __future__ import annotations

import csv
import json
import math
import shutil

import pytest

from splitinfer.common.assets import IMAGES_DIR
from splitinfer.common.cli import main
from splitinfer.common.core.detections import read_predictions, write_predictions

pytestmark = pytest.mark.timeout(300)
PHOTOS = ("dog.jpg", "kite.jpg", "horses.jpg")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("map_extras")
    (d / "images").mkdir()
    for n in PHOTOS:
        shutil.copy(IMAGES_DIR / n, d / "images" / n)
    assert main(["detect", str(d / "images"), "-o", str(d / "low"), "--threshold", "0.05", "--no-overlay",
                 "--coco-results", str(d / "low.json")]) == 0
    assert main(["detect", str(d / "images"), "-o", str(d / "default"), "--no-overlay"]) == 0
    for p in (d / "low").glob("*.txt"):
        write_predictions(d / "labels" / p.name, [x for x in read_predictions(p) if x.score >= 0.5], with_score=False)
    return d


def test_map_prints_the_whole_coco_summary_and_per_class_ap75(data, tmp_path, capsys):
    out_csv = tmp_path / "m.csv"
    assert main(["map", str(data / "low"), "--gt", str(data / "labels"), "--csv", str(out_csv)]) == 0
    out = capsys.readouterr().out
    for key in ("APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"):
        assert f"{key} " in out, (key, out)
    assert "AP75" in out.splitlines()[2] or any("AP75" in ln and "class" in ln for ln in out.splitlines())
    rows = list(csv.DictReader(open(out_csv)))
    per_class = [r for r in rows if r["class"] != "all"]
    assert per_class and all(r["AP75"] != "" for r in per_class)
    assert all(0.0 <= float(r["AP75"]) <= 1.0 for r in per_class)


def test_coco_results_json_round_trip_gives_the_same_numbers(data, tmp_path, capsys):
    coco_gt = IMAGES_DIR / "terrain2_coco.json"
    shutil.copy(IMAGES_DIR / "terrain2.png", tmp_path / "terrain2.png")
    assert main(["detect", str(tmp_path / "terrain2.png"), "-o", str(tmp_path / "t"), "--threshold", "0.05",
                 "--no-overlay", "--coco-results", str(tmp_path / "det.json"), "--gt", str(coco_gt)]) == 0
    written = json.loads((tmp_path / "det.json").read_text())
    assert written and {"image_id", "category_id", "bbox", "score"} <= set(written[0])
    assert {r["image_id"] for r in written} == {1}  # terrain2.png's id in the ground truth
    assert main(["map", str(tmp_path / "t"), "--gt", str(coco_gt), "--csv", str(tmp_path / "a.csv"),
                 "--coco-results", str(tmp_path / "map.json")]) == 0
    assert main(["map", str(tmp_path / "det.json"), "--gt", str(coco_gt), "--csv", str(tmp_path / "b.csv")]) == 0
    assert main(["map", str(tmp_path / "map.json"), "--gt", str(coco_gt), "--csv", str(tmp_path / "c.csv")]) == 0
    capsys.readouterr()
    a, b, c = (next(r for r in csv.DictReader(open(tmp_path / f)) if r["class"] == "all")
               for f in ("a.csv", "b.csv", "c.csv"))
    assert math.isclose(float(a["AP"]), float(b["AP"]), abs_tol=1e-9)
    assert math.isclose(float(a["AP"]), float(c["AP"]), abs_tol=1e-9)
    assert float(a["AP"]) > 0


def test_detect_without_gt_numbers_images_and_names_them(data):
    written = json.loads((data / "low.json").read_text())
    assert {r["file_name"] for r in written} == {p.split(".")[0] for p in PHOTOS}
    assert len({r["image_id"] for r in written}) == len(PHOTOS)


def test_threshold_hint_when_predictions_were_cut(data, capsys):
    assert main(["map", str(data / "default"), "--gt", str(data / "labels")]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "hint" in text and "--threshold 0.05" in text, text
    assert main(["map", str(data / "low"), "--gt", str(data / "labels")]) == 0
    out = capsys.readouterr()
    assert "hint" not in out.out + out.err


def test_partial_ground_truth_scores_the_covered_images(data, tmp_path, capsys):
    part = tmp_path / "labels_part"
    part.mkdir()
    shutil.copy(data / "labels" / "dog.txt", part / "dog.txt")
    assert main(["map", str(data / "low"), "--gt", str(part), "--csv", str(tmp_path / "p.csv")]) == 0
    out = capsys.readouterr()
    assert "no ground truth" in (out.out + out.err) and "not scored" in (out.out + out.err)
    row = next(r for r in csv.DictReader(open(tmp_path / "p.csv")) if r["class"] == "all")
    assert main(["map", str(data / "low" / "dog.txt"), "--gt", str(part / "dog.txt"), "--csv",
                 str(tmp_path / "d.csv")]) == 0
    one = next(r for r in csv.DictReader(open(tmp_path / "d.csv")) if r["class"] == "all")
    assert math.isclose(float(row["AP"]), float(one["AP"]), abs_tol=1e-9)
