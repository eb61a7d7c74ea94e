"""torchvision RetinaNet ResNet-50 FPN with its transform and post-processing inside the graph.

The graph resizes and normalises by itself and maps boxes back to the size it was given, so
pre-processing is only BGR -> RGB in [0,1], CHW (`input` [3,H,W], any H and W), and post-processing is a
score filter plus the COCO category-id -> name map (`labels` are ids 1..90; the gaps are not classes).
"""

from __future__ import annotations

import numpy as np

from splitinfer.common.core.detections import Detection
from splitinfer.common.core.errors import UserError
from splitinfer.common.families import Family, check_image, require_outputs
from splitinfer.common.core.labels import CATEGORY_ID_TO_NAME, COCO80_NAMES


class RetinaNet(Family):
    name = "retinanet"
    labels = COCO80_NAMES
    input_size = None  # dynamic: the graph resizes (shorter side 800, longer at most 1333)
    input_names = ("input",)
    output_names = ("boxes", "scores", "labels")
    score_threshold = 0.3
    description = "torchvision retinanet_resnet50_fpn, exported by `splitinfer models export`"

    def preprocess(self, image_bgr):
        img = check_image(image_bgr)
        h, w = img.shape[:2]
        x = img[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0
        return {"input": np.ascontiguousarray(x)}, {"width": w, "height": h}

    def postprocess(self, outputs, meta, score_threshold=None):
        require_outputs(self.name, outputs, self.output_names)
        boxes = np.asarray(outputs["boxes"], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(outputs["scores"], dtype=np.float64).reshape(-1)
        ids = np.asarray(outputs["labels"]).reshape(-1)
        if not (len(boxes) == len(scores) == len(ids)):
            raise UserError(f"retinanet outputs disagree in length: boxes {len(boxes)}, scores {len(scores)}, "
                            f"labels {len(ids)}")
        thr = self.score_threshold if score_threshold is None else float(score_threshold)
        w, h = meta["width"], meta["height"]
        dets = []
        for i in np.argsort(-scores, kind="stable"):
            name = CATEGORY_ID_TO_NAME.get(int(ids[i]))
            if scores[i] < thr or name is None:  # ids in COCO's gaps (and 0) name no class
                continue
            x1, y1, x2, y2 = np.clip(boxes[i], 0, [w, h, w, h])
            dets.append(Detection(name, float(x1), float(y1), float(x2), float(y2), float(scores[i])))
        return dets


FAMILY = RetinaNet()
