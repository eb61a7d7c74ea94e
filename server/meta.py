"""The one place a frame's meta (`meta_json`) is checked: families' post-processing only sees clean meta.

Why one function: the meta comes from the client and scales every box (NanoDet multiplies by width /
input_width), so a negative, zero, NaN, infinite or 400-digit width would give boxes with negative, NaN or
inf coordinates, or an OverflowError deep in a family. `clean_meta` parses the JSON (`wire.meta_from_json`:
size, depth, NaN/Infinity and huge literals refused) and keeps only the fields families read, each a finite
number of pixels in [1, MAX_SIDE]; anything else is INVALID_ARGUMENT naming the field.

Fields: `width`, `height` (the original image, required) and `input_width`, `input_height` (the model input
the boxes are relative to, optional). Other keys are dropped.
"""

from __future__ import annotations

import math

from splitinfer.common.transport import wire
from splitinfer.server.errors import invalid

REQUIRED = ("width", "height")
OPTIONAL = ("input_width", "input_height")
MAX_SIDE = 1 << 16  # pixels: larger than any camera frame, small enough that scaled boxes stay finite;
# at least 1, so a ratio of two sizes stays within [1/MAX_SIDE, MAX_SIDE]


def clean_meta(text: str, frame_id: int = 0) -> dict:
    """The meta families get: {width, height[, input_width, input_height]}, each 1 <= v <= MAX_SIDE."""
    try:
        meta = wire.meta_from_json(text)
    except wire.WireError as exc:
        raise invalid(f"frame {frame_id}: {exc}") from None
    clean = {}
    for key in REQUIRED + OPTIONAL:
        if key not in meta:
            if key in REQUIRED:
                raise invalid(f"frame {frame_id}: frame meta has no {key!r} (the image size in pixels)")
            continue
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid(f"frame {frame_id}: frame meta field {key!r} must be a number, got "
                          f"{type(value).__name__}")
        if not (math.isfinite(value) and 1 <= value <= MAX_SIDE):
            shown = value if abs(value) < 1e12 or not math.isfinite(value) else f"{value:.3g}"
            raise invalid(f"frame {frame_id}: frame meta field {key!r} is {shown}; it must be a size in pixels "
                          f"from 1 to {MAX_SIDE}")
        clean[key] = value
    return clean
