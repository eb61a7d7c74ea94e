"""YOLOv8n and YOLO11n built from Ultralytics' model YAMLs (random weights, seed 0): every rank splits and
verifies bit for bit, and the yolo family decodes their `[1, 4+C, N]` output like a per-column reference.

Ultralytics is AGPL-3.0 and pins its own torch/numpy, so it is not a dependency: it lives in its own virtual
environment, `$SPLITINFER_ULTRALYTICS_PYTHON` (default `.venv-ultra/bin/python` in the checkout, which
scripts/setup_ultralytics.sh makes and scripts/setup.sh calls). Without it these tests skip and say so. Exports (320x320, opset 13, no weights downloaded) are cached in
`$SPLITINFER_CACHE/ultralytics` (else ~/.cache/splitinfer/ultralytics).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from splitinfer.common.assets import IMAGES_DIR
from splitinfer.common.core.images import read_image
from splitinfer.common.families import family_for_model, yolo

SIZE = 320
REPO = Path(__file__).resolve().parents[2]
EXPORT = """
import sys, shutil, torch
from ultralytics import YOLO
torch.manual_seed(0)
name, out = sys.argv[1], sys.argv[2]
y = YOLO(name + ".yaml")
head = y.model.model[-1]
with torch.no_grad():  # Ultralytics' init gives every cell the same scores: random last convs of the heads
    for branch in (*head.cv2, *head.cv3):
        branch[-1].weight.normal_(0, 0.2)
        branch[-1].bias.normal_(-1, 0.5)
path = y.export(format="onnx", imgsz={size}, opset=13, simplify=False, dynamic=False)
shutil.move(path, out)
""".format(size=SIZE)
FULL = os.environ.get("SPLITINFER_EVERY_RANK") == "1"  # every rank (3-4 min per model on 2 cores)


def _cache() -> Path:
    if os.environ.get("SPLITINFER_CACHE"):
        return Path(os.environ["SPLITINFER_CACHE"]) / "ultralytics"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "splitinfer" / "ultralytics"


@pytest.fixture(scope="module", params=["yolov8n", "yolo11n"])
def exported(request, tmp_path_factory) -> Path:
    out = _cache() / f"{request.param}_{SIZE}_seed0.onnx"
    if out.is_file():
        return out
    python = os.environ.get("SPLITINFER_ULTRALYTICS_PYTHON", str(REPO / ".venv-ultra" / "bin" / "python"))
    if not Path(python).is_file():
        pytest.skip(f"no Ultralytics environment at {python} (run scripts/setup_ultralytics.sh, or set "
                    "SPLITINFER_ULTRALYTICS_PYTHON)")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = tmp_path_factory.mktemp(request.param)
    r = subprocess.run([python, "-c", EXPORT, request.param, str(out)], cwd=work, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "YOLO_OFFLINE": "1"})
    assert r.returncode == 0 and out.is_file(), r.stderr[-2000:]
    return out


def test_ranks_split_and_verify_bit_exactly(exported):
    """Every 8th rank and the widest cut; every rank with SPLITINFER_EVERY_RANK=1 (measured on 2 cores: all 313
    ranks of yolov8n bit-exact in 208 s, all 428 of yolo11n in 186 s; 7 tensors cross at the widest cut)."""
    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.split.graph import SplitGraph, reference_outputs, verify_split

    model = load_model(exported)
    graph = SplitGraph(model)
    fam = family_for_model(exported, "yolo")
    feeds, _ = fam.preprocess(read_image(IMAGES_DIR / "dog.jpg"))
    reference = reference_outputs(model, feeds)
    branches = [len(s) for s in graph.all_crossing_sets()]
    every = [r for r in range(1, graph.num_nodes) if branches[r] > 0]
    widest = max(every, key=lambda r: (branches[r], -r))
    ranks = every if FULL else sorted(set(every[::8]) | {widest})
    bad = [r for r in ranks
           if not verify_split(model, graph.plan(rank=r), feeds=feeds, graph=graph, reference=reference).ok]
    assert len(every) > 200 and not bad, bad
    assert max(branches) == 7  # the neck's concatenations keep several tensors alive


def _reference_decode(raw: np.ndarray, nc: int):
    """Per column n of [1, 4+C, N]: box cx cy w h -> x1 y1 x2 y2 and the C class scores, one by one."""
    boxes, scores = [], []
    for n in range(raw.shape[2]):
        cx, cy, w, h = (float(v) for v in raw[0, :4, n])
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        scores.append([float(v) for v in raw[0, 4:4 + nc, n]])
    return np.array(boxes), np.array(scores)


def test_the_yolo_family_reads_the_v8_layout(exported):
    import onnxruntime as ort

    fam = family_for_model(exported, "yolo")
    assert fam.layout == "v8" and fam.input_size == (SIZE, SIZE) and fam.input_names == ("images",)
    feeds, meta = fam.preprocess(read_image(IMAGES_DIR / "dog.jpg"))
    (raw,) = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert raw.shape == (1, 84, (SIZE // 8) ** 2 + (SIZE // 16) ** 2 + (SIZE // 32) ** 2)
    boxes, scores = fam.raw_decode({"output0": raw})
    want_boxes, want_scores = _reference_decode(raw, 80)
    np.testing.assert_allclose(boxes, want_boxes, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(scores, want_scores)
    thr = float(np.quantile(want_scores.max(axis=1), 0.5))  # random weights: the better half of the cells
    dets = fam.postprocess({"output0": raw}, meta, thr)
    assert dets
    inv = fam.pre.to_image(want_boxes, {"input_width": SIZE, "input_height": SIZE, **meta})
    for d in dets:  # each detection is one column's box and best-class score, mapped back through the letterbox
        col = int(np.argmin(np.abs(inv - np.array(d.box)).sum(axis=1)))
        assert np.allclose(inv[col], d.box, atol=1e-3) and fam.labels.index(d.label) in np.flatnonzero(
            np.isclose(want_scores[col], d.score)), d
    assert yolo.detect_layout([raw.shape], 80) == "v8"
