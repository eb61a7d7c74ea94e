"""The `raw` family: feed any image model, read no detections (sweeps and studies report fidelity metrics).

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
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class RawInput(Family):
    """Image -> the model's image input; post-processing yields no detections."""

    name = NAME
    detects = False
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

    def configure(self, info: dict, model_path=None) -> "RawInput":
        """Set up for the model's image input (its name and size); as it is without a model."""
        if model_path is None:
            return self
        from splitinfer.common.core.onnx_io import load_model

        return for_model(load_model(model_path), model_path)


FAMILY = RawInput()


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
