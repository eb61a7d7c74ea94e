"""The darknet converter on the layers YOLOv3-tiny lacks (v4-style): mish, swish, shortcut, route groups,
SPP's size-5 stride-1 maxpool, a stride-2 convolution, a convolution without batch norm, scale_x_y; random
weights laid out as darknet reads them; the ONNX graph against the numpy darknet forward pass, and the
darknet decoder against a per-cell loop."""

from __future__ import annotations

import numpy as np
import pytest

from splitinfer.common.core.errors import UserError
from splitinfer.common.families import yolo
from splitinfer.common.models.darknet import convert, import_darknet
from tests.darknet_fixtures import darknet_forward

CFG = """[net]
width=64
height=64
channels=3
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=mish
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=swish
[shortcut]
from=-2
activation=linear
[route]
layers=-1
groups=2
group_id=1
[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
pad=1
activation=leaky
[maxpool]
size=5
stride=1
[route]
layers=-1,2
[maxpool]
size=2
stride=2
[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear
[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3
scale_x_y=1.05
"""
CONVS = [(3, 8, 3, True), (8, 8, 3, True), (4, 8, 1, True), (16, 21, 1, False)]  # in, out, k, batch norm


def _weights(path, rng):
    values = []
    for cin, f, k, bn in CONVS:
        values.append(rng.normal(0, 0.1, f))  # biases
        if bn:
            values += [rng.uniform(0.5, 1.5, f), rng.normal(0, 0.1, f), rng.uniform(0.5, 2.0, f)]
        values.append(rng.normal(0, 0.3, f * cin * k * k))
    header = np.array([0, 2, 0], "<i4").tobytes() + np.array([0], "<i8").tobytes()
    path.write_bytes(header + np.concatenate(values).astype("<f4").tobytes())


@pytest.fixture
def v4ish(tmp_path):
    (tmp_path / "v4ish.cfg").write_text(CFG)
    _weights(tmp_path / "v4ish.weights", np.random.default_rng(0))
    return tmp_path / "v4ish.cfg", tmp_path / "v4ish.weights"


def test_v4_layers_compute_what_darknet_computes(v4ish, tmp_path):
    import onnxruntime as ort

    cfg, weights = v4ish
    (tmp_path / "names").write_text("cat\ndog\n")
    out = import_darknet(cfg, weights, tmp_path / "m", tmp_path / "names")
    x = np.random.default_rng(1).uniform(0, 1, (1, 3, 64, 64)).astype(np.float32)
    got = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    (want,) = darknet_forward(cfg, weights, x)
    assert got[0].shape == want.shape == (1, 21, 16, 16)
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4)
    assert (out / "labels.txt").read_text() == "cat\ndog\n"


def test_darknet_decoder_matches_a_per_cell_loop():
    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, (1, 21, 4, 4))
    head = {"output": "y", "anchors": [[10, 14], [23, 27], [37, 58]], "scale_x_y": 1.05}
    boxes, obj, cls = yolo.decode_darknet([a], [head], 2, (64, 64))
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    i = 0
    for k, (aw, ah) in enumerate(head["anchors"]):
        for gy in range(4):
            for gx in range(4):
                t = a[0, k * 7:(k + 1) * 7, gy, gx]
                cx = (gx + sig(t[0]) * 1.05 - 0.025) * 16
                cy = (gy + sig(t[1]) * 1.05 - 0.025) * 16
                np.testing.assert_allclose(boxes[i], [cx, cy, np.exp(t[2]) * aw, np.exp(t[3]) * ah], rtol=1e-9)
                np.testing.assert_allclose([obj[i], *cls[i]], sig(t[4:7]), rtol=1e-9)
                i += 1


@pytest.mark.parametrize("edit, match", [
    (("activation=mish", "activation=gelu"), "activation 'gelu' not supported"),
    (("[shortcut]", "[sam]"), r"layer \[sam\] not supported"),
    (("layers=-1,2", "layers=-1,40"), "must name earlier sections"),
    (("mask=0,1,2", "mask=0,1"), "does not fit"),
])
def test_cfg_errors_name_the_line(v4ish, tmp_path, edit, match):
    cfg, weights = v4ish
    bad = tmp_path / "bad.cfg"
    bad.write_text(CFG.replace(*edit))
    with pytest.raises(UserError, match=match) as e:
        convert(bad, weights)
    assert "bad.cfg" in str(e.value)
