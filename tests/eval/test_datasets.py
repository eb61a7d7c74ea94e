"""COCO subsets, the --download path (on local files only), SFU-HW conversion, frames."""

from __future__ import annotations

import json
import zipfile

import cv2
import numpy as np
import pytest

from splitinfer.common.eval import datasets
from splitinfer.common.cli import main
from splitinfer.common.core.detections import Detection, read_predictions
from splitinfer.common.core.errors import UserError
from splitinfer.common.eval.evaluation import evaluate_folders, load_detections_dir

# Four images with ids out of order, three categories with COCO ids (gaps), one crowd region.
COCO = {
    "info": {"description": "test"},
    "images": [
        {"id": 40, "file_name": "000000000040.jpg", "width": 80, "height": 60},
        {"id": 5, "file_name": "000000000005.jpg", "width": 80, "height": 60},
        {"id": 12, "file_name": "000000000012.jpg", "width": 80, "height": 60},
        {"id": 3, "file_name": "000000000003.jpg", "width": 80, "height": 60},
    ],
    "annotations": [
        {"id": 1, "image_id": 5, "category_id": 1, "bbox": [10, 20, 30, 40], "area": 1000, "iscrowd": 0},
        {"id": 2, "image_id": 5, "category_id": 18, "bbox": [50.5, 5, 20, 10], "area": 180, "iscrowd": 0},
        {"id": 3, "image_id": 3, "category_id": 10, "bbox": [0, 0, 8, 30], "area": 200, "iscrowd": 0},
        {"id": 4, "image_id": 3, "category_id": 1, "bbox": [20, 20, 40, 30], "area": 900, "iscrowd": 1},
        {"id": 5, "image_id": 40, "category_id": 3, "bbox": [1, 2, 3, 4], "area": 12, "iscrowd": 0},
    ],
    "categories": [{"id": 1, "name": "person"}, {"id": 10, "name": "traffic light"}, {"id": 18, "name": "dog"},
                   {"id": 3, "name": "car"}],
}


def _coco_files(tmp_path):
    ann = tmp_path / "instances_val2017.json"
    ann.write_text(json.dumps(COCO))
    img_dir = tmp_path / "val2017"
    img_dir.mkdir()
    for i, img in enumerate(COCO["images"]):
        cv2.imwrite(str(img_dir / img["file_name"]), np.full((60, 80, 3), 40 * i, np.uint8))
    return ann, img_dir


def test_coco_first_n(tmp_path, capsys):
    ann, img_dir = _coco_files(tmp_path)
    out = tmp_path / "sub"
    assert main(["dataset", "coco", "--annotations", str(ann), "--images", str(img_dir), "--first", "2",
                 "-o", str(out)]) == 0
    assert "2 images, 3 boxes" in capsys.readouterr().out  # the crowd region is not a text box
    sub = json.loads((out / "instances.json").read_text())
    assert [i["id"] for i in sub["images"]] == [3, 5]  # first two by file name
    assert sorted(a["id"] for a in sub["annotations"]) == [1, 2, 3, 4]
    assert sub["categories"] == COCO["categories"] and sub["info"] == COCO["info"]
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["000000000003.txt", "000000000005.txt"]
    # bbox [x, y, w, h] -> x1 y1 x2 y2; spaces in labels written as '_'
    assert (out / "labels" / "000000000005.txt").read_text() == \
        "person 10.00 20.00 40.00 60.00\ndog 50.50 5.00 70.50 15.00\n"
    assert (out / "labels" / "000000000003.txt").read_text() == "traffic_light 0.00 0.00 8.00 30.00\n"
    assert read_predictions(out / "labels" / "000000000003.txt")[0].label == "traffic light"
    assert (out / "images" / "000000000003.jpg").read_bytes() == (img_dir / "000000000003.jpg").read_bytes()
    # perfect predictions score 1.0 against both ground-truth forms of the subset
    preds = tmp_path / "preds"
    preds.mkdir()
    for p in (out / "labels").iterdir():
        (preds / p.name).write_text("".join(ln + " 0.9\n" for ln in p.read_text().splitlines()))
    for gt in (out / "instances.json", out / "labels"):
        assert evaluate_folders(preds, gt).ap == pytest.approx(1.0, abs=1e-9)


def test_coco_list_and_errors(tmp_path, capsys):
    ann, img_dir = _coco_files(tmp_path)
    lst = tmp_path / "names.txt"
    lst.write_text("# chosen\n000000000040.jpg\n000000000012\n\n5\n")
    out = tmp_path / "sub"
    assert main(["dataset", "coco", "--annotations", str(ann), "--images", str(img_dir), "--list", str(lst),
                 "-o", str(out)]) == 0
    sub = json.loads((out / "instances.json").read_text())
    assert [i["id"] for i in sub["images"]] == [40, 12, 5]  # list order kept
    assert (out / "labels" / "000000000012.txt").read_text() == ""  # no objects: empty file
    assert (out / "labels" / "000000000040.txt").read_text() == "car 1.00 2.00 4.00 6.00\n"

    lst.write_text("000000000040.jpg\nnope.jpg\n")
    assert main(["dataset", "coco", "--annotations", str(ann), "--images", str(img_dir), "--list", str(lst),
                 "-o", str(out)]) == 2
    assert f"{lst}:2: image 'nope.jpg' is not in the annotation file" in capsys.readouterr().err
    assert main(["dataset", "coco", "--annotations", str(tmp_path / "missing.json"), "--images", str(img_dir),
                 "-o", str(out)]) == 2
    assert "annotation file not found" in capsys.readouterr().err
    (img_dir / "000000000012.jpg").unlink()
    assert main(["dataset", "coco", "--annotations", str(ann), "--images", str(img_dir), "-o", str(out)]) == 2
    assert "000000000012.jpg (id 12) not found" in capsys.readouterr().err


def test_coco_urls():
    assert datasets.coco_image_url("000000000139.jpg") == "http://images.cocodataset.org/val2017/000000000139.jpg"
    assert datasets.coco_image_url("a b.jpg", "train2017", "https://mirror/x/") == "https://mirror/x/train2017/a%20b.jpg"
    assert datasets.coco_annotations_url() == \
        "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"
    assert datasets.coco_annotations_member("val2017") == "annotations/instances_val2017.json"


def test_coco_download_from_a_local_site(tmp_path, capsys):
    """The real download code, served by file:// URLs (no traffic leaves the machine)."""
    ann, img_dir = _coco_files(tmp_path)
    site = tmp_path / "site"
    (site / "annotations").mkdir(parents=True)
    with zipfile.ZipFile(site / "annotations" / "annotations_trainval2017.zip", "w") as zf:
        zf.write(ann, "annotations/instances_val2017.json")
        zf.writestr("annotations/captions_val2017.json", "{}")
    img_dir.rename(site / "val2017")
    out = tmp_path / "dl"
    assert main(["dataset", "coco", "--download", "--first", "3", "--base-url", site.as_uri(), "-o", str(out)]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == \
        ["000000000003.jpg", "000000000005.jpg", "000000000012.jpg"]
    assert (out / "images" / "000000000005.jpg").read_bytes() == (site / "val2017" / "000000000005.jpg").read_bytes()
    assert json.loads((out / "_download" / "instances_val2017.json").read_text()) == COCO
    assert not list(out.rglob("*.part"))

    # nothing reachable there: a clear one-line error, exit 2
    capsys.readouterr()
    assert main(["dataset", "coco", "--download", "--first", "1", "--base-url", (tmp_path / "nowhere").as_uri(),
                 "-o", str(tmp_path / "dl2")]) == 2
    err = capsys.readouterr().err
    assert "cannot download" in err and "annotations_trainval2017.zip" in err and len(err.splitlines()) == 1
    # a broken archive is named
    bad = tmp_path / "bad"
    (bad / "_download").mkdir(parents=True)
    (bad / "_download" / "annotations_trainval2017.zip").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not the COCO annotation archive"):
        datasets.make_coco_subset(bad, download_missing=True, first=1, base_url=site.as_uri())


# --------------------------------------------------------------------------------------------- SFU

SFU_FRAMES = [
    "0 0.5 0.5 0.25 0.5\n2 0.1 0.2 0.1 0.2\n",  # person: cx 80 cy 60 w 40 h 60 at 160x120
    "",  # no object
    "16 0.75 0.25 0.5 0.5\n",  # dog
]


def _sfu(tmp_path, frames=SFU_FRAMES, name="Seq_160x120_30"):
    d = tmp_path / "ann"
    d.mkdir(parents=True)
    for i, text in enumerate(frames):
        (d / f"{name}_seq_{i:03d}.txt").write_text(text)
    return d


def _video(path, n, size=(160, 120)):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
    for i in range(n):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        cv2.putText(frame, str(i), (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
        frame[:, :, 1] = 25 * i
        w.write(frame)
    w.release()
    return path


def test_sfu_boxes_by_hand(tmp_path, capsys):
    ann = _sfu(tmp_path)
    out = tmp_path / "out"
    assert main(["dataset", "sfu", "--annotations", str(ann), "-o", str(out)]) == 0  # size from the name
    assert "3 frames, 3 boxes at 160x120" in capsys.readouterr().out
    gt = load_detections_dir(out / "labels")
    # named as `detect` names the frames of the sequence's video (Seq_160x120_30.mp4)
    assert sorted(gt) == ["Seq_160x120_30_000000", "Seq_160x120_30_000001", "Seq_160x120_30_000002"]
    assert gt["Seq_160x120_30_000000"] == [Detection("person", 60, 30, 100, 90, 1.0),
                                           Detection("car", 8, 12, 24, 36, 1.0)]
    assert gt["Seq_160x120_30_000001"] == []
    assert gt["Seq_160x120_30_000002"] == [Detection("dog", 80, 0, 160, 60, 1.0)]
    # another size scales the pixels
    dets = datasets.read_sfu_frame(ann / "Seq_160x120_30_seq_000.txt", 832, 480)
    assert dets[0] == Detection("person", 312, 120, 520, 360, 1.0)
    # a label map in the field's coco_labels.csv layout
    (tmp_path / "labels.csv").write_text("id,name\n0,pedestrian\n2,vehicle\n16,hound\n")
    assert main(["dataset", "sfu", "--annotations", str(ann), "--size", "160x120", "--labels",
                 str(tmp_path / "labels.csv"), "-o", str(tmp_path / "o2"), "--every", "2", "--name", "clip"]) == 0
    gt2 = load_detections_dir(tmp_path / "o2" / "labels")
    assert sorted(gt2) == ["clip_000000", "clip_000002"]
    assert [d.label for d in gt2["clip_000000"]] == ["pedestrian", "vehicle"] and gt2["clip_000002"][0].label == "hound"
    assert datasets.sequence_name("BasketballDrill_832x480_50_seq_012") == "BasketballDrill_832x480_50"


def test_sfu_errors_name_file_and_line(tmp_path, capsys):
    ann = _sfu(tmp_path, ["0 0.5 0.5 0.1 0.1\n80 0.5 0.5 0.1 0.1\n"])
    assert main(["dataset", "sfu", "--annotations", str(ann), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{ann / 'Seq_160x120_30_seq_000.txt'}:2: class id 80 outside the label map (0..79)" in err
    (ann / "Seq_160x120_30_seq_000.txt").write_text("0 0.5 0.5 0.1\n")
    assert main(["dataset", "sfu", "--annotations", str(ann), "-o", str(tmp_path / "o")]) == 2
    assert "seq_000.txt:1: expected 5 fields" in capsys.readouterr().err
    assert main(["dataset", "sfu", "--annotations", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]) == 2
    assert "annotation folder not found" in capsys.readouterr().err
    plain = _sfu(tmp_path / "p", ["0 0.5 0.5 0.1 0.1\n"], name="clip")
    assert main(["dataset", "sfu", "--annotations", str(plain), "-o", str(tmp_path / "o")]) == 2
    assert "frame size unknown" in capsys.readouterr().err
    gap = _sfu(tmp_path / "g", ["", "", ""])
    (gap / "Seq_160x120_30_seq_001.txt").unlink()
    with pytest.raises(UserError, match="annotation for frame 1 missing"):
        datasets.sfu_annotation_files(gap)


def test_sfu_with_video_frames_and_count_mismatch(tmp_path, capsys):
    ann = _sfu(tmp_path)
    video = _video(tmp_path / "seq.mp4", 3)
    out = tmp_path / "out"
    assert main(["dataset", "sfu", "--annotations", str(ann), "--video", str(video), "-o", str(out)]) == 0
    frames = sorted((out / "images").iterdir())
    assert [p.stem for p in frames] == ["seq_000000", "seq_000001", "seq_000002"]
    assert [p.stem for p in frames] == sorted(p.stem for p in (out / "labels").iterdir())
    # the names `iter_frames` gives the video's frames: predictions on the video line up with the labels
    from splitinfer.common.core.images import iter_frames
    assert [name for name, _ in iter_frames(video)] == [p.stem for p in frames]
    first, last = cv2.imread(str(frames[0])), cv2.imread(str(frames[2]))
    assert first.shape == (120, 160, 3) and abs(float(last[:, :, 1].mean()) - 50) < 8  # frame order kept

    long_video = _video(tmp_path / "long.mp4", 5)
    assert main(["dataset", "sfu", "--annotations", str(ann), "--video", str(long_video), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{long_video}: 5 frames, but {ann} has 3 annotation files" in err
    assert main(["dataset", "sfu", "--annotations", str(ann), "--video", str(video), "--size", "832x480",
                 "-o", str(out)]) == 2
    assert "frames are 160x120, not the given 832x480" in capsys.readouterr().err


def test_frames_every_and_max(tmp_path, capsys):
    video = _video(tmp_path / "v.mp4", 7)
    assert main(["dataset", "frames", str(video), "--every", "3", "-o", str(tmp_path / "a")]) == 0
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["images"]  # OUT/images/, as the help says
    assert sorted(p.name for p in (tmp_path / "a" / "images").iterdir()) == ["v_000000.png", "v_000003.png",
                                                                             "v_000006.png"]
    g = [cv2.imread(str(tmp_path / "a" / "images" / f"v_{i:06d}.png"))[:, :, 1].mean() for i in (0, 3, 6)]
    assert g == pytest.approx([0, 75, 150], abs=8)  # the right frames, not the first three
    paths = datasets.extract_frames(video, tmp_path / "b", every=2, max_frames=2)
    assert [p.name for p in paths] == ["v_000000.png", "v_000002.png"]
    assert main(["dataset", "frames", str(tmp_path / "none.mp4"), "-o", str(tmp_path / "c")]) == 2
    assert "video not found" in capsys.readouterr().err
    (tmp_path / "junk.mp4").write_bytes(b"junk" * 100)
    assert main(["dataset", "frames", str(tmp_path / "junk.mp4"), "-o", str(tmp_path / "c")]) == 2
    assert "junk.mp4" in capsys.readouterr().err
