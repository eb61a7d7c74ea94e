"""The `raw` pseudo-family: feed any image model, read no detections (fidelity metrics only).

Why: a sweep or study on a model without a family (a torchvision classifier of the splitability zoo,
the user's own ONNX model) still needs frames turned into an input tensor, but has no boxes to score;
its rows report the fidelity of Part II's outputs (`fidelity.py`) instead of mAP.

Defined terms: the model's *image input* is its first graph input of rank 4 (N, C, H, W) with C = 3;
frames are resized to its H x W (`DEFAULT_HW` where those are symbolic), converted BGR -> RGB, scaled to
[0, 1] and normalised with the ImageNet mean and standard deviation (torchvision's convention), as float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.common.families import Family, check_image

NAME = "raw"
DEFAULT_HW = (224, 224)
ZOO_PREFIX = "zoo:"
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class RawInput(Family):
    """Image -> the model's image input; post-processing yields no detections."""

    name = NAME
    description = "any image model: ImageNet-normalised RGB input, no detections (fidelity only)"

    def __init__(self, input_name: str = "input", hw: tuple[int, int] = DEFAULT_HW):
        self.input_names = (input_name,)
        self.hw = (int(hw[0]), int(hw[1]))
        self.input_size = (self.hw[1], self.hw[0])

    def preprocess(self, image_bgr: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
        import cv2

        img = check_image(image_bgr)
        img = cv2.resize(img, (self.hw[1], self.hw[0]), interpolation=cv2.INTER_LINEAR)
        x = (img[:, :, ::-1].astype(np.float32) / 255.0 - MEAN) / STD
        return {self.input_names[0]: np.ascontiguousarray(x.transpose(2, 0, 1)[None])}, {}

    def postprocess(self, outputs, meta, score_threshold=None) -> list:
        return []


def for_model(model, path: Path | str = "model") -> RawInput:
    """The raw family for an onnx.ModelProto: its image input's name and size (or a clear error)."""
    init = {t.name for t in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in init:
            continue
        dims = inp.type.tensor_type.shape.dim
        if len(dims) != 4:
            continue
        c = dims[1].dim_value if dims[1].HasField("dim_value") else 3
        if c != 3:
            continue
        hw = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims[2:])
        return RawInput(inp.name, hw if None not in hw else DEFAULT_HW)
    raise UserError(f"{path}: no image input (rank-4 N x 3 x H x W) to feed frames to; "
                    f"inputs: {[i.name for i in model.graph.input if i.name not in init]}")


def family_for(name: str, model_path=None) -> Family:
    """A task's family by name, `raw` included (post-processing only: no model needed), set up by the
    model's model.json when `model_path` is given (e.g. a YOLO's anchors and input size)."""
    if name == NAME:
        return RawInput()
    from splitinfer.common.families import family_for_model, get_family

    return family_for_model(model_path, name) if model_path else get_family(name)


def resolve_model_or_raw(spec: str, family: str | None):
    """(ONNX path, family) like `resolve_model`, with `family='raw'` or a model whose family is unknown
    falling back to the raw pseudo-family. `zoo:NAME` is a model of the splitability zoo (`zoo.py`:
    torchvision classifiers and detectors), exported into its cache on first use."""
    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.families import resolve_model

    if spec.startswith(ZOO_PREFIX):
        from splitinfer.common.models import zoo

        spec = str(zoo.model_path(spec[len(ZOO_PREFIX):]))

    if family == NAME:
        path = _model_file(spec)
        return path, for_model(load_model(path), path)
    try:
        return resolve_model(spec, family)
    except UserError as exc:
        if family is None and "family unknown" in str(exc):
            path = _model_file(spec)
            return path, for_model(load_model(path), path)
        raise


def _model_file(spec: str) -> Path:
    """An .onnx file, a model folder (model.onnx inside) or a bundled model id."""
    from splitinfer.common.assets import MODELS_DIR

    p = Path(spec)
    if p.is_dir():
        p = p / "model.onnx"
    elif not p.exists() and "/" not in spec:
        p = MODELS_DIR / spec / "model.onnx"
    if not p.is_file():
        raise UserError(f"model not found: {spec} (not an .onnx file, a model folder or a bundled model id)")
    return p
