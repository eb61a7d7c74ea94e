"""COCO results JSON ("detection results format"): our predictions written as it, and read back from it.

Why: other tools (pycocotools, Detectron2, MMDetection, the COCO evaluation server) exchange detections as a
JSON list of `{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`; `detect --coco-results` and
`map --coco-results` write it, and `map RESULTS.json` scores one. Image ids come from the ground truth's
COCO JSON when there is one (images matched by file-name stem); otherwise they are numbered 1.. over the
sorted image names, and each entry also carries `file_name` (the stem), which is how a results file without
a COCO ground truth is matched back to images. Category ids are the ground truth's (matched by name) or,
without one, COCO's (1..90); any other name gets an id from 1000 up that nothing else uses, recorded in the
same way as `file_name` (`category_name`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from splitinfer.common.core.detections import Detection
from splitinfer.common.core.errors import UserError
from splitinfer.common.core.labels import CATEGORY_ID_TO_NAME, NAME_TO_CATEGORY_ID, canonical_label

MAX_RESULTS_BYTES = 2 << 30  # a results file is read whole: refuse anything larger before reading it


def image_ids(keys, coco: dict | None = None) -> dict[str, int]:
    """Image id of each key (file stem): the COCO ground truth's, else 1.. over the sorted keys."""
    if coco is not None:
        ids = {Path(img["file_name"]).stem: int(img["id"]) for img in coco.get("images", [])}
        missing = sorted(k for k in keys if k not in ids)
        if missing:
            raise UserError(f"no image named {missing[0]!r} in the COCO ground truth "
                            f"({len(missing)} of {len(list(keys))} images unknown)")
        return {k: ids[k] for k in keys}
    return {k: i + 1 for i, k in enumerate(sorted(keys, key=str))}


def to_results(predictions: dict[str, list[Detection]], coco: dict | None = None,
               threshold: float = 0.0) -> list[dict]:
    """COCO results entries of per-image detections scored at or above `threshold`."""
    ids = image_ids(list(predictions), coco)
    cat_of = dict(NAME_TO_CATEGORY_ID)
    first_extra = 1000
    if coco is not None:  # the ground truth's own ids (they need not be COCO's); other names get unused ids
        cat_of = {canonical_label(c["name"]): int(c["id"]) for c in coco.get("categories", [])}
        first_extra = max([1000, *(i + 1 for i in cat_of.values())])
    extra: dict[str, int] = {}
    out = []
    for key in sorted(predictions, key=str):
        for d in predictions[key]:
            if d.score < threshold:
                continue
            name = canonical_label(d.label)
            entry = {"image_id": ids[key], "category_id": cat_of.get(name) or extra.setdefault(name, first_extra + len(extra)),
                     "bbox": [round(float(d.x1), 4), round(float(d.y1), 4), round(float(d.x2 - d.x1), 4),
                              round(float(d.y2 - d.y1), 4)],
                     "score": round(float(d.score), 6)}
            if coco is None:
                entry["file_name"] = str(key)
            if name not in cat_of:
                entry["category_name"] = name
            out.append(entry)
    return out


def write_results(path: str | Path, entries: list[dict]) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise UserError(f"{path}: a COCO results file must end in .json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries))
    return path


def is_results_file(path: str | Path) -> bool:
    return Path(path).is_file() and Path(path).suffix.lower() == ".json"


def load_results(path: str | Path) -> list[dict]:
    """A COCO results list, checked entry by entry (one clear error naming the entry)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"COCO results file not found: {path}")
    if path.stat().st_size > MAX_RESULTS_BYTES:
        raise UserError(f"{path}: {path.stat().st_size / 1e9:.1f} GB is over the {MAX_RESULTS_BYTES >> 30} GiB "
                        "a results file may have")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and "annotations" in data:
        raise UserError(f"{path}: a COCO instances file (ground truth), not a results list; give it with --gt")
    if not isinstance(data, list):
        raise UserError(f"{path}: a COCO results file is a JSON list of detections")
    for i, e in enumerate(data):
        ok = (isinstance(e, dict) and isinstance(e.get("image_id"), (int, str)) and isinstance(e.get("category_id"), int)
              and isinstance(e.get("bbox"), list) and len(e["bbox"]) == 4
              and all(isinstance(v, (int, float)) and math.isfinite(v) for v in e["bbox"])
              and isinstance(e.get("score", 1.0), (int, float)))
        if not ok:
            raise UserError(f"{path}: entry #{i} is not {{image_id, category_id, bbox: [x, y, w, h], score}}")
    return data


def to_predictions(entries: list[dict], coco: dict | None = None, source: str = "results") -> dict[str, list[Detection]]:
    """Per-image detections (keyed by file stem) of results entries: image ids through the COCO ground
    truth's images (or the entries' `file_name`), category ids through its categories (or COCO's)."""
    stem_of, name_of = {}, dict(CATEGORY_ID_TO_NAME)
    if coco is not None:
        stem_of = {int(img["id"]): Path(img["file_name"]).stem for img in coco.get("images", [])}
        name_of.update({int(c["id"]): canonical_label(c["name"]) for c in coco.get("categories", [])})
    out: dict[str, list[Detection]] = {}
    for i, e in enumerate(entries):
        key = e.get("file_name") if coco is None else stem_of.get(int(e["image_id"]))
        if key is None:
            why = "has no file_name (give the COCO ground truth with --gt)" if coco is None else \
                f"has image_id {e['image_id']} which the ground truth does not list"
            raise UserError(f"{source}: entry #{i} {why}")
        name = e.get("category_name") or name_of.get(int(e["category_id"]), f"category {e['category_id']}")
        x, y, w, h = (float(v) for v in e["bbox"])
        out.setdefault(Path(str(key)).stem, []).append(Detection(canonical_label(name), x, y, x + w, y + h,
                                                                 float(e.get("score", 1.0))))
    return out

# COCO's evaluation convention: keep detections down to this score (the PR curve needs the low ones);
# `sweep` uses it, `map` points at it when predictions were cut at a display threshold.
COCO_SCORE_THRESHOLD = 0.05
