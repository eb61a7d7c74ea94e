"""SSD300 with ResNet-50 backbone (NVIDIA DeepLearningExamples layout), as exported by common/models/export.py.

Input `input` [1,3,300,300]: RGB scaled to [0,1] and normalised with ImageNet mean/std. Outputs `output1`
[1,4,8732] box offsets relative to the standard SSD300 COCO default boxes (encoded with scale_xy 0.1,
scale_wh 0.2) and `output2` [1,81,8732] class logits (0 = background, 1..80 = COCO-80 in order).
Decoding follows NVIDIA's Encoder: softmax over classes, per-class NMS 0.5, best 200 kept.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

from splitinfer.common.core.detections import Detection, batched_nms
from splitinfer.common.core.errors import UserError
from splitinfer.common.families import Family, check_image, require_outputs
from splitinfer.common.core.labels import COCO80_NAMES

SIZE = 300
FEAT_SIZE = (38, 19, 10, 5, 3, 1)
STEPS = (8, 16, 32, 64, 100, 300)
SCALES = (21, 45, 99, 153, 207, 261, 315)
ASPECT_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
SCALE_XY = 0.1
SCALE_WH = 0.2
MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)
MAX_LOG_WH = float(np.log(1000.0 / 16))  # exp() guard as in torchvision's BoxCoder; only absurd offsets hit it


@lru_cache(maxsize=1)
def default_boxes() -> np.ndarray:
    """The 8732 SSD300 COCO default boxes [cx, cy, w, h] in [0,1], in the order of the network's outputs
    (per feature map: per box shape, then row-major cells), as NVIDIA's DefaultBoxes builds them."""
    boxes = []
    for idx, sfeat in enumerate(FEAT_SIZE):
        fk = SIZE / STEPS[idx]
        sk1 = SCALES[idx] / SIZE
        sk2 = SCALES[idx + 1] / SIZE
        sk3 = np.sqrt(sk1 * sk2)
        sizes = [(sk1, sk1), (sk3, sk3)]
        for alpha in ASPECT_RATIOS[idx]:
            w, h = sk1 * np.sqrt(alpha), sk1 / np.sqrt(alpha)
            sizes += [(w, h), (h, w)]
        for w, h in sizes:
            for i, j in itertools.product(range(sfeat), repeat=2):
                boxes.append(((j + 0.5) / fk, (i + 0.5) / fk, w, h))
    return np.clip(np.asarray(boxes, dtype=np.float64), 0, 1)


def decode_boxes(loc: np.ndarray, dboxes: np.ndarray | None = None) -> np.ndarray:
    """Offsets [8732,4] (x, y, w, h encodings) -> boxes [8732,4] x1y1x2y2 in [0,1] image units."""
    d = default_boxes() if dboxes is None else dboxes
    loc = np.asarray(loc, dtype=np.float64)
    cxcy = loc[:, :2] * SCALE_XY * d[:, 2:] + d[:, :2]
    wh = np.exp(np.minimum(loc[:, 2:] * SCALE_WH, MAX_LOG_WH)) * d[:, 2:]
    return np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class SSDResNet(Family):
    name = "ssd_resnet"
    labels = COCO80_NAMES
    input_size = (SIZE, SIZE)
    input_names = ("input",)
    output_names = ("output1", "output2")
    score_threshold = 0.3
    iou_threshold = 0.5
    max_detections = 200
    candidate_threshold = 0.05  # NVIDIA's decoder drops scores below this before NMS
    description = "SSD300 ResNet-50 (NVIDIA DeepLearningExamples), exported by `splitinfer models export`"

    def preprocess(self, image_bgr):
        import cv2

        img = check_image(image_bgr)
        h, w = img.shape[:2]
        x = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)[:, :, ::-1].astype(np.float32) / 255.0
        x = (x - MEAN_RGB) / STD_RGB
        return {"input": np.ascontiguousarray(x.transpose(2, 0, 1)[None])}, {"width": w, "height": h}

    def postprocess(self, outputs, meta, score_threshold=None):
        require_outputs(self.name, outputs, self.output_names)
        loc = np.asarray(outputs["output1"])
        conf = np.asarray(outputs["output2"])
        n = default_boxes().shape[0]
        if loc.shape != (1, 4, n) or conf.shape != (1, len(self.labels) + 1, n):
            raise UserError(f"ssd_resnet post-processing expects output1 [1,4,{n}] and output2 [1,81,{n}], "
                            f"got {list(loc.shape)} and {list(conf.shape)}")
        thr = self.score_threshold if score_threshold is None else float(score_threshold)
        boxes = decode_boxes(loc[0].T)
        probs = softmax(conf[0].T.astype(np.float64), axis=1)[:, 1:]  # drop background
        rows, cls = np.nonzero(probs > max(thr, self.candidate_threshold))
        if rows.size == 0:
            return []
        scores = probs[rows, cls]
        # NVIDIA's decoder keeps the best 200 candidates of each class before NMS.
        order = np.lexsort((-scores, cls))
        first = np.searchsorted(cls[order], cls[order], side="left")
        sel = order[np.arange(order.size) - first < self.max_detections]
        rows, cls, scores = rows[sel], cls[sel], scores[sel]
        keep = batched_nms(boxes[rows], scores, cls, self.iou_threshold)[: self.max_detections]
        b = np.clip(boxes[rows[keep]], 0, 1) * [meta["width"], meta["height"], meta["width"], meta["height"]]
        return [Detection(self.labels[int(cls[k])], *map(float, bb), float(scores[k])) for k, bb in zip(keep, b)]


FAMILY = SSDResNet()
