"""The TR's RetinaNet export (`splitinfer models export retinanet --variant tr`): torchvision's RetinaNet v2
with its transform and post-processing in the graph, fed a batch `input_images` [bs,3,h,w].

Same pre- and post-processing as `retinanet` (RGB in [0,1]; boxes in input pixels, COCO category ids), with
a batch axis on the input. The outputs keep the exporter's numeric names, which change with the torch
version (the TR's 2734/2712/2713, 2742/2720/2721 with torch 2.x), so they are told apart by shape and type:
boxes [N,4], scores [N] float, labels [N] integer.
"""

from __future__ import annotations

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.common.families.retinanet import RetinaNet


class RetinaNetTR(RetinaNet):
    name = "retinanet_tr"
    input_names = ("input_images",)
    output_names = ()  # numeric, version-dependent: see roles_of
    description = "the TR's retinanet.onnx: torchvision retinanet_resnet50_fpn_v2, input_images [bs,3,h,w]"

    def preprocess(self, image_bgr):
        feeds, meta = super().preprocess(image_bgr)
        return {"input_images": feeds["input"][None]}, meta

    def postprocess(self, outputs, meta, score_threshold=None):
        return super().postprocess(roles_of(outputs), meta, score_threshold)


def roles_of(outputs: dict) -> dict:
    """{'boxes', 'scores', 'labels'} from the three outputs, by shape and element type."""
    if {"boxes", "scores", "labels"} <= set(outputs):
        return outputs
    roles = {}
    for name, value in outputs.items():
        a = np.asarray(value)
        role = ("boxes" if a.ndim == 2 and a.shape[-1] == 4 else
                "labels" if a.ndim == 1 and a.dtype.kind in "iu" else
                "scores" if a.ndim == 1 and a.dtype.kind == "f" else None)
        if role is None or role in roles:
            raise UserError(f"retinanet_tr: cannot tell output {name!r} (shape {a.shape}, {a.dtype}) apart; "
                            "expected boxes [N,4], scores [N] float, labels [N] integer")
        roles[role] = a
    if set(roles) != {"boxes", "scores", "labels"}:
        raise UserError(f"retinanet_tr: outputs {sorted(outputs)} are not boxes, scores and labels")
    return roles


FAMILY = RetinaNetTR()
