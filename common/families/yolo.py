"""YOLO detectors, one family whose decoders read four output layouts: darknet v3/v4, v5, v8 and v11.

Defined terms: *layout*, how the raw outputs hold the boxes:
  `darknet` (v3, v4, their tiny forms): one output per scale [1, A*(5+C), H, W], per anchor the logits of
  x, y, w, h, objectness and C classes; anchors per scale in input pixels (model.json `heads`, else the
  published COCO anchors: three scales = YOLOv3's, two = YOLOv3-tiny's);
  `v5`: one concatenated output [1, N, 5+C], cx cy w h in input pixels, objectness, class probabilities;
  `v8` (v8 and v11, anchor-free): one output [1, 4+C, N], cx cy w h in input pixels, class probabilities.
The layout is named in model.json (`"yolo": {"layout": ...}`) or found from the shapes of the outputs.
Pre-processing is a letterbox (darknet: grey 127.5, Ultralytics: 114) of RGB in 0-1; NMS is per class
through OpenCV (`core.detections.batched_nms`), as every family here does it.
The family configured for one model (`configure`) reads model.json's `yolo`, `preprocess`, `labels`, `nms`
and the graph's input and output shapes; the plain `yolo` family is Ultralytics' 640x640 COCO-80 export.
"""

from __future__ import annotations

import copy

import numpy as np

from splitinfer.common.core.detections import Detection, batched_nms
from splitinfer.common.core.errors import UserError
from splitinfer.common.core.labels import COCO80_NAMES
from splitinfer.common.families import Family
from splitinfer.common.families._geometry import Preprocess, model_info, onnx_io, read_labels

LAYOUTS = ("darknet", "v5", "v8")
LAYOUT_ALIASES = {"v3": "darknet", "v4": "darknet", "yolov3": "darknet", "yolov4": "darknet", "v11": "v8",
                  "yolov5": "v5", "yolov8": "v8", "yolo11": "v8", "yolov11": "v8"}
V3_ANCHORS = {8: [[10, 13], [16, 30], [33, 23]], 16: [[30, 61], [62, 45], [59, 119]],
              32: [[116, 90], [156, 198], [373, 326]]}
V3_TINY_ANCHORS = {16: [[10, 14], [23, 27], [37, 58]], 32: [[81, 82], [135, 169], [344, 319]]}
MAX_CANDIDATES = 30000  # (box, class) pairs entering NMS, as Ultralytics' max_nms


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # no overflow warnings for large |x|


def cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    return np.concatenate([b[:, :2] - b[:, 2:4] / 2, b[:, :2] + b[:, 2:4] / 2], axis=1)


def detect_layout(shapes: list[tuple[int, ...]], num_classes: int | None) -> str:
    """The layout of raw outputs with these shapes (see the module docstring); UserError when none fits."""
    if shapes and all(len(s) == 4 for s in shapes):
        return "darknet"
    three = [s for s in shapes if len(s) == 3]
    if len(three) == 1:
        _, a, b = three[0]
        if num_classes is not None and a == 4 + num_classes and b != 5 + num_classes:
            return "v8"
        if num_classes is not None and b == 5 + num_classes:
            return "v5"
        return "v8" if a < b else "v5"
    raise UserError(f"yolo: cannot tell the output layout from shapes {[list(s) for s in shapes]} "
                    f"(expected 4-D outputs per scale, [1,N,5+C] or [1,4+C,N]); name it in model.json "
                    f"as \"yolo\": {{\"layout\": \"darknet|v5|v8\"}}")


def decode_darknet(arrays: list[np.ndarray], heads: list[dict], num_classes: int, size: tuple[int, int]):
    """[N,4] cxcywh in input pixels, objectness [N], class probabilities [N,C] from per-scale outputs."""
    iw, ih = size
    boxes, obj, cls = [], [], []
    for a, head in zip(arrays, heads):
        anchors = np.asarray(head["anchors"], dtype=np.float64).reshape(-1, 2)
        na, (h, w) = len(anchors), a.shape[2:]
        if a.shape[0] != 1 or a.shape[1] != na * (5 + num_classes):
            raise UserError(f"yolo darknet output {head.get('output', '?')}: shape {list(a.shape)} is not "
                            f"[1, {na}*(5+{num_classes}), H, W]")
        p = a.reshape(na, 5 + num_classes, h, w).transpose(0, 2, 3, 1).astype(np.float64)  # [A,H,W,5+C]
        s = float(head.get("scale_x_y", 1.0))
        gy, gx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        cx = (gx + sigmoid(p[..., 0]) * s - (s - 1) / 2) * (iw / w)
        cy = (gy + sigmoid(p[..., 1]) * s - (s - 1) / 2) * (ih / h)
        bw = np.exp(np.minimum(p[..., 2], 30)) * anchors[:, 0, None, None]
        bh = np.exp(np.minimum(p[..., 3], 30)) * anchors[:, 1, None, None]
        boxes.append(np.stack([cx, cy, bw, bh], axis=-1).reshape(-1, 4))
        obj.append(sigmoid(p[..., 4]).reshape(-1))
        cls.append(sigmoid(p[..., 5:]).reshape(-1, num_classes))
    return np.concatenate(boxes), np.concatenate(obj), np.concatenate(cls)


def decode(outputs: dict, layout: str, num_classes: int, size, heads=None):
    """(boxes [N,4] x1y1x2y2 in input pixels, scores [N,C]) of raw outputs in one layout."""
    if layout == "darknet":
        names = [h["output"] for h in heads]
        missing = [n for n in names if n not in outputs]
        if missing:
            raise UserError(f"yolo post-processing needs outputs {names}, missing {missing} (got {sorted(outputs)})")
        b, obj, cls = decode_darknet([np.asarray(outputs[n]) for n in names], heads, num_classes, size)
        return cxcywh_to_xyxy(b), cls * obj[:, None]
    arrays = [np.asarray(v) for v in outputs.values() if np.asarray(v).ndim == 3]
    if len(arrays) != 1:
        raise UserError(f"yolo {layout} post-processing needs one 3-D output, got shapes "
                        f"{[list(np.asarray(v).shape) for v in outputs.values()]}")
    a = arrays[0][0].astype(np.float64)
    if layout == "v8":
        if a.shape[0] != 4 + num_classes:
            raise UserError(f"yolo v8 output {list(arrays[0].shape)} is not [1, 4+{num_classes}, N]")
        a = a.T
        return cxcywh_to_xyxy(a[:, :4]), a[:, 4:]
    if a.shape[1] != 5 + num_classes:
        raise UserError(f"yolo v5 output {list(arrays[0].shape)} is not [1, N, 5+{num_classes}]")
    return cxcywh_to_xyxy(a[:, :4]), a[:, 5:] * a[:, 4:5]


def select(boxes, scores, threshold: float, iou: float, max_detections: int):
    """Per-class NMS of every (box, class) pair scoring above `threshold`: (boxes, scores, classes) kept."""
    rows, cls = np.nonzero(scores > threshold)
    s = scores[rows, cls]
    if s.size > MAX_CANDIDATES:
        top = np.argsort(-s, kind="stable")[:MAX_CANDIDATES]
        rows, cls, s = rows[top], cls[top], s[top]
    if s.size == 0:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)
    keep = batched_nms(boxes[rows], s, cls, iou)[:max_detections]
    return boxes[rows[keep]], s[keep], cls[keep]


def default_heads(output_shapes: dict[str, list], size) -> list[dict]:
    """Heads of a darknet graph without `heads` in model.json: the published COCO anchors by stride."""
    four = {n: s for n, s in output_shapes.items() if len(s) == 4 and s[3]}
    table = V3_ANCHORS if len(four) == 3 else V3_TINY_ANCHORS
    heads = []
    for name, shape in four.items():
        stride = int(round(size[0] / shape[3]))
        if stride not in table:
            raise UserError(f"yolo: no default anchors for output {name} (stride {stride}); give \"heads\" "
                            f"with anchors in model.json")
        heads.append({"output": name, "anchors": table[stride]})
    return heads


class Yolo(Family):
    name = "yolo"
    labels = COCO80_NAMES
    input_size = (640, 640)
    input_names = ("images",)
    output_names = ("output0",)
    score_threshold = 0.25
    iou_threshold = 0.45
    max_detections = 300
    layout: str | None = None  # None: found from the outputs' shapes at each call
    heads: list | None = None
    pre = Preprocess()
    description = "YOLO darknet v3/v4, v5, v8/v11 outputs; letterbox (model.json or the graph say which)"

    def preprocess(self, image_bgr):
        return self.pre.run(image_bgr)

    def raw_decode(self, outputs):
        """(boxes [N,4] x1y1x2y2 in input pixels, scores [N,C]) of this model's raw outputs."""
        shapes = [tuple(np.asarray(v).shape) for v in outputs.values()]
        layout = self.layout or detect_layout(shapes, len(self.labels))
        heads = self.heads
        if layout == "darknet" and not heads:
            heads = default_heads({k: list(np.asarray(v).shape) for k, v in outputs.items()}, self.input_size)
        return decode(outputs, layout, len(self.labels), self.input_size, heads)

    def postprocess(self, outputs, meta, score_threshold=None):
        thr = self.score_threshold if score_threshold is None else float(score_threshold)
        boxes, scores = self.raw_decode(outputs)
        b, s, c = select(boxes, scores, thr, self.iou_threshold, self.max_detections)
        b = self.pre.to_image(b, {"input_width": self.input_size[0], "input_height": self.input_size[1], **meta})
        return [Detection(self.labels[int(k)], *map(float, bb), float(v)) for bb, v, k in zip(b, s, c)]

    def configure(self, info: dict, model_path=None) -> "Yolo":
        return configured(self, info, model_path)


def configured(base: Yolo, info: dict, model_path) -> Yolo:
    """A copy of `base` set up for one model: model.json's entries over what the graph's shapes say."""
    from pathlib import Path

    where = str(Path(model_path).with_name("model.json")) if model_path else "model.json"
    info = info if info is not None else model_info(model_path)
    cfg = dict(info.get("yolo") or {})
    fam = copy.copy(base)
    inputs, outputs = onnx_io(model_path) if model_path else ({}, {})
    fam.labels = read_labels(info.get("labels"), Path(model_path).parent if model_path else None, where)
    pre_json = dict(info.get("preprocess") or {})
    in_name = pre_json.get("input") or (next(iter(inputs)) if inputs else base.pre.input)
    shape = inputs.get(in_name) or []
    size = pre_json.get("size") or cfg.get("input_size")
    if size is None and len(shape) == 4 and shape[2] and shape[3]:
        size = [shape[3], shape[2]]
    defaults = {"input": in_name, "size": tuple(size or base.input_size)}
    if cfg.get("layout") == "darknet" or info.get("source_format") == "darknet":
        defaults["fill"] = 127.5
    fam.pre = Preprocess.from_json(pre_json, where, **defaults)
    fam.input_size, fam.input_names = tuple(fam.pre.size), (in_name,)
    if outputs:
        fam.output_names = tuple(outputs)
    layout = cfg.get("layout")
    fam.layout = LAYOUT_ALIASES.get(layout, layout) if layout else None
    if fam.layout is None and outputs:
        fam.layout = detect_layout([tuple(d or 0 for d in s) for s in outputs.values()], len(fam.labels))
    if fam.layout not in (None, *LAYOUTS):
        raise UserError(f"{where}: yolo layout {layout!r} is not one of {', '.join(LAYOUTS)} (or v3, v4, v11)")
    fam.heads = cfg.get("heads") or (default_heads(outputs, fam.input_size) if fam.layout == "darknet" and outputs
                                     else None)
    nms = info.get("nms") or {}
    fam.iou_threshold = float(nms.get("iou", base.iou_threshold))
    fam.max_detections = int(nms.get("max_detections", base.max_detections))
    fam.score_threshold = float(nms.get("score_threshold", base.score_threshold))
    return fam


FAMILY = Yolo()
