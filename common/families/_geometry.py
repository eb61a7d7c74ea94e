"""Pre-processing a model.json can declare, and the way back from input pixels to image pixels.

Why one module: the `yolo` family and declared detectors (`declared.py`) feed images the same few ways, and
post-processing must undo exactly what pre-processing did. The server keeps only `width`, `height`,
`input_width`, `input_height` of a frame's meta (server/meta.py), so the letterbox is recomputed from those
here rather than carried.
Defined terms: *stretch* (resize to the input size, aspect ratio not kept), *letterbox* (scale to fit keeping
the aspect ratio, centred, the rest filled with `fill` in 0-255 units), *none* (the image as it is, any size);
*range* `0-1` (pixels / 255) or `0-255`; mean/std in the units of the range, in the tensor's channel order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.common.core.labels import COCO80_NAMES
from splitinfer.common.families import check_image

RESIZES = ("stretch", "letterbox", "none")
MAX_LABELS_BYTES = 1 << 20  # a labels file is a few kB; refuse to read a large file by mistake
# darknet's coco.names spells six COCO classes the VOC way; a file with these is COCO-80
DARKNET_SPELLINGS = {"motorbike": "motorcycle", "aeroplane": "airplane", "sofa": "couch",
                     "pottedplant": "potted plant", "diningtable": "dining table", "tvmonitor": "tv"}


@dataclass(frozen=True)
class Preprocess:
    """How one model wants its input tensor (every field has the value a model.json may set)."""

    input: str = "images"
    size: tuple[int, int] | None = (640, 640)  # (width, height); None with resize "none"
    resize: str = "letterbox"
    fill: float = 114.0
    channels: str = "RGB"
    layout: str = "NCHW"
    range: str = "0-1"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        where = f"preprocessing of input {self.input!r}"
        if self.resize not in RESIZES:
            raise UserError(f"{where}: resize {self.resize!r} is not one of {', '.join(RESIZES)}")
        if self.resize != "none" and (self.size is None or len(self.size) != 2
                                      or not all(1 <= int(v) <= 8192 for v in self.size)):
            raise UserError(f"{where}: size must be [width, height] in 1..8192, got {self.size}")
        if self.channels not in ("RGB", "BGR") or self.layout not in ("NCHW", "NHWC"):
            raise UserError(f"{where}: channels must be RGB or BGR and layout NCHW or NHWC, "
                            f"got {self.channels}/{self.layout}")
        if self.range not in ("0-1", "0-255"):
            raise UserError(f"{where}: range must be \"0-1\" or \"0-255\", got {self.range!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(float(s) == 0 for s in self.std):
            raise UserError(f"{where}: mean and std need 3 values each, std none zero")

    @classmethod
    def from_json(cls, d: dict, where: str, **defaults) -> "Preprocess":
        if not isinstance(d, dict):
            raise UserError(f"{where}: \"preprocess\" must be an object")
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(d) - known)
        if extra:
            raise UserError(f"{where}: unknown preprocess keys {extra} (known: {', '.join(sorted(known))})")
        args = {**defaults, **d}
        for key in ("size", "mean", "std"):
            if args.get(key) is not None:
                args[key] = tuple(float(v) if key != "size" else int(v) for v in args[key])
        try:
            return cls(**args)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise UserError(f"{where}: bad preprocess entry ({exc})") from None

    def run(self, image_bgr) -> tuple[dict[str, np.ndarray], dict]:
        """(feeds, meta) for one BGR image; meta holds the original and the input size only."""
        img = check_image(image_bgr)
        h, w = img.shape[:2]
        if self.resize == "none":
            x, iw, ih = img.astype(np.float32), w, h
        else:
            iw, ih = self.size
            x = letterbox(img, iw, ih, self.fill) if self.resize == "letterbox" else stretch(img, iw, ih)
        if self.channels == "RGB":
            x = x[:, :, ::-1]
        if self.range == "0-1":
            x = x / np.float32(255.0)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        tensor = np.ascontiguousarray(x[None], dtype=np.float32)
        return {self.input: tensor}, {"width": w, "height": h, "input_width": iw, "input_height": ih}

    def to_image(self, boxes: np.ndarray, meta: dict) -> np.ndarray:
        """Boxes [N,4] x1y1x2y2 in input pixels -> pixels of the original image, clipped to it."""
        w, h = float(meta["width"]), float(meta["height"])
        iw, ih = float(meta.get("input_width", w)), float(meta.get("input_height", h))
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if self.resize == "letterbox":
            nw, nh, left, top = letterbox_geometry(w, h, iw, ih)
            b = (b - [left, top, left, top]) * [w / nw, h / nh, w / nw, h / nh]
        else:
            b = b * [w / iw, h / ih, w / iw, h / ih]
        return np.clip(b, 0, [w, h, w, h])


def letterbox_geometry(w: float, h: float, iw: float, ih: float) -> tuple[int, int, int, int]:
    """(scaled width, scaled height, left pad, top pad) of a w x h image letterboxed into iw x ih."""
    r = min(iw / w, ih / h)
    nw, nh = max(1, int(round(w * r))), max(1, int(round(h * r)))
    return nw, nh, int(iw - nw) // 2, int(ih - nh) // 2


def letterbox(img: np.ndarray, iw: int, ih: int, fill: float) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    nw, nh, left, top = letterbox_geometry(w, h, iw, ih)
    out = np.full((ih, iw, 3), fill, dtype=np.float32)
    out[top:top + nh, left:left + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out


def stretch(img: np.ndarray, iw: int, ih: int) -> np.ndarray:
    import cv2

    return cv2.resize(img, (iw, ih), interpolation=cv2.INTER_LINEAR).astype(np.float32)


def read_labels(spec, base: Path | None, where: str) -> tuple[str, ...]:
    """Labels from a model.json entry: "coco80", a list of names, or a file of one name a line (relative to
    the model's folder). A file of darknet's COCO spellings reads as COCO-80's names."""
    if spec is None or spec == "coco80":
        return COCO80_NAMES
    if isinstance(spec, list) and spec and all(isinstance(s, str) for s in spec):
        return tuple(spec)
    if not isinstance(spec, str):
        raise UserError(f"{where}: \"labels\" must be \"coco80\", a list of names or a file name")
    path = Path(spec) if base is None or Path(spec).is_absolute() else base / spec
    if not path.is_file():
        raise UserError(f"{where}: labels file not found: {path}")
    if path.stat().st_size > MAX_LABELS_BYTES:
        raise UserError(f"{path}: a labels file over {MAX_LABELS_BYTES} bytes (one name a line expected)")
    names = tuple(n.strip() for n in path.read_text(errors="replace").splitlines() if n.strip())
    if not names:
        raise UserError(f"{path}: no labels in the file")
    return coco_spelling(names)


def coco_spelling(names: tuple[str, ...]) -> tuple[str, ...]:
    """COCO-80's names when `names` are COCO-80 in darknet's spelling, else `names` unchanged."""
    mapped = tuple(DARKNET_SPELLINGS.get(n, n) for n in names)
    return COCO80_NAMES if mapped == COCO80_NAMES else names


def model_info(model_path) -> dict:
    """The parsed model.json beside an ONNX file ({} when there is none): core.models' one reader."""
    from splitinfer.common.core.models import model_json

    return {} if model_path is None else model_json(model_path)


def onnx_io(model_path) -> tuple[dict[str, list], dict[str, list]]:
    """({input name: shape}, {output name: shape}) from the graph (dims None where symbolic)."""
    import onnx

    g = onnx.load(str(model_path), load_external_data=False).graph
    init = {t.name for t in g.initializer}

    def shape(vi):
        return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]

    return ({vi.name: shape(vi) for vi in g.input if vi.name not in init}, {vi.name: shape(vi) for vi in g.output})
