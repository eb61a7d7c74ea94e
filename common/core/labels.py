"""COCO label maps: the 80 contiguous class names and the 91-id category ids of the COCO JSON files.

Detectors disagree on ids (NanoDet: 0..79 contiguous; torchvision and SSD: COCO category ids 1..90
with gaps). Everything inside splitinfer speaks *names*; these maps convert at the edges.
"""

from __future__ import annotations

import csv
from pathlib import Path

from splitinfer.common.core.errors import UserError

COCO80_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

# COCO category id (1..90, with gaps) of each of the 80 classes, in the same order.
COCO80_TO_CATEGORY_ID: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
)
CATEGORY_ID_TO_NAME: dict[int, str] = {cid: COCO80_NAMES[i] for i, cid in enumerate(COCO80_TO_CATEGORY_ID)}
NAME_TO_CATEGORY_ID: dict[str, int] = {n: c for c, n in CATEGORY_ID_TO_NAME.items()}


def canonical_label(label: str) -> str:
    """Labels in files may use '_' for spaces (one token per field); inside we use COCO's spelling."""
    return label.replace("_", " ")


def file_label(name: str) -> str:
    """The one-token spelling of a label for whitespace-separated text files."""
    return name.replace(" ", "_")


def read_labels_csv(path: str | Path) -> dict[int, str]:
    """Read the field's `coco_labels.csv` layout (`id,name` per line, header optional)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"labels file not found: {path}")
    labels: dict[int, str] = {}
    with path.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise UserError(f"{path}:{lineno}: expected 'id,name', got {','.join(row)!r}")
            key, name = row[0].strip(), row[1].strip()
            if lineno == 1 and not key.lstrip("-").isdigit():
                continue  # header
            try:
                labels[int(key)] = name
            except ValueError:
                raise UserError(f"{path}:{lineno}: id {key!r} is not an integer") from None
    if not labels:
        raise UserError(f"{path}: no labels found")
    return labels
