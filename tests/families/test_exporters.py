"""Torch exports of ssd_resnet and retinanet: graph structure, names, shapes, weights, and real runs.

Each model is exported once per module (retinanet takes about a minute on 2 cores), through the real CLI.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
import torch

from splitinfer.common.models import export as exporters
from splitinfer.common.assets import IMAGES_DIR
from splitinfer.common.cli import main
from splitinfer.common.core.errors import UserError
from splitinfer.common.families import get_family, resolve_model
from splitinfer.common.core.runtime import make_session

pytestmark = pytest.mark.timeout(600)


def dims(vi):
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]


# ---------------------------------------------------------------------------------------------- ssd_resnet


@pytest.fixture(scope="module")
def ssd(tmp_path_factory):
    """SSD300 exported by `splitinfer models export` from a DDP-style checkpoint of seed-7 weights."""
    d = tmp_path_factory.mktemp("ssd")
    source = exporters.build_ssd300(seed=7)
    ckpt = d / "ssd_ckpt.pt"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, ckpt)
    out = d / "ssd_resnet" / "model.onnx"
    assert main(["models", "export", "ssd_resnet", "-o", str(out), "--checkpoint", str(ckpt)]) == 0
    return out, source


def test_ssd_export_names_shapes_and_ir(ssd):
    path, _ = ssd
    m = onnx.load(str(path))
    assert m.ir_version <= 13
    assert [(i.name, dims(i)) for i in m.graph.input] == [("input", [1, 3, 300, 300])]
    assert [(o.name, dims(o)) for o in m.graph.output] == [("output1", [1, 4, 8732]), ("output2", [1, 81, 8732])]
    props = {p.key: p.value for p in m.metadata_props}
    assert props["splitinfer.family"] == "ssd_resnet" and "ssd_ckpt.pt" in props["splitinfer.weights"]
    assert json.loads(path.with_name("model.json").read_text())["family"] == "ssd_resnet"
    assert resolve_model(str(path))[1].name == "ssd_resnet"


def test_ssd_export_has_the_reference_graph_structure(ssd):
    g = onnx.load(str(ssd[0])).graph
    names = [n.name for n in g.node]
    assert "/feature_extractor/feature_extractor/feature_extractor.4/feature_extractor.4.0/conv1/Conv" in names
    assert "/additional_blocks.4/additional_blocks.4.3/Conv" in names
    ops = [n.op_type for n in g.node]
    assert "BatchNormalization" not in ops  # folded into the convolutions (eval-mode TorchScript export)
    assert "Identity" not in ops  # distinct BN statistics: no shared zero biases
    # conv1 + layers 1-3 of ResNet-50 (43) + 10 additional + 6 loc + 6 conf heads
    assert ops.count("Conv") == 65


def test_ssd_feature_maps_follow_nvidia_layout():
    model = exporters.build_ssd300(seed=0)
    shapes = []
    hooks = [model.feature_extractor.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))]
    hooks += [b.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
              for b in model.additional_blocks]
    with torch.no_grad():
        locs, confs = model(torch.zeros(1, 3, 300, 300))
    assert shapes == [(1024, 38, 38), (512, 19, 19), (512, 10, 10), (256, 5, 5), (256, 3, 3), (256, 1, 1)]
    assert tuple(locs.shape) == (1, 4, 8732) and tuple(confs.shape) == (1, 81, 8732)
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bn) == 43 + 10  # conv1 and layers 1-3 of ResNet-50, then the additional blocks
    assert all(m.running_var.std() > 0.05 and m.bias.abs().sum() > 0 for m in bn)


def test_ssd_onnx_equals_torch_on_a_real_photo(ssd):
    path, source = ssd
    fam = get_family("ssd_resnet")
    img = cv2.imread(str(IMAGES_DIR / "dog.jpg"))
    feeds, meta = fam.preprocess(img)
    sess = make_session(path, device="cpu")
    loc, conf = sess.run(feeds)
    with torch.no_grad():
        tl, tc = source(torch.from_numpy(feeds["input"]))
    scale = float(np.abs(tc.numpy()).max())
    np.testing.assert_allclose(loc, tl.numpy(), atol=1e-3 * scale)
    np.testing.assert_allclose(conf, tc.numpy(), atol=1e-3 * scale)
    dets = fam.postprocess({"output1": loc, "output2": conf}, meta, 0.05)
    assert 0 < len(dets) <= 200
    assert all(0 <= d.x1 <= d.x2 <= 768 and 0 <= d.y1 <= d.y2 <= 576 for d in dets)


def test_checkpoint_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        exporters.read_state_dict(tmp_path / "none.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(UserError, match="junk.pt"):
        exporters.read_state_dict(junk)
    code = tmp_path / "code.pt"
    torch.save({"x": UserError("pickled object")}, code)  # arbitrary objects: refused, never unpickled
    with pytest.raises(UserError, match="code.pt"):
        exporters.read_state_dict(code)
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    with pytest.raises(UserError, match="does not fit this model.*missing"):
        exporters.load_into(exporters.build_ssd300(), exporters.read_state_dict(wrong), str(wrong))
    assert main(["models", "export", "ssd_resnet", "-o", str(tmp_path / "x.onnx"), "--weights", "DEFAULT"]) == 2
    assert main(["models", "export", "ssd_resnet", "-o", str(tmp_path / "x.txt")]) == 2


# ---------------------------------------------------------------------------------------------- retinanet


# The session fixture `retinanet_onnx` (tests/conftest.py) is the one retinanet export of the test session:
# exporters.export_retinanet with the default random weights.


@pytest.fixture(scope="module")
def retina_session(retinanet_onnx):
    return make_session(retinanet_onnx, device="cpu")


def test_retinanet_export_names_and_dynamic_shapes(retinanet_onnx):
    m = onnx.load(str(retinanet_onnx))
    assert m.ir_version <= 13
    assert [(i.name, dims(i)) for i in m.graph.input] == [("input", [3, "height", "width"])]
    outs = {o.name: (dims(o), o.type.tensor_type.elem_type) for o in m.graph.output}
    assert outs == {"boxes": (["detections", 4], onnx.TensorProto.FLOAT),
                    "scores": (["detections"], onnx.TensorProto.FLOAT),
                    "labels": (["detections"], onnx.TensorProto.INT64)}
    names = {n.name for n in m.graph.node}
    assert "/backbone/body/layer1/layer1.0/conv1/Conv" in names
    ops = [n.op_type for n in m.graph.node]
    assert "Resize" in ops and "TopK" in ops  # transform and post-processing are inside the graph
    assert "Identity" not in ops  # trained-like statistics and biases: no shared zero tensors
    assert resolve_model(str(retinanet_onnx))[1].name == "retinanet"


def test_retinanet_runs_on_a_real_photo_of_another_size(retina_session):
    fam = get_family("retinanet")
    img = cv2.imread(str(IMAGES_DIR / "astronaut.jpg"))  # 512x512: not the 240x960 the export traced
    feeds, meta = fam.preprocess(img)
    boxes, scores, labels = retina_session.run(feeds)
    assert boxes.shape == (len(scores), 4) and labels.shape == scores.shape
    assert boxes.dtype == np.float32 and labels.dtype == np.int64
    assert (boxes.min() >= 0 and boxes.max() <= 512) if len(boxes) else True  # mapped back to the input size
    dets = fam.postprocess({"boxes": boxes, "scores": scores, "labels": labels}, meta, 0.0)
    assert all(d.label in fam.labels for d in dets)


def test_retinanet_onnx_equals_torch(retinanet_onnx):
    """Random weights give no detection above the graph's 0.05 score floor, so compare the classification
    logits of the first pyramid level (after the in-graph resize and normalisation) and the final outputs."""
    m = onnx.load(str(retinanet_onnx))
    conv = next(n for n in m.graph.node if n.name == "/head/classification_head/cls_logits/Conv")
    m.graph.output.append(onnx.helper.make_tensor_value_info(conv.output[0], onnx.TensorProto.FLOAT, None))
    sess = make_session(m, device="cpu")
    # A wide strip of a real photo: the graph's transform scales it to ~150x1333 (cheap on 2 cores).
    strip = cv2.imread(str(IMAGES_DIR / "kite.jpg"))[480:630]
    feeds, _ = get_family("retinanet").preprocess(strip)
    boxes, scores, labels, logits = sess.run(feeds)
    model, _ = exporters.build_retinanet(None)
    seen = []
    model.head.classification_head.cls_logits.register_forward_hook(lambda mod, i, o: seen.append(o.numpy()))
    with torch.no_grad():
        ref = model([torch.from_numpy(feeds["input"])])[0]
    assert logits.shape == seen[0].shape and logits.shape[1] == 9 * 91  # 9 anchors x 91 classes
    np.testing.assert_allclose(logits, seen[0], atol=1e-3 * float(np.abs(seen[0]).max()))
    assert len(boxes) == len(ref["boxes"])
    np.testing.assert_allclose(scores, ref["scores"].numpy(), atol=1e-4)


def test_retinanet_weights_file_is_loaded(tmp_path):
    model, _ = exporters.build_retinanet(None)
    state = model.state_dict()
    state["head.classification_head.cls_logits.bias"] = state["head.classification_head.cls_logits.bias"] + 3.0
    path = tmp_path / "retina_weights.pt"
    torch.save({"state_dict": state}, path)
    loaded, note = exporters.build_retinanet(path)
    assert note == "state dict retina_weights.pt"
    torch.testing.assert_close(loaded.head.classification_head.cls_logits.bias,
                               state["head.classification_head.cls_logits.bias"])
    assert main(["models", "export", "retinanet", "-o", str(tmp_path / "r.onnx"),
                 "--weights", str(tmp_path / "missing.pt")]) == 2


def test_retinanet_default_weights_fail_clearly_without_network(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # empty hub cache
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens: no download even where network exists
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    rc = main(["models", "export", "retinanet", "-o", str(tmp_path / "r.onnx"), "--weights", "DEFAULT"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]  # (torch.hub may announce the download first)
    assert last.startswith("splitinfer models: error: cannot fetch torchvision's RetinaNet weights")
    assert "--weights FILE" in last
    assert not (tmp_path / "r.onnx").exists()


def test_retinanet_weights_file_must_fit(tmp_path):
    wrong = tmp_path / "ssd_as_retina.pt"
    torch.save(exporters.build_ssd300().state_dict(), wrong)
    with pytest.raises(UserError, match="ssd_as_retina.pt: does not fit this model"):
        exporters.build_retinanet(wrong)
