"""Any detector by declaration: an ONNX file and a model.json that says how to feed it and read it, no Python.

Why: product teams bring their own detector with its own pre- and post-processing; a family module per
detector would make them write Python inside this package. A model.json with `"family": "declared"` (or a
family object `{"name": ...}`) says it all instead:
  `preprocess`: input name, `size` [w, h], `resize` stretch|letterbox|none, `fill`, `channels` RGB|BGR,
  `layout` NCHW|NHWC, `range` 0-1|0-255, `mean`, `std` (see `_geometry.Preprocess`);
  `decoder`: either `{"family": NAME}` (that family's decoder; it reads the same model.json, e.g. `yolo`
  with its `yolo` entry) or tensors by name: `boxes` ([1,N,4] or [N,4]; `boxes_layout` "4N" for [1,4,N]),
  `box_format` xyxy|yxyx|xywh|cxcywh, `box_units` pixels|normalized (of the input), `scores` ([1,N,C];
  `scores_layout` "CN" for [1,C,N]), `scores_activation` none|sigmoid|softmax, `background_class` (a
  column dropped after the activation), `objectness` (a [1,N] tensor multiplied in);
  `nms`: `iou`, `score_threshold`, `max_detections`, `candidate_threshold`, `per_class_top_k`, `per_class`;
  `labels`: "coco80", a list, or a file beside the model, one name a line.
Defined terms: *candidate* (a (box, class) pair scoring above the threshold), NMS as every family here does
it (OpenCV's, `core.detections.batched_nms`).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from splitinfer.common.core.detections import Detection, batched_nms, nms
from splitinfer.common.core.errors import UserError
from splitinfer.common.core.labels import COCO80_NAMES
from splitinfer.common.families import Family, get_family
from splitinfer.common.families._geometry import Preprocess, model_info, onnx_io, read_labels

BOX_FORMATS = ("xyxy", "yxyx", "xywh", "cxcywh")
ACTIVATIONS = ("none", "sigmoid", "softmax")
DECODER_KEYS = {"family", "boxes", "boxes_layout", "box_format", "box_units", "scores", "scores_layout",
                "scores_activation", "background_class", "objectness"}


def to_xyxy(b: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "xyxy":
        return b
    if fmt == "yxyx":
        return b[:, [1, 0, 3, 2]]
    if fmt == "xywh":
        return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    return np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1)


def activate(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "sigmoid":
        return 0.5 * (np.tanh(0.5 * x) + 1.0)
    if kind == "softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return x


class Declared(Family):
    name = "declared"
    description = "any detector declared in its model.json (preprocess, decoder, nms, labels); no Python"
    labels = COCO80_NAMES
    input_names = ("input",)
    iou_threshold = 0.45
    max_detections = 100
    candidate_threshold = 0.0
    per_class_top_k = 0  # 0: no per-class cap before NMS
    per_class = True
    pre: Preprocess | None = None
    decoder: dict | None = None
    delegate: Family | None = None

    def preprocess(self, image_bgr):
        if self.pre is None:
            raise UserError("family declared: the model has no model.json \"preprocess\" entry (see the README's "
                            "\"Any detector by declaration\")")
        return self.pre.run(image_bgr)

    def postprocess(self, outputs, meta, score_threshold=None):
        thr = self.score_threshold if score_threshold is None else float(score_threshold)
        if self.delegate is not None:
            return self.delegate.postprocess(outputs, meta, thr)
        if self.decoder is None:
            raise UserError("family declared: the model has no model.json \"decoder\" entry")
        boxes, scores = self._tensors(outputs)
        rows, cls = np.nonzero(scores > max(thr, self.candidate_threshold))
        s = scores[rows, cls]
        if self.per_class_top_k and s.size:
            order = np.lexsort((-s, cls))
            first = np.searchsorted(cls[order], cls[order], side="left")
            sel = order[np.arange(order.size) - first < self.per_class_top_k]
            rows, cls, s = rows[sel], cls[sel], s[sel]
        if s.size == 0:
            return []
        keep = (batched_nms(boxes[rows], s, cls, self.iou_threshold) if self.per_class
                else nms(boxes[rows], s, self.iou_threshold))[: self.max_detections]
        b = self.pre.to_image(boxes[rows[keep]], {"input_width": self.input_size[0],
                                                  "input_height": self.input_size[1], **meta})
        return [Detection(self.labels[int(cls[k])], *map(float, bb), float(s[k])) for k, bb in zip(keep, b)]

    def _tensors(self, outputs):
        """(boxes [N,4] x1y1x2y2 in input pixels, scores [N,C] of the labelled classes) from named outputs."""
        d = self.decoder
        names = [d["boxes"], d["scores"], *([d["objectness"]] if d.get("objectness") else [])]
        missing = [n for n in names if n not in outputs]
        if missing:
            raise UserError(f"declared decoder needs outputs {names}, missing {missing} (got {sorted(outputs)})")
        boxes = np.asarray(outputs[d["boxes"]], dtype=np.float64)
        boxes = boxes.reshape(4, -1).T if d.get("boxes_layout") == "4N" else boxes.reshape(-1, 4)
        raw = np.asarray(outputs[d["scores"]], dtype=np.float64)
        raw = raw.reshape(raw.shape[-2], -1).T if d.get("scores_layout") == "CN" else raw.reshape(-1, raw.shape[-1])
        scores = activate(raw, d.get("scores_activation", "none"))
        if d.get("background_class") is not None:
            scores = np.delete(scores, int(d["background_class"]), axis=1)
        if d.get("objectness"):
            scores = scores * np.asarray(outputs[d["objectness"]], dtype=np.float64).reshape(-1, 1)
        if scores.shape != (len(boxes), len(self.labels)):
            raise UserError(f"declared decoder: {len(boxes)} boxes and scores {list(scores.shape)} do not fit "
                            f"{len(self.labels)} labels")
        boxes = to_xyxy(boxes, d.get("box_format", "xyxy"))
        if d.get("box_units", "pixels") == "normalized":
            boxes = boxes * np.tile(np.asarray(self.input_size, np.float64), 2)
        return boxes, scores

    def configure(self, info: dict, model_path=None) -> "Declared":
        return configured(self, info if info is not None else model_info(model_path), model_path)


def _check_decoder(d, where: str) -> dict:
    if not isinstance(d, dict):
        raise UserError(f"{where}: \"decoder\" must be an object: {{\"family\": NAME}} or "
                        f"{{\"boxes\": NAME, \"scores\": NAME, ...}}")
    extra = sorted(set(d) - DECODER_KEYS)
    if extra:
        raise UserError(f"{where}: unknown decoder keys {extra} (known: {', '.join(sorted(DECODER_KEYS))})")
    if "family" not in d and not ("boxes" in d and "scores" in d):
        raise UserError(f"{where}: the decoder names a family or both \"boxes\" and \"scores\" tensors")
    if d.get("box_format", "xyxy") not in BOX_FORMATS:
        raise UserError(f"{where}: box_format {d['box_format']!r} is not one of {', '.join(BOX_FORMATS)}")
    if d.get("scores_activation", "none") not in ACTIVATIONS:
        raise UserError(f"{where}: scores_activation {d['scores_activation']!r} is not one of "
                        f"{', '.join(ACTIVATIONS)}")
    if d.get("box_units", "pixels") not in ("pixels", "normalized"):
        raise UserError(f"{where}: box_units must be pixels or normalized, got {d['box_units']!r}")
    return d


def configured(base: Declared, info: dict, model_path) -> Declared:
    """A copy of `base` set up by one model.json (see the module docstring)."""
    where = str(Path(model_path).with_name("model.json")) if model_path else "model.json"
    fam = copy.copy(base)
    spec = info.get("family")
    fam.name = spec.get("name", base.name) if isinstance(spec, dict) else base.name
    fam.description = str(info.get("name") or base.description)
    inputs, outputs = onnx_io(model_path) if model_path else ({}, {})
    pre = dict(info.get("preprocess") or {})
    in_name = pre.get("input") or (next(iter(inputs)) if inputs else "input")
    shape = inputs.get(in_name) or []
    defaults = {"input": in_name, "resize": "stretch", "fill": 114.0}
    if len(shape) == 4 and all(shape[1:]):
        nhwc = pre.get("layout") == "NHWC"
        defaults["size"] = (shape[2], shape[1]) if nhwc else (shape[3], shape[2])
    fam.pre = Preprocess.from_json(pre, where, **defaults)
    fam.input_size = tuple(fam.pre.size) if fam.pre.size else None
    fam.input_names = (in_name,)
    fam.output_names = tuple(outputs)
    fam.labels = read_labels(info.get("labels"), Path(model_path).parent if model_path else None, where)
    nms_cfg = info.get("nms") or {}
    fam.score_threshold = float(nms_cfg.get("score_threshold", 0.3))
    fam.iou_threshold = float(nms_cfg.get("iou", base.iou_threshold))
    fam.max_detections = int(nms_cfg.get("max_detections", base.max_detections))
    fam.candidate_threshold = float(nms_cfg.get("candidate_threshold", 0.0))
    fam.per_class_top_k = int(nms_cfg.get("per_class_top_k", 0))
    fam.per_class = bool(nms_cfg.get("per_class", True))
    fam.decoder = _check_decoder(info["decoder"], where) if "decoder" in info else None
    fam.delegate = None
    if fam.decoder and "family" in fam.decoder:
        if fam.decoder["family"] == base.name:
            raise UserError(f"{where}: a declared decoder names another family, not {base.name!r}")
        fam.delegate = get_family(str(fam.decoder["family"])).configure(info, model_path)
    return fam


FAMILY = Declared()
