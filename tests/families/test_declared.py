"""Detectors declared only in model.json give the detections of their Python family; families as plug-ins.

YOLOv3-tiny (trained) with its box decoding moved into the ONNX graph is declared with the generic
boxes + scores decoder and must equal the `yolo` family; the bundled NanoDet re-declared (its preprocessing in
JSON, its decoder named) must equal the `nanodet` family bit for bit. A family in a module outside the
package, registered as an entry point of `splitinfer.families`, is listed and used by `splitinfer` in a
fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from splitinfer.common.assets import bundled_images, default_model_path
from splitinfer.common.core.errors import UserError
from splitinfer.common.core.images import read_image
from splitinfer.common.families import family_for_model, get_family
from tests.darknet_fixtures import import_yolov3_tiny


def _run(path: Path, family, images):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    out = []
    for img in images:
        feeds, meta = family.preprocess(img)
        out.append(family.postprocess(dict(zip(names, sess.run(None, feeds))), meta, 0.1))
    return out


def _with_decoding(src: Path, dst: Path, heads: list[dict], size: int) -> None:
    """The darknet graph with darknet's box decoding appended: boxes [1,N,4] cxcywh in input pixels and
    scores [1,N,80] = objectness x class probability."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    boxes, scores = [], []
    for k, h in enumerate(heads):
        vi = next(o for o in g.output if o.name == h["output"])
        hw = vi.type.tensor_type.shape.dim[2].dim_value
        n, stride = 3 * hw * hw, size // hw
        gy, gx = np.meshgrid(np.arange(hw), np.arange(hw), indexing="ij")
        grid = np.tile(np.stack([gx, gy], -1).reshape(1, -1, 2), (1, 3, 1)).astype(np.float32)
        anchors = np.repeat(np.asarray(h["anchors"], np.float32), hw * hw, axis=0)[None]
        consts = {f"d{k}_shape5": np.array([1, 3, 85, hw, hw], np.int64), f"d{k}_shape3": np.array([1, n, 85], np.int64),
                  f"d{k}_grid": grid, f"d{k}_stride": np.array(stride, np.float32), f"d{k}_anchors": anchors}
        g.initializer.extend(numpy_helper.from_array(v, name) for name, v in consts.items())
        p = f"d{k}_"
        g.node.extend([
            helper.make_node("Reshape", [h["output"], p + "shape5"], [p + "r5"]),
            helper.make_node("Transpose", [p + "r5"], [p + "t"], perm=[0, 1, 3, 4, 2]),
            helper.make_node("Reshape", [p + "t", p + "shape3"], [p + "raw"]),
            helper.make_node("Sigmoid", [p + "raw"], [p + "sig"]),
            helper.make_node("Split", [p + "sig", p + "splits"], [p + "sxy", p + "swh", p + "obj", p + "cls"], axis=2),
            helper.make_node("Split", [p + "raw", p + "splits"], [p + "rxy", p + "rwh", p + "robj", p + "rcls"], axis=2),
            helper.make_node("Add", [p + "sxy", p + "grid"], [p + "xy0"]),
            helper.make_node("Mul", [p + "xy0", p + "stride"], [p + "xy"]),
            helper.make_node("Exp", [p + "rwh"], [p + "ewh"]),
            helper.make_node("Mul", [p + "ewh", p + "anchors"], [p + "wh"]),
            helper.make_node("Concat", [p + "xy", p + "wh"], [p + "boxes"], axis=2),
            helper.make_node("Mul", [p + "cls", p + "obj"], [p + "scores"]),
        ])
        g.initializer.append(numpy_helper.from_array(np.array([2, 2, 1, 80], np.int64), p + "splits"))
        boxes.append(p + "boxes")
        scores.append(p + "scores")
    g.node.extend([helper.make_node("Concat", boxes, ["boxes"], axis=1),
                   helper.make_node("Concat", scores, ["scores"], axis=1)])
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, None, 4]),
                     helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, None, 80])])
    del m.metadata_props[:]  # no recorded family: model.json alone says what this is
    onnx.save(m, str(dst))


def test_yolo_declared_with_boxes_and_scores_equals_the_yolo_family(tmp_path):
    src = import_yolov3_tiny(tmp_path / "tiny")
    info = json.loads((src / "model.json").read_text())
    (tmp_path / "decl").mkdir()
    _with_decoding(src / "model.onnx", tmp_path / "decl" / "model.onnx", info["yolo"]["heads"], 416)
    declared = {
        "family": {"name": "my_tiny_yolo"},
        "preprocess": {"input": "input", "size": [416, 416], "resize": "letterbox", "fill": 127.5,
                       "channels": "RGB", "layout": "NCHW", "range": "0-1"},
        "decoder": {"boxes": "boxes", "box_format": "cxcywh", "box_units": "pixels", "scores": "scores"},
        "nms": {"iou": 0.45, "score_threshold": 0.25, "max_detections": 300},
        "labels": "coco80",
    }
    (tmp_path / "decl" / "model.json").write_text(json.dumps(declared))
    fam = family_for_model(tmp_path / "decl" / "model.onnx")
    assert fam.name == "my_tiny_yolo" and fam.input_size == (416, 416)
    images = [read_image(p) for p in bundled_images()[:6]]
    want = _run(src / "model.onnx", family_for_model(src / "model.onnx"), images)
    got = _run(tmp_path / "decl" / "model.onnx", fam, images)
    assert sum(map(len, want)) > 10
    for w, g in zip(want, got):
        assert [d.label for d in g] == [d.label for d in w]
        np.testing.assert_allclose([d.box for d in g], [d.box for d in w], atol=0.05)
        np.testing.assert_allclose([d.score for d in g], [d.score for d in w], rtol=1e-4)


def test_nanodet_redeclared_in_json_equals_its_python_family(tmp_path):
    d = tmp_path / "nd"
    d.mkdir()
    (d / "model.onnx").symlink_to(default_model_path())
    (d / "model.json").write_text(json.dumps({
        "family": "declared",
        "preprocess": {"input": "input_1:0", "size": [416, 416], "resize": "stretch", "channels": "BGR",
                       "layout": "NCHW", "range": "0-255", "mean": [103.53, 116.28, 123.675],
                       "std": [57.375, 57.12, 58.395]},
        "decoder": {"family": "nanodet"}}))
    fam = family_for_model(d / "model.onnx")
    images = [read_image(p) for p in bundled_images()]
    want = _run(default_model_path(), get_family("nanodet"), images)
    got = _run(d / "model.onnx", fam, images)
    assert sum(map(len, want)) > 10 and got == want


@pytest.mark.parametrize("bad, match", [
    ({"decoder": {"boxes": "b"}}, "names a family or both"),
    ({"decoder": {"boxes": "b", "scores": "s", "box_format": "ltrb"}}, "box_format 'ltrb'"),
    ({"decoder": {"family": "nanodet", "anchors": 3}}, r"unknown decoder keys \['anchors'\]"),
    ({"preprocess": {"size": [0, 10]}, "decoder": {"family": "nanodet"}}, "size must be"),
    ({"preprocess": {"colour": "RGB"}, "decoder": {"family": "nanodet"}}, r"unknown preprocess keys \['colour'\]"),
])
def test_bad_declarations_name_model_json(tmp_path, bad, match):
    (tmp_path / "model.onnx").symlink_to(default_model_path())
    (tmp_path / "model.json").write_text(json.dumps({"family": "declared", **bad}))
    with pytest.raises(UserError, match=match) as e:
        family_for_model(tmp_path / "model.onnx")
    assert "model.json" in str(e.value)


def test_a_family_outside_the_package_loads_as_a_plugin(tmp_path):
    """A distribution with an entry point in `splitinfer.families`, found by importlib.metadata on sys.path."""
    (tmp_path / "acme_family.py").write_text(
        "import numpy as np\n"
        "from splitinfer.common.families import Family\n"
        "from splitinfer.common.core.detections import Detection\n"
        "class Acme(Family):\n"
        "    name, description, input_names, input_size = 'acme', 'ACME plug-in', ('input_1:0',), (416, 416)\n"
        "    def preprocess(self, img):\n"
        "        from splitinfer.common.families import get_family\n"
        "        return get_family('nanodet').preprocess(img)\n"
        "    def postprocess(self, outputs, meta, score_threshold=None):\n"
        "        return [Detection('acme', 0, 0, 1, 1, 0.9)]\n"
        "FAMILY = Acme()\n")
    info = tmp_path / "acme_family-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-family\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[splitinfer.families]\nacme = acme_family\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    listed = subprocess.run([sys.executable, "-m", "splitinfer.common.cli", "models", "list"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "acme" in listed.stdout and "ACME plug-in" in listed.stdout, listed.stderr
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "splitinfer.common.cli", "detect", str(bundled_images()[0]), "-f", "acme",
                        "-o", str(out), "--no-overlay"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert next(out.glob("*.txt")).read_text().split()[0] == "acme"


def _ssd_with_decoding(src: Path, dst: Path) -> None:
    """The ssd_resnet export with NVIDIA's box decoding and the softmax appended (default boxes as a
    constant): boxes [1,8732,4] x1y1x2y2 in [0,1], scores [1,8732,81] (column 0 = background)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from splitinfer.common.families import ssd_resnet as ssd

    m = onnx.load(str(src))
    g = m.graph
    d = ssd.default_boxes().astype(np.float32)[None]  # [1,8732,4] cx cy w h
    consts = {"dec_xy": d[..., :2], "dec_wh": d[..., 2:], "dec_sxy": np.array(ssd.SCALE_XY, np.float32),
              "dec_swh": np.array(ssd.SCALE_WH, np.float32), "dec_max": np.array(ssd.MAX_LOG_WH, np.float32),
              "dec_half": np.array(0.5, np.float32), "dec_split": np.array([2, 2], np.int64)}
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    n = helper.make_node
    g.node.extend([
        n("Transpose", ["output1"], ["dec_loc"], perm=[0, 2, 1]),
        n("Split", ["dec_loc", "dec_split"], ["dec_lxy", "dec_lwh"], axis=2),
        n("Mul", ["dec_lxy", "dec_sxy"], ["dec_a"]), n("Mul", ["dec_a", "dec_wh"], ["dec_b"]),
        n("Add", ["dec_b", "dec_xy"], ["dec_cxcy"]),
        n("Mul", ["dec_lwh", "dec_swh"], ["dec_c"]), n("Min", ["dec_c", "dec_max"], ["dec_c2"]),
        n("Exp", ["dec_c2"], ["dec_e"]), n("Mul", ["dec_e", "dec_wh"], ["dec_bwh"]),
        n("Mul", ["dec_bwh", "dec_half"], ["dec_h"]),
        n("Sub", ["dec_cxcy", "dec_h"], ["dec_p1"]), n("Add", ["dec_cxcy", "dec_h"], ["dec_p2"]),
        n("Concat", ["dec_p1", "dec_p2"], ["boxes"], axis=2),
        n("Transpose", ["output2"], ["dec_conf"], perm=[0, 2, 1]),
        n("Softmax", ["dec_conf"], ["scores"], axis=2),
    ])
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 8732, 4]),
                     helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 8732, 81])])
    del m.metadata_props[:]
    onnx.save(m, str(dst))


@pytest.mark.slow
def test_ssd_resnet_declared_without_its_python_family_gives_its_detections(tmp_path):
    """The issue's case: the ssd_resnet export (random weights, seed 0: the structure is what counts) declared
    in model.json alone: preprocessing, boxes/scores by name, NVIDIA's NMS settings."""
    from splitinfer.common.families import ssd_resnet as ssd
    from splitinfer.common.models import export as exporters

    import torch

    model = exporters.build_ssd300(seed=0)
    with torch.no_grad():  # heads scaled down so softmax scores spread out instead of saturating at 1.0 (ties)
        for head in (*model.conf, *model.loc):
            head.weight.mul_(0.02)
            head.bias.mul_(0.02)
    torch.save(model.state_dict(), tmp_path / "ssd.pt")
    src = exporters.export_ssd_resnet(tmp_path / "ssd" / "model.onnx", checkpoint=tmp_path / "ssd.pt")
    (tmp_path / "decl").mkdir()
    _ssd_with_decoding(src, tmp_path / "decl" / "model.onnx")
    (tmp_path / "decl" / "model.json").write_text(json.dumps({
        "family": {"name": "ssd_declared"},
        "preprocess": {"input": "input", "size": [300, 300], "resize": "stretch", "channels": "RGB",
                       "layout": "NCHW", "range": "0-1", "mean": ssd.MEAN_RGB.tolist(), "std": ssd.STD_RGB.tolist()},
        "decoder": {"boxes": "boxes", "box_format": "xyxy", "box_units": "normalized", "scores": "scores",
                    "background_class": 0},
        "nms": {"iou": 0.5, "max_detections": 200, "candidate_threshold": 0.05, "per_class_top_k": 200},
        "labels": "coco80"}))
    images = [read_image(p) for p in bundled_images()[:2]]
    want = _run(src, get_family("ssd_resnet"), images)
    got = _run(tmp_path / "decl" / "model.onnx", family_for_model(tmp_path / "decl" / "model.onnx"), images)
    assert sum(map(len, want)) > 20
    for w, g in zip(want, got):
        assert len(g) == len(w)
        assert [d.label for d in g] == [d.label for d in w]
        np.testing.assert_allclose([d.box for d in g], [d.box for d in w], atol=1e-2)
        np.testing.assert_allclose([d.score for d in g], [d.score for d in w], rtol=1e-4)


def test_declared_preprocessing_layouts_and_the_way_back():
    from splitinfer.common.families._geometry import Preprocess

    img = np.zeros((100, 200, 3), np.uint8)
    img[..., 0], img[..., 2] = 10, 250  # blue 10, red 250 (BGR)
    pre = Preprocess(input="x", size=(64, 32), resize="stretch", channels="RGB", layout="NHWC", range="0-255",
                     mean=(1.0, 2.0, 3.0), std=(2.0, 2.0, 2.0))
    feeds, meta = pre.run(img)
    x = feeds["x"]
    assert x.shape == (1, 32, 64, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0, 0], [(250 - 1) / 2, (0 - 2) / 2, (10 - 3) / 2])  # RGB order, 0-255 units
    assert meta == {"width": 200, "height": 100, "input_width": 64, "input_height": 32}
    np.testing.assert_allclose(pre.to_image(np.array([[16, 8, 32, 16]]), meta), [[50, 25, 100, 50]])
    box = Preprocess(input="x", size=(64, 64), resize="letterbox")  # 200x100 -> 64x32, 16 rows above
    np.testing.assert_allclose(box.to_image(np.array([[16, 24, 32, 32]]), {**meta, "input_height": 64,
                                                                            "input_width": 64}),
                               [[50, 25, 100, 50]])
