"""The one place a frame's meta (`meta_json`) is checked: families' post-processing only sees clean meta.

Why one function: the meta comes from the client and scales every box (NanoDet multiplies by width /
input_width), so a negative, zero, NaN, infinite or 400-digit width would give boxes with negative, NaN or
inf coordinates, or an OverflowError deep in a family. `clean_meta` parses the JSON (`parse_meta_json`:
size, depth, NaN/Infinity/1e999 and number literals of many digits refused, the field named) and keeps only
the fields families read, each a finite number of pixels in [1, MAX_SIDE] (and `score_threshold`, a score in
[0, 1]); anything else is INVALID_ARGUMENT naming the field. Plain `json` and no protobuf here: the OIP endpoints (oip_core.py, also
run in KServe's environment) use the same check.

Fields: `width`, `height` (the original image, required) and `input_width`, `input_height` (the model input
the boxes are relative to, optional). Other keys are dropped.
"""

from __future__ import annotations

import json
import math

from splitinfer.server.errors import RequestError, invalid

REQUIRED = ("width", "height")
OPTIONAL = ("input_width", "input_height")
MAX_CHARS = 1 << 16
MAX_SIDE = 1 << 16  # pixels: larger than any camera frame, small enough that scaled boxes stay finite;
# at least 1, so a ratio of two sizes stays within [1/MAX_SIDE, MAX_SIDE]
META_MAX_DIGITS = 32  # longest number literal accepted (a 400-digit width is an attack)


class _Refused(str):
    """A JSON value the meta parser will not turn into a number (named with its field once known)."""


def _meta_int(text: str):
    if len(text.lstrip("-")) > META_MAX_DIGITS:
        return _Refused(f"a number of {len(text.lstrip('-'))} digits (at most {META_MAX_DIGITS})")
    return int(text)


def _meta_float(text: str):
    if len(text) > 2 * META_MAX_DIGITS:
        return _Refused(f"a number literal of {len(text)} characters")
    value = float(text)
    return value if math.isfinite(value) else _Refused(f"{text[:40]} (not a finite number)")


def _meta_constant(name: str):
    return _Refused(f"{name} (not a JSON number)")


def _refused_in(value) -> _Refused | None:
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, _Refused):
            return v
        if isinstance(v, list):
            todo.extend(v)
    return None


def _meta_object(pairs):
    for key, value in pairs:
        bad = _refused_in(value)
        if bad is not None:
            raise invalid(f"frame meta: field {key[:40]!r} is {bad}")
    return dict(pairs)


def parse_meta_json(text: str, max_chars: int = MAX_CHARS) -> dict:
    """The meta as a dict; INVALID_ARGUMENT for anything that is not a small JSON object:
    too long, not JSON, nested past the parser's depth, NaN/Infinity/1e999, number literals of many digits
    (the message names the field)."""
    if len(text) > max_chars:
        raise invalid(f"frame meta is {len(text)} characters (limit {max_chars})")
    if not text:
        return {}
    try:
        meta = json.loads(text, parse_int=_meta_int, parse_float=_meta_float, parse_constant=_meta_constant,
                          object_pairs_hook=_meta_object)
    except RequestError:
        raise
    except json.JSONDecodeError as exc:
        raise invalid(f"frame meta is not JSON ({exc})") from None
    except RecursionError:
        raise invalid("frame meta is nested too deeply") from None
    except ValueError as exc:  # anything else the parser refuses
        raise invalid(f"frame meta is not acceptable JSON ({str(exc)[:120]})") from None
    if not isinstance(meta, dict):
        raise invalid("frame meta must be a JSON object")
    return meta


def clean_meta(text: str, frame_id: int | None = None) -> dict:
    """The meta families get: {width, height[, input_width, input_height]}, each 1 <= v <= MAX_SIDE.
    Messages start with "frame <frame_id>: " when a frame id is given."""
    where = "" if frame_id is None else f"frame {frame_id}: "
    try:
        meta = parse_meta_json(text)
    except RequestError as exc:
        raise invalid(f"{where}{exc}") from None
    clean = {}
    for key in REQUIRED + OPTIONAL:
        if key not in meta:
            if key in REQUIRED:
                raise invalid(f"{where}frame meta has no {key!r} (the image size in pixels)")
            continue
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid(f"{where}frame meta field {key!r} must be a number, got "
                          f"{type(value).__name__}")
        if not (math.isfinite(value) and 1 <= value <= MAX_SIDE):
            shown = value if abs(value) < 1e12 or not math.isfinite(value) else f"{value:.3g}"
            raise invalid(f"{where}frame meta field {key!r} is {shown}; it must be a size in pixels "
                          f"from 1 to {MAX_SIDE}")
        clean[key] = value
    return _with_score_threshold(meta, clean, where)


SCORE_KEY = "score_threshold"  # optional: the UE's `device --threshold`, a score in [0, 1]


def _with_score_threshold(meta: dict, clean: dict, where: str) -> dict:
    """`clean` plus the optional score threshold the UE asked for (post-processing keeps scores at or above
    it instead of the family's display threshold); anything but a number in [0, 1] is INVALID_ARGUMENT."""
    if SCORE_KEY not in meta:
        return clean
    value = meta[SCORE_KEY]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise invalid(f"{where}frame meta field {SCORE_KEY!r} must be a number in [0, 1], got {str(value)[:40]}")
    return {**clean, SCORE_KEY: float(value)}
