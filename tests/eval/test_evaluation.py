"""mAP: equal to pycocotools on the same inputs, and hand-checked small cases."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math

import numpy as np
import pytest

from splitinfer.common.cli import main
from splitinfer.common.core.detections import Detection, write_predictions
from splitinfer.common.core.errors import UserError
from splitinfer.common.eval.evaluation import (evaluate, evaluate_coco, evaluate_folders, evaluate_relative,
                                          plot_per_class, plot_per_class_table, relative_ground_truth)

CATS = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]
NAMES = {c["id"]: c["name"] for c in CATS}


def _fixture(seed=0, n_images=6):
    """A COCO ground truth with gaps in the ids, one crowd region, and jittered/missed/false detections."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(n_images):
        img_id = 100 + 7 * i
        images.append({"id": img_id, "file_name": f"img{i:02d}.jpg", "width": 640, "height": 480})
        for _ in range(int(rng.integers(1, 6))):
            x, y = rng.uniform(0, 500, 2)
            w, h = rng.uniform(8, 140, 2)
            cat = int(rng.choice([1, 3, 18]))
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat,
                         "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                         "area": round(w * h, 2), "iscrowd": 0})
            if rng.random() < 0.85:  # found, with some localisation error
                jitter = rng.normal(0, 0.12, 4) * [w, h, w, h]
                dets.append({"image_id": img_id, "category_id": cat if rng.random() < 0.9 else 1,
                             "bbox": [round(float(v), 2) for v in np.array([x, y, w, h]) + jitter],
                             "score": round(float(rng.uniform(0.3, 1.0)), 4)})
        for _ in range(int(rng.integers(0, 3))):  # false positives
            dets.append({"image_id": img_id, "category_id": int(rng.choice([1, 3, 18])),
                         "bbox": [round(float(v), 2) for v in (*rng.uniform(0, 500, 2), *rng.uniform(10, 80, 2))],
                         "score": round(float(rng.uniform(0.05, 0.9)), 4)})
    # a crowd region on the first image: detections on it are neither TP nor FP
    anns.append({"id": len(anns) + 1, "image_id": 100, "category_id": 1, "bbox": [300, 300, 200, 150],
                 "area": 30000.0, "iscrowd": 1})
    dets.append({"image_id": 100, "category_id": 1, "bbox": [310, 310, 60, 60], "score": 0.99})
    return {"images": images, "annotations": anns, "categories": CATS}, dets


def _pycocotools(gt_dict, dets):
    """The reference, called directly: COCO JSON ground truth, loadRes, COCOeval."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = json.loads(json.dumps(gt_dict))
        gt.createIndex()
        dt = gt.loadRes(json.loads(json.dumps(dets)))
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _as_detections(coco, dets):
    stems = {img["id"]: img["file_name"].rsplit(".", 1)[0] for img in coco["images"]}
    out = {s: [] for s in stems.values()}
    for d in dets:
        x, y, w, h = d["bbox"]
        out[stems[d["image_id"]]].append(Detection(NAMES[d["category_id"]], x, y, x + w, y + h, d["score"]))
    return out


def approx(v):
    """pycocotools sums 101 precision samples: 1.0 comes back as 0.9999999999999998."""
    return pytest.approx(v, abs=1e-9)


def _same(a, b):
    return (math.isnan(a) and (b < 0 or math.isnan(b))) or a == b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_json_equals_pycocotools_exactly(tmp_path, seed, capsys):
    coco, dets = _fixture(seed)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco))
    ref = _pycocotools(coco, dets)
    ours = evaluate_coco(_as_detections(coco, dets), path)
    assert capsys.readouterr().out == ""  # pycocotools' chatter is silenced
    assert len(ours.stats) == 12
    assert all(_same(a, b) for a, b in zip(ours.stats, ref.stats)), (ours.stats, ref.stats)
    assert (ours.ap, ours.ap50, ours.ap75) == tuple(ref.stats[:3])
    assert 0.05 < ours.ap < 0.95  # a non-trivial case
    prec = ref.eval["precision"]
    for k, cat in enumerate(ref.params.catIds):
        p = prec[:, :, k, 0, -1]
        assert ours.per_class[NAMES[cat]] == pytest.approx(float(p[p > -1].mean()), abs=0)
        p50 = prec[0, :, k, 0, -1]
        assert ours.per_class_ap50[NAMES[cat]] == float(p50[p50 > -1].mean())
    # mean over classes is the overall AP
    assert np.mean(list(ours.per_class.values())) == pytest.approx(ours.ap, abs=1e-12)


@pytest.mark.parametrize("seed", [3, 4])
def test_detection_api_equals_pycocotools_on_the_same_boxes(seed):
    coco, dets = _fixture(seed)
    coco["annotations"] = [a for a in coco["annotations"] if not a["iscrowd"]]
    dets = dets[:-1]
    for a in coco["annotations"]:  # the text layout has no segmentation: area is w*h
        a["area"] = a["bbox"][2] * a["bbox"][3]
    gt = _as_detections(coco, [dict(a, score=1.0) for a in coco["annotations"]])
    ours = evaluate(_as_detections(coco, dets), gt)
    ref = _pycocotools(coco, dets)
    assert 0.05 < ours.ap < 0.95
    for a, b in zip(ours.stats, ref.stats):  # x1y1x2y2 -> xywh may differ in the last bit
        assert math.isnan(a) if b < 0 else a == pytest.approx(b, abs=1e-9)


def test_one_perfect_box_is_ap_1():
    gt = {"a": [Detection("dog", 10, 20, 110, 220)]}
    r = evaluate({"a": [Detection("dog", 10, 20, 110, 220, 0.9)]}, gt)
    assert (r.ap, r.ap50, r.ap75) == approx((1.0, 1.0, 1.0))
    assert r.per_class == approx({"dog": 1.0}) and r.per_class_gt == {"dog": 1}


@pytest.mark.parametrize("shift, ap, ap50, ap75", [
    (10, 0.7, 1.0, 1.0),  # IoU 90/110 = 0.818: matched at 0.50..0.80 (7 of 10 thresholds)
    (20, 0.4, 1.0, 0.0),  # IoU 80/120 = 0.667: matched at 0.50..0.65 (4 of 10)
    (40, 0.0, 0.0, 0.0),  # IoU 60/140 = 0.429: never matched
])
def test_shifted_box_known_iou(shift, ap, ap50, ap75):
    gt = {"a": [Detection("car", 0, 0, 100, 100)]}
    r = evaluate({"a": [Detection("car", shift, 0, 100 + shift, 100, 0.8)]}, gt)
    assert (r.ap, r.ap50, r.ap75) == approx((ap, ap50, ap75))


def test_half_recall_and_a_higher_scored_false_positive():
    gt = {"a": [Detection("cat", 0, 0, 50, 50), Detection("cat", 100, 100, 150, 150)]}
    # one of two found: precision 1 up to recall 0.5 -> 51 of the 101 recall points
    r = evaluate({"a": [Detection("cat", 0, 0, 50, 50, 0.9)]}, gt)
    assert r.ap == approx(51 / 101)
    # a false positive scored above the only true positive: precision 1/2 at recall 1
    gt1 = {"a": [Detection("cat", 0, 0, 50, 50)]}
    preds = {"a": [Detection("cat", 200, 200, 250, 250, 0.9), Detection("cat", 0, 0, 50, 50, 0.8)]}
    assert evaluate(preds, gt1).ap50 == approx(0.5)
    # the threshold drops the low-scored box: now only the false positive remains
    assert evaluate(preds, gt1, threshold=0.85).ap50 == 0.0
    # and a threshold between them removes nothing that matters the other way round
    preds2 = {"a": [Detection("cat", 200, 200, 250, 250, 0.3), Detection("cat", 0, 0, 50, 50, 0.8)]}
    assert evaluate(preds2, gt1).ap50 == approx(1.0) and evaluate(preds2, gt1, threshold=0.5).ap == approx(1.0)


def test_per_class_and_wrong_label():
    gt = {"a": [Detection("dog", 0, 0, 50, 50), Detection("person", 60, 0, 120, 90)]}
    r = evaluate({"a": [Detection("dog", 0, 0, 50, 50, 0.9), Detection("cat", 60, 0, 120, 90, 0.9)]}, gt)
    assert r.per_class == approx({"dog": 1.0, "person": 0.0})
    assert r.ap == approx(0.5)
    # aliases fold a label into another on both sides (issue 3's "car/truck as car")
    gt2 = {"a": [Detection("car", 0, 0, 50, 50), Detection("truck", 60, 0, 120, 90)]}
    preds2 = {"a": [Detection("truck", 0, 0, 50, 50, 0.9), Detection("car", 60, 0, 120, 90, 0.8)]}
    assert evaluate(preds2, gt2).ap == 0.0
    r2 = evaluate(preds2, gt2, aliases={"truck": "car"})
    assert r2.ap == approx(1.0) and r2.per_class_gt == {"car": 2}


def test_no_ground_truth_is_undefined_and_missing_image_counts_as_empty():
    r = evaluate({"a": [Detection("dog", 0, 0, 5, 5, 0.5)]}, {})
    assert math.isnan(r.ap) and r.per_class == {}
    # an image with ground truth but no predictions entry: nothing found there
    gt = {"a": [Detection("dog", 0, 0, 50, 50)], "b": [Detection("dog", 0, 0, 50, 50)]}
    r = evaluate({"a": [Detection("dog", 0, 0, 50, 50, 0.9)]}, gt)
    assert r.ap == approx(51 / 101) and r.num_images == 2


def test_relative_mode_anchor_is_truth():
    anchor = {"a": [Detection("dog", 0, 0, 50, 50, 0.9), Detection("cat", 60, 60, 90, 90, 0.3)],
              "b": [Detection("person", 10, 10, 40, 80, 0.7)]}
    gt = relative_ground_truth(anchor, 0.5)
    assert gt == {"a": [Detection("dog", 0, 0, 50, 50, 1.0)], "b": [Detection("person", 10, 10, 40, 80, 1.0)]}
    assert evaluate_relative(anchor, anchor, 0.5).ap == approx(1.0)
    # a split that loses the person and moves the dog by IoU 0.818 (see test above)
    split = {"a": [Detection("dog", 5, 0, 55, 50, 0.88)], "b": []}
    r = evaluate_relative(split, anchor, 0.5)
    assert r.per_class == approx({"dog": 0.7, "person": 0.0})
    assert r.ap == approx(0.35)


def _write_dir(d, preds, with_score=True):
    for k, v in preds.items():
        write_predictions(d / f"{k}.txt", v, with_score=with_score)
    return d


def test_folders_and_errors(tmp_path):
    gt = {"a": [Detection("dog", 0, 0, 50, 50)], "b": [Detection("traffic light", 5, 5, 20, 40)]}
    preds = {"a": [Detection("dog", 0, 0, 50, 50, 0.9)], "b": [Detection("traffic light", 5, 5, 20, 40, 0.6)]}
    gtd = _write_dir(tmp_path / "gt", gt, with_score=False)
    pd = _write_dir(tmp_path / "pred", preds)
    r = evaluate_folders(pd, gtd)
    assert r.ap == approx(1.0) and set(r.per_class) == {"dog", "traffic light"}
    assert evaluate_folders(pd, anchor_dir=pd).ap == approx(1.0)
    assert evaluate_folders(pd, gtd, threshold=0.7).per_class == approx({"dog": 1.0, "traffic light": 0.0})
    # one image of the dataset: scored alone
    assert evaluate_folders(pd / "b.txt", gtd, subset=True).num_images == 1
    # a predictions file without ground truth means mismatched folders
    write_predictions(pd / "zzz.txt", [])
    with pytest.raises(UserError, match=r"no ground truth for 1 predicted image\(s\): zzz"):
        evaluate_folders(pd, gtd)
    with pytest.raises(UserError, match="ground truth not found"):
        evaluate_folders(pd, tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.txt").write_text("dog 1 2 3\n")
    with pytest.raises(UserError, match=r"bad/a.txt:1: expected"):
        evaluate_folders(tmp_path / "bad", gtd)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="bad.json: not valid JSON"):
        evaluate_folders(pd, tmp_path / "bad.json")


def test_plots_are_png(tmp_path):
    import cv2

    gt = {"a": [Detection("dog", 0, 0, 50, 50), Detection("person", 60, 0, 120, 90)]}
    r = evaluate({"a": [Detection("dog", 0, 0, 50, 50, 0.9)]}, gt)
    p = plot_per_class(r, tmp_path / "ap.png")
    img = cv2.imread(str(p))
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and img.shape[0] > 100 and img.std() > 5
    p2 = plot_per_class_table({"none": r, "nnc": r}, tmp_path / "t.png")
    assert cv2.imread(str(p2)).shape[1] > 100


def _run_cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_map_command_single_folder_and_splits(tmp_path, capsys):
    coco, dets = _fixture(5)
    gt_json = tmp_path / "gt.json"
    gt_json.write_text(json.dumps(coco))
    preds = _as_detections(coco, dets)
    anchor = _write_dir(tmp_path / "runs" / "anchor", preds)
    # a "float16" run equal to the anchor, and a lossy run that drops every other box
    _write_dir(tmp_path / "runs" / "s10" / "float16", preds)
    _write_dir(tmp_path / "runs" / "s10" / "nnc-38" / "predictions",  # device's -results_dir layout
               {k: v[::2] for k, v in preds.items()})

    code, out, _ = _run_cli(["map", str(anchor), "--gt", str(gt_json), "--plot", str(tmp_path / "a.png"),
                             "--csv", str(tmp_path / "a.csv")], capsys)
    ref = _pycocotools(coco, dets)
    assert code == 0 and f"AP {100 * ref.stats[0]:.1f}" in out
    rows = list(csv.DictReader(open(tmp_path / "a.csv")))
    assert rows[0]["class"] == "all" and float(rows[0]["AP"]) == pytest.approx(ref.stats[0], abs=1e-6)
    assert (tmp_path / "a.png").stat().st_size > 1000

    # one image, against the whole JSON and against the anchor's file
    code, out, _ = _run_cli(["map", str(anchor / "img01.txt"), "--gt", str(gt_json),
                             "--anchor", str(anchor / "img01.txt")], capsys)
    assert code == 0 and "relative to anchor: AP 100.0" in out and "images 1," in out

    code, out, _ = _run_cli(["map", "--splits-root", str(tmp_path / "runs"), "--anchor", "anchor", "--gt",
                             str(gt_json), "--anchor-threshold", "0.0", "--csv", str(tmp_path / "s.csv"),
                             "--plot", str(tmp_path / "s.png")], capsys)
    assert code == 0
    rows = {r["run"]: r for r in csv.DictReader(open(tmp_path / "s.csv"))}
    assert set(rows) == {"anchor", "s10/float16", "s10/nnc-38"}
    assert float(rows["s10/float16"]["rel_AP"]) == approx(1.0) and float(rows["anchor"]["rel_AP"]) == approx(1.0)
    assert float(rows["s10/nnc-38"]["rel_AP"]) < 0.9
    assert float(rows["s10/float16"]["AP"]) == pytest.approx(ref.stats[0], abs=1e-6)
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_map_command_errors_exit_2(tmp_path, capsys):
    code, _, err = _run_cli(["map", str(tmp_path / "none"), "--gt", str(tmp_path)], capsys)
    assert code == 2 and "predictions folder not found" in err and "Traceback" not in err
    code, _, err = _run_cli(["map", str(tmp_path)], capsys)
    assert code == 2 and "--gt" in err
    write_predictions(tmp_path / "p" / "a.txt", [Detection("dog", 0, 0, 5, 5, 0.5)])
    code, _, err = _run_cli(["map", str(tmp_path / "p"), "--gt", str(tmp_path / "x.json")], capsys)
    assert code == 2 and "x.json" in err
