"""Boxes, labels and scores drawn on an image, for people to look at.

Colours are fixed per label (derived from the name, not from the order of detections), so the same class
has the same colour in every frame, every model and every split; sizes scale with the image.
"""

from __future__ import annotations

import colorsys
import hashlib

import numpy as np

from splitinfer.common.core.detections import Detection


def label_color(label: str) -> tuple[int, int, int]:
    """A stable, saturated BGR colour for a label."""
    h = int.from_bytes(hashlib.sha1(label.encode()).digest()[:2], "big") / 65535.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_detections(image_bgr: np.ndarray, dets: list[Detection], show_score: bool = True,
                    thickness: int | None = None, title: str | None = None) -> np.ndarray:
    """A copy of the image with each detection's box and `label score` tag (and an optional title)."""
    import cv2

    img = np.ascontiguousarray(image_bgr.copy())
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    h, w = img.shape[:2]
    t = thickness or max(1, round(min(h, w) / 300))
    font_scale = max(0.4, min(h, w) / 900)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for d in sorted(dets, key=lambda d: d.score):  # best drawn last, on top
        color = label_color(d.label)
        x1, y1 = int(round(max(0, min(d.x1, w - 1)))), int(round(max(0, min(d.y1, h - 1))))
        x2, y2 = int(round(max(0, min(d.x2, w - 1)))), int(round(max(0, min(d.y2, h - 1))))
        cv2.rectangle(img, (x1, y1), (x2, y2), color, t)  # crisp edges: exact label colour
        text = f"{d.label} {d.score:.2f}" if show_score else d.label
        (tw, th), base = cv2.getTextSize(text, font, font_scale, max(1, t // 2))
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else min(h - 1, y1 + th + base + 2)
        cv2.rectangle(img, (x1, ty - th - base), (min(w - 1, x1 + tw + 2), ty + 1), color, -1)
        cv2.putText(img, text, (x1 + 1, ty - base + 1), font, font_scale, _text_color(color), max(1, t // 2),
                    cv2.LINE_AA)
    if title:
        (tw, th), base = cv2.getTextSize(title, font, font_scale, 1)
        cv2.rectangle(img, (0, 0), (tw + 6, th + base + 6), (0, 0, 0), -1)
        cv2.putText(img, title, (3, th + 3), font, font_scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def _text_color(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    b, g, r = bgr
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)
