"""Every option form of TR 26.847 Annex B.3's scripts, run (not only parsed) through the real CLI, each checked
against what our own spelling of the same job produces:

- split_onnx.py (B.3.3): `split MODEL NODE before|after` -> `<stem>_Part_I_<node, '/' -> '_'>.onnx` + Part II
- split_onnx_multi.py (B.3.4): `split --anchor MODEL -r RANK` / `-a MODEL -n NAME -f after`
- calc_map_image.py: `map -i IMAGE -p PREDICTIONS -g GT -r RESULTS.csv --threshold T --no_plot`
- calc_map_video.py: `map -v VIDEO -p PREDICTIONS -g GT_DIR -r RESULTS.csv -o PLOT.png --labels_coco CSV`
- calc_map_image_dataset.py: `map -d IMAGES -p RUNS --multisplit -g GT_DIR -r RESULTS.csv`
- calc_map.py (B.3.5): `map VIDEO_NAME --ds DATASET --threshold T`
- visualize.py (B.3.5): `visualize VIDEO ANNOTATIONS --sleep_time S`

The data: the bundled NanoDet on bundled photos (and a short video made of them); ground truth = the whole
model's detections at or above 0.5 (as relative mode does), a second "split" = the same predictions with
boxes shifted, so the two runs score differently.
"""

from __future__ import annotations

import csv
import math
import shutil

import cv2
import pytest

from splitinfer.common.assets import IMAGES_DIR, default_model_path
from splitinfer.common.cli import main
from splitinfer.common.core.detections import Detection, read_predictions, write_predictions

pytestmark = pytest.mark.timeout(300)
IMAGES = ("dog.jpg", "kite.jpg", "horses.jpg")


def _shifted(dets, dx):
    return [Detection(d.label, d.x1 + dx, d.y1 + dx, d.x2 + dx, d.y2 + dx, d.score) for d in dets]


def _gt(dets):
    return [d for d in dets if d.score >= 0.5]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("tr_forms")
    images = d / "images"
    images.mkdir()
    for name in IMAGES:
        shutil.copy(IMAGES_DIR / name, images / name)
    assert main(["detect", str(images), "-o", str(d / "anchor"), "--threshold", "0.05", "--no-overlay"]) == 0
    runs, labels = d / "runs", d / "labels"
    for stem in (p.stem for p in images.iterdir()):
        dets = read_predictions(d / "anchor" / f"{stem}.txt")
        write_predictions(runs / "s1" / f"{stem}.txt", dets)
        write_predictions(runs / "s2" / f"{stem}.txt", _shifted(dets, 6.0))
        write_predictions(labels / f"{stem}.txt", _gt(dets), with_score=False)
    # a short video: the three photos at one size, two frames each
    frames = [cv2.resize(cv2.imread(str(images / n)), (320, 240)) for n in IMAGES for _ in range(2)]
    video = d / "clip.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for f in frames:
        w.write(f)
    w.release()
    assert main(["detect", str(video), "-o", str(d / "vanchor"), "--threshold", "0.05", "--no-overlay"]) == 0
    vgt = d / "vlabels"
    for p in sorted((d / "vanchor").glob("*.txt")):
        write_predictions(vgt / p.name, _gt(read_predictions(p)), with_score=False)
    return d


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _native_ap(capsys, argv) -> float:
    """AP (in [0,1]) of our own `map` spelling, read from its CSV."""
    out = argv[-1]
    assert main(argv) == 0
    capsys.readouterr()
    row = next(r for r in _rows(out) if r.get("class", "all") == "all")
    return float(row["AP"])


# ------------------------------------------------------------------------------------------ split


def test_split_onnx_single_branch_form_names_parts_like_the_tr(tmp_path, capsys):
    import onnx

    model = tmp_path / "nanodet.onnx"
    shutil.copy(default_model_path(), model)
    node = onnx.load(str(model), load_external_data=False).graph.node[20].name
    assert main(["split", str(model), node, "after"]) == 0
    safe = node.replace("/", "_")
    p1, p2 = tmp_path / f"nanodet_Part_I_{safe}.onnx", tmp_path / f"nanodet_Part_II_{safe}.onnx"
    assert p1.is_file() and p2.is_file(), sorted(x.name for x in tmp_path.iterdir())
    part1 = onnx.load(str(p1))
    assert part1.graph.node[-1].name == node or node in {n.name for n in part1.graph.node}  # 'after': in Part I
    assert node not in {n.name for n in onnx.load(str(p2)).graph.node}
    out = capsys.readouterr().out
    assert "Part I" in out and str(p1) in out


def test_split_onnx_multi_forms_anchor_rank_name_flag(tmp_path):
    import onnx

    model = tmp_path / "m.onnx"
    shutil.copy(default_model_path(), model)
    assert main(["split", "--anchor", str(model), "-r", "7"]) == 0
    assert (tmp_path / "m_part_I_node_7.onnx").is_file() and (tmp_path / "m_part_II_node_7.onnx").is_file()
    name = onnx.load(str(model), load_external_data=False).graph.node[7].name
    assert main(["split", "-a", str(model), "-n", name, "-f", "after"]) == 0
    assert (tmp_path / "m_part_I_node_8.onnx").is_file()  # 'after' node 7 = before node 8


# ------------------------------------------------------------------------------------------ calc_map


def test_calc_map_image_form(data, tmp_path, capsys):
    per_split = tmp_path / "dog_splits"  # one predictions file per split, for the one image
    per_split.mkdir()
    shutil.copy(data / "runs" / "s1" / "dog.txt", per_split / "s1.txt")
    shutil.copy(data / "runs" / "s2" / "dog.txt", per_split / "s2.txt")
    res = tmp_path / "image.csv"
    assert main(["map", "-i", str(data / "images" / "dog.jpg"), "-p", str(per_split), "-g",
                 str(data / "labels" / "dog.txt"), "-r", str(res), "--threshold", "0.05", "--no_plot"]) == 0
    rows = {r["run"]: r for r in _rows(res)}
    assert set(rows) == {"s1", "s2"}
    native = _native_ap(capsys, ["map", str(data / "runs" / "s1" / "dog.txt"), "--gt", str(data / "labels" / "dog.txt"),
                                 "--threshold", "0.05", "--csv", str(tmp_path / "n.csv")])
    assert math.isclose(float(rows["s1"]["AP"]), native, abs_tol=1e-9)
    assert float(rows["s2"]["AP"]) < float(rows["s1"]["AP"])
    # one file, one split
    res1 = tmp_path / "image1.csv"
    assert main(["map", "--image_path", str(data / "images" / "dog.jpg"), "--prediction_path",
                 str(data / "runs" / "s1" / "dog.txt"), "--groundtruth_path", str(data / "labels" / "dog.txt"),
                 "--results_filename", str(res1), "--no_plot"]) == 0
    assert math.isclose(float(_rows(res1)[0]["AP"]), native, abs_tol=1e-9)


def test_calc_map_video_form_with_plot_and_labels(data, tmp_path, capsys):
    labels_csv = tmp_path / "coco_labels.csv"
    labels_csv.write_text("".join(f"{i},{n}\n" for i, n in enumerate(("person", "bicycle", "car"))))
    res, plot = tmp_path / "video.csv", tmp_path / "video_map.png"
    assert main(["map", "-v", str(data / "clip.mp4"), "-p", str(data / "vanchor"), "-g", str(data / "vlabels"),
                 "-r", str(res), "-o", str(plot), "--labels_coco", str(labels_csv), "--threshold", "0.05"]) == 0
    rows = _rows(res)
    assert len(rows) == 1 and int(rows[0]["images"]) == 6
    native = _native_ap(capsys, ["map", str(data / "vanchor"), "--gt", str(data / "vlabels"), "--threshold", "0.05",
                                 "--csv", str(tmp_path / "n.csv")])
    assert math.isclose(float(rows[0]["AP"]), native, abs_tol=1e-9)
    assert plot.is_file() and plot.stat().st_size > 5000


def test_calc_map_image_dataset_form_multisplit(data, tmp_path, capsys):
    res = tmp_path / "dataset.csv"
    assert main(["map", "-d", str(data / "images"), "-p", str(data / "runs"), "--multisplit", "-g",
                 str(data / "labels"), "-r", str(res), "--threshold", "0.05"]) == 0
    rows = {r["run"]: r for r in _rows(res)}
    assert set(rows) == {"s1", "s2"}
    assert main(["map", "--splits-root", str(data / "runs"), "--gt", str(data / "labels"), "--threshold", "0.05",
                 "--csv", str(tmp_path / "n.csv")]) == 0
    capsys.readouterr()
    native = {r["run"]: r for r in _rows(tmp_path / "n.csv")}
    for run in ("s1", "s2"):
        assert math.isclose(float(rows[run]["AP"]), float(native[run]["AP"]), abs_tol=1e-9)
    assert float(rows["s2"]["AP"]) < float(rows["s1"]["AP"])


def test_calc_map_video_name_form(data, tmp_path, capsys):
    root = tmp_path / "SFU"
    shutil.copytree(data / "vlabels", root / "Kimono" / "labels")
    shutil.copytree(data / "vanchor", root / "Kimono" / "predictions")
    assert main(["map", "Kimono", "--ds", str(root), "--threshold", "0.05"]) == 0
    out = capsys.readouterr().out
    native = _native_ap(capsys, ["map", str(data / "vanchor"), "--gt", str(data / "vlabels"), "--threshold", "0.05",
                                 "--csv", str(tmp_path / "n.csv")])
    assert f"AP {100 * native:.1f}" in out, out


# ------------------------------------------------------------------------------------------ visualize


def test_visualize_sleep_time_form_sets_the_frame_interval(data, tmp_path):
    out = tmp_path / "vis.webm"
    assert main(["visualize", str(data / "clip.mp4"), str(data / "vanchor"), "--sleep_time", "0.25",
                 "-o", str(out)]) == 0
    cap = cv2.VideoCapture(str(out))
    fps, n = cap.get(cv2.CAP_PROP_FPS), 0
    while cap.read()[0]:
        n += 1
    assert n == 6 and math.isclose(fps, 4.0, rel_tol=0.01), (n, fps)
