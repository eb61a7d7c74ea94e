"""COCO-style mAP with pycocotools as the reference implementation, plus a relative mode.

Why pycocotools: the field reports COCO AP, and any home-grown matcher drifts from it in the
details (101-point interpolation, crowd regions, maxDets=100, tie order). We only translate our
`Detection` lists into COCO dictionaries and read COCOeval's arrays back, so numbers are the
reference's by construction.

Relative mode: the whole-model anchor's predictions (above a score threshold) become the ground
truth, so the result measures what splitting and compression alone cost, independent of how good
the model is on the real labels.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from splitinfer.common.core.detections import Detection, parse_predictions
from splitinfer.common.core.errors import UserError
from splitinfer.common.core.labels import NAME_TO_CATEGORY_ID, canonical_label

PREDICTION_SUFFIX = ".txt"
# Relative mode: anchor detections scored at or above this are the truth (the sweep, `map` and `visualize`).
DEFAULT_ANCHOR_THRESHOLD = 0.5


@dataclass
class MapResult:
    """COCO AP numbers in [0, 1] (NaN where undefined, e.g. no ground-truth box at all)."""

    ap: float
    ap50: float
    ap75: float
    per_class: dict[str, float] = field(default_factory=dict)
    per_class_ap50: dict[str, float] = field(default_factory=dict)
    per_class_ap75: dict[str, float] = field(default_factory=dict)
    per_class_gt: dict[str, int] = field(default_factory=dict)  # non-crowd ground-truth boxes
    stats: tuple[float, ...] = ()  # COCOeval.stats: the 12 numbers summarize() prints
    num_images: int = 0
    num_gt: int = 0
    num_predictions: int = 0

    # COCOeval.stats in order: AP, AP50, AP75, APs, APm, APl (area small/medium/large), AR1, AR10, AR100
    # (recall at 1, 10, 100 detections per image), ARs, ARm, ARl.
    STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

    def summary(self) -> dict[str, float]:
        """The 12 COCO summary numbers by name (NaN where undefined or not computed)."""
        return {n: (self.stats[i] if i < len(self.stats) else math.nan) for i, n in enumerate(self.STAT_NAMES)}

    def as_row(self) -> dict[str, float | int]:
        return {"AP": self.ap, "AP50": self.ap50, "AP75": self.ap75, "images": self.num_images,
                "gt_boxes": self.num_gt, "predictions": self.num_predictions}


def _nan(v: float) -> float:
    return float("nan") if v is None or v < 0 else float(v)


def fmt_pct(v: float) -> str:
    """An AP in [0,1] as a percentage for tables ('n/a' when undefined)."""
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100.0 * v:.1f}"


# --------------------------------------------------------------------------------------------
# The core: COCO dictionaries in, MapResult out.


def run_cocoeval(gt_dataset: dict, dt_annotations: list[dict]) -> MapResult:
    """Run pycocotools' COCOeval (bbox) on a COCO ground-truth dict and a results list, silently."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy on empty classes; we report NaN instead
        gt = COCO()
        gt.dataset = gt_dataset
        gt.createIndex()
        if dt_annotations:
            dt = gt.loadRes(dt_annotations)
        else:  # loadRes cannot take an empty list; an empty result set is still a valid input
            dt = COCO()
            dt.dataset = {"images": list(gt_dataset.get("images", [])),
                          "categories": list(gt_dataset.get("categories", [])), "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()

    stats = tuple(_nan(s) for s in ev.stats)
    precision = ev.eval["precision"]  # [T iou thresholds, R recall, K classes, A areas, M maxDets]
    names = {c["id"]: canonical_label(c["name"]) for c in gt_dataset.get("categories", [])}
    gt_count: dict[int, int] = {}
    for a in gt_dataset.get("annotations", []):
        gt_count[a["category_id"]] = gt_count.get(a["category_id"], 0) + (0 if a.get("iscrowd", 0) else 1)
    gt_cats = set(gt_count)
    per_class, per_class50, per_class75, per_class_gt = {}, {}, {}, {}
    for k, cat_id in enumerate(ev.params.catIds):
        if cat_id not in gt_cats:
            continue
        name = names.get(cat_id, str(cat_id))
        p = precision[:, :, k, 0, -1]  # all areas, maxDets=100: what stats[0] averages
        p50 = precision[0, :, k, 0, -1]
        p75 = precision[5, :, k, 0, -1]  # IoU thresholds .50:.05:.95: index 5 is .75
        per_class[name] = float(p[p > -1].mean()) if (p > -1).any() else math.nan
        per_class50[name] = float(p50[p50 > -1].mean()) if (p50 > -1).any() else math.nan
        per_class75[name] = float(p75[p75 > -1].mean()) if (p75 > -1).any() else math.nan
        per_class_gt[name] = gt_count[cat_id]
    n_gt = sum(1 for a in gt_dataset.get("annotations", []) if not a.get("iscrowd", 0))
    return MapResult(ap=stats[0], ap50=stats[1], ap75=stats[2], per_class=per_class,
                     per_class_ap50=per_class50, per_class_ap75=per_class75, per_class_gt=per_class_gt, stats=stats,
                     num_images=len(gt_dataset.get("images", [])), num_gt=n_gt,
                     num_predictions=len(dt_annotations))


def _xywh(d: Detection) -> list[float]:
    return [float(d.x1), float(d.y1), float(d.x2 - d.x1), float(d.y2 - d.y1)]


def _alias(name: str, aliases: dict[str, str] | None) -> str:
    name = canonical_label(name)
    return aliases.get(name, name) if aliases else name


def _category_ids(names: set[str]) -> dict[str, int]:
    """COCO category ids for COCO names (so JSON we write is COCO-compatible); 1000+ for others."""
    ids = {n: NAME_TO_CATEGORY_ID[n] for n in names if n in NAME_TO_CATEGORY_ID}
    for i, n in enumerate(sorted(names - set(ids))):
        ids[n] = 1000 + i
    return ids


def to_coco(ground_truth: dict[str, list[Detection]], image_sizes: dict[str, tuple[int, int]] | None = None,
            aliases: dict[str, str] | None = None, extra_names: set[str] = frozenset()
            ) -> tuple[dict, dict[str, int], dict[str, int]]:
    """Build a COCO ground-truth dict from per-image detections.

    Returns (dataset, image id of each key, category id of each name). Image ids follow the
    sorted keys; `image_sizes` maps key -> (width, height) and is only informative for bbox AP.
    """
    keys = sorted(ground_truth, key=str)
    image_ids = {k: i + 1 for i, k in enumerate(keys)}
    names = {_alias(d.label, aliases) for dets in ground_truth.values() for d in dets} | set(extra_names)
    cat_ids = _category_ids(names)
    images = []
    for k in keys:
        img = {"id": image_ids[k], "file_name": str(k)}
        if image_sizes and k in image_sizes:
            img["width"], img["height"] = (int(v) for v in image_sizes[k])
        images.append(img)
    anns = []
    for k in keys:
        for d in ground_truth[k]:
            bbox = _xywh(d)
            anns.append({"id": len(anns) + 1, "image_id": image_ids[k],
                         "category_id": cat_ids[_alias(d.label, aliases)], "bbox": bbox,
                         "area": bbox[2] * bbox[3], "iscrowd": 0})
    cats = [{"id": i, "name": n, "supercategory": ""} for n, i in sorted(cat_ids.items(), key=lambda t: t[1])]
    return {"images": images, "annotations": anns, "categories": cats}, image_ids, cat_ids


def results_list(predictions: dict[str, list[Detection]], image_ids: dict[str, int],
                 cat_ids: dict[str, int], threshold: float = 0.0,
                 aliases: dict[str, str] | None = None) -> list[dict]:
    """COCO results entries (`image_id, category_id, bbox, score`) for the images of `image_ids`.

    Labels without a category in the ground truth get an id no ground truth uses: COCOeval
    then counts them nowhere, exactly as it does for such results in a COCO file.
    """
    unknown = max(cat_ids.values(), default=0) + 100000
    out = []
    for k in sorted(predictions, key=str):
        if k not in image_ids:
            continue
        for d in predictions[k]:
            if d.score < threshold:
                continue
            out.append({"image_id": image_ids[k], "category_id": cat_ids.get(_alias(d.label, aliases), unknown),
                        "bbox": _xywh(d), "score": float(d.score)})
    return out


def evaluate(predictions: dict[str, list[Detection]], ground_truth: dict[str, list[Detection]],
             image_sizes: dict[str, tuple[int, int]] | None = None, *, threshold: float = 0.0,
             aliases: dict[str, str] | None = None) -> MapResult:
    """COCO AP of `predictions` against `ground_truth`, both keyed by image id (e.g. file stem).

    The images evaluated are the keys of `ground_truth` plus any predicted image (an image
    absent from the ground truth is an image with no objects). `threshold` drops predictions
    scored below it; `aliases` renames labels on both sides (e.g. {"truck": "car"}).
    """
    all_gt = dict(ground_truth)
    for k in predictions:
        all_gt.setdefault(k, [])
    gt_dataset, image_ids, cat_ids = to_coco(all_gt, image_sizes, aliases)
    dts = results_list(predictions, image_ids, cat_ids, threshold, aliases)
    return run_cocoeval(gt_dataset, dts)


def relative_ground_truth(anchor: dict[str, list[Detection]],
                          threshold: float = DEFAULT_ANCHOR_THRESHOLD) -> dict[str, list[Detection]]:
    """The anchor's detections scored at or above `threshold` (>=, inclusive), as ground truth (score 1)."""
    return {k: [Detection(d.label, d.x1, d.y1, d.x2, d.y2, 1.0) for d in dets if d.score >= threshold]
            for k, dets in anchor.items()}


def evaluate_relative(predictions: dict[str, list[Detection]], anchor: dict[str, list[Detection]],
                      anchor_threshold: float = DEFAULT_ANCHOR_THRESHOLD, *, threshold: float = 0.0,
                      aliases: dict[str, str] | None = None) -> MapResult:
    """mAP with the whole-model anchor as ground truth: what splitting/compression alone cost."""
    return evaluate(predictions, relative_ground_truth(anchor, anchor_threshold), threshold=threshold,
                    aliases=aliases)


# --------------------------------------------------------------------------------------------
# COCO JSON ground truth (kept verbatim: crowd regions and segmentation areas count as in COCO).


def load_coco_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise UserError(f"{path}: not a COCO instances file (needs 'images', 'annotations' and 'categories' lists)")
    for i, a in enumerate(data["annotations"]):
        if not {"image_id", "category_id", "bbox"} <= set(a) or len(a["bbox"]) != 4:
            raise UserError(f"{path}: annotation #{i} lacks image_id, category_id or a 4-number bbox")
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(a["bbox"][2]) * float(a["bbox"][3]))
        a.setdefault("id", i + 1)
    return data


def coco_image_keys(coco: dict) -> dict[str, int]:
    """Key (file-name stem) -> COCO image id: predictions files are named after the image."""
    return {Path(img["file_name"]).stem: img["id"] for img in coco["images"]}


def evaluate_coco(predictions: dict[str, list[Detection]], coco: dict | str | Path, *, threshold: float = 0.0,
                  aliases: dict[str, str] | None = None, only_predicted: bool = False) -> MapResult:
    """COCO AP of predictions (keyed by image file stem) against a COCO instances dict or file.

    `only_predicted` restricts the evaluation to images that have a predictions entry (to score
    a subset, e.g. one image, against a whole annotation file).
    """
    if not isinstance(coco, dict):
        coco = load_coco_json(coco)
    keys = coco_image_keys(coco)
    if only_predicted:
        wanted = {keys[k] for k in predictions if k in keys}
        coco = {**coco, "images": [i for i in coco["images"] if i["id"] in wanted],
                "annotations": [a for a in coco["annotations"] if a["image_id"] in wanted]}
        keys = {k: v for k, v in keys.items() if v in wanted}
    cat_ids = {canonical_label(c["name"]): c["id"] for c in coco["categories"]}
    if aliases:  # a renamed class folds into its target's id on the ground-truth side too
        remap = {cat_ids[s]: cat_ids[t] for s, t in aliases.items() if s in cat_ids and t in cat_ids}
        coco = {**coco, "annotations": [{**a, "category_id": remap.get(a["category_id"], a["category_id"])}
                                        for a in coco["annotations"]]}
        cat_ids = {n: i for n, i in cat_ids.items() if i not in remap}
    dts = results_list(predictions, keys, cat_ids, threshold, aliases)
    return run_cocoeval(coco, dts)


# --------------------------------------------------------------------------------------------
# Folder helpers: predictions and ground-truth text files named after the image (stem.txt).


def read_detections_file(path: Path, with_score: bool | None = None) -> list[Detection]:
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text predictions file") from None
    return parse_predictions(text, str(path), with_score)


def load_detections_dir(path: str | Path, what: str = "predictions folder") -> dict[str, list[Detection]]:
    """Every `*.txt` of a folder, keyed by file stem (`label x1 y1 x2 y2 [score]` lines)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path}")
    if path.is_file():
        return {path.stem: read_detections_file(path)}
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix == PREDICTION_SUFFIX)
    if not files:
        raise UserError(f"{what} {path}: no {PREDICTION_SUFFIX} files")
    return {p.stem: read_detections_file(p) for p in files}


@dataclass
class GroundTruth:
    """Ground truth read from disk: a COCO dict (JSON) or per-image detections (text files)."""

    source: Path
    coco: dict | None = None
    boxes: dict[str, list[Detection]] | None = None

    @property
    def keys(self) -> set[str]:
        return set(coco_image_keys(self.coco)) if self.coco is not None else set(self.boxes)


def load_ground_truth(path: str | Path) -> GroundTruth:
    """A COCO instances JSON file, a folder of `label x1 y1 x2 y2` files, or one such file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"ground truth not found: {path}")
    if path.is_file() and path.suffix.lower() == ".json":
        return GroundTruth(path, coco=load_coco_json(path))
    return GroundTruth(path, boxes=load_detections_dir(path, "ground-truth folder"))


def evaluate_against(predictions: dict[str, list[Detection]], gt: GroundTruth, *, threshold: float = 0.0,
                     aliases: dict[str, str] | None = None, subset: bool = False) -> MapResult:
    """Evaluate predictions against ground truth read from disk, checking the images line up.

    Every predicted image must have ground truth (else the folders are probably mismatched);
    ground-truth images without a predictions file count as images where nothing was found,
    unless `subset` (score only the predicted images, e.g. one image of a dataset).
    """
    keys = gt.keys
    missing = sorted(set(predictions) - keys)
    if missing:
        show = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise UserError(f"{gt.source}: no ground truth for {len(missing)} predicted image(s): {show}")
    if gt.coco is not None:
        return evaluate_coco(predictions, gt.coco, threshold=threshold, aliases=aliases, only_predicted=subset)
    boxes = {k: v for k, v in gt.boxes.items() if k in predictions} if subset else gt.boxes
    return evaluate(predictions, boxes, threshold=threshold, aliases=aliases)


def evaluate_folders(predictions_dir: str | Path, ground_truth: str | Path | None = None, *,
                     anchor_dir: str | Path | None = None, threshold: float = 0.0,
                     anchor_threshold: float = DEFAULT_ANCHOR_THRESHOLD, aliases: dict[str, str] | None = None,
                     subset: bool = False) -> MapResult:
    """mAP of a predictions folder against ground truth (JSON or text folder) or, in relative
    mode, against the anchor's predictions folder."""
    preds = load_detections_dir(predictions_dir)
    if (ground_truth is None) == (anchor_dir is None):
        raise UserError("give exactly one of a ground truth or an anchor predictions folder")
    if anchor_dir is not None:
        anchor = load_detections_dir(anchor_dir, "anchor predictions folder")
        gt = GroundTruth(Path(anchor_dir), boxes=relative_ground_truth(anchor, anchor_threshold))
        return evaluate_against(preds, gt, threshold=threshold, aliases=aliases, subset=subset)
    return evaluate_against(preds, load_ground_truth(ground_truth), threshold=threshold, aliases=aliases,
                            subset=subset)


def parse_aliases(items: list[str] | None) -> dict[str, str] | None:
    """`truck=car` strings -> {"truck": "car"} (labels with '_' or spaces both accepted)."""
    if not items:
        return None
    out = {}
    for item in items:
        src, sep, dst = item.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise UserError(f"alias {item!r}: expected SOURCE=TARGET, e.g. truck=car")
        out[canonical_label(src.strip())] = canonical_label(dst.strip())
    return out


# --------------------------------------------------------------------------------------------
# Plots (PNG, Agg backend).


def plot_per_class(result: MapResult, path: str | Path, title: str = "AP per class") -> Path:
    """Horizontal bars of AP@[.5:.95] and AP50 per class, classes sorted by AP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(result.per_class, key=lambda n: (_sortable(result.per_class[n]), n))
    ap = [_zero(result.per_class[n]) * 100 for n in names]
    ap50 = [_zero(result.per_class_ap50.get(n, math.nan)) * 100 for n in names]
    fig, ax = plt.subplots(figsize=(8.5, max(2.2, 0.32 * len(names) + 1.3)))
    y = range(len(names))
    ax.barh([i + 0.2 for i in y], ap50, height=0.4, color="#9ecae1", label="AP50")
    ax.barh([i - 0.2 for i in y], ap, height=0.4, color="#3182bd", label="AP@[.5:.95]")
    ax.set_yticks(list(y), names)
    ax.set_xlim(0, 105)
    ax.set_xlabel("AP (%)")
    ax.set_title(f"{title}\nmAP {fmt_pct(result.ap)}  AP50 {fmt_pct(result.ap50)}  AP75 {fmt_pct(result.ap75)}")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_per_class_table(results: dict[str, MapResult], path: str | Path, title: str = "AP per class") -> Path:
    """Heat map of AP per class (rows) and run (columns): many splits/codecs at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    runs = list(results)
    classes = sorted({c for r in results.values() for c in r.per_class})
    grid = np.array([[results[r].per_class.get(c, math.nan) * 100 for r in runs] for c in classes] +
                    [[results[r].ap * 100 for r in runs]], dtype=float).reshape(len(classes) + 1, len(runs))
    rows = classes + ["mAP"]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(runs) + 2.5), max(2.0, 0.35 * len(rows) + 1.5)))
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(runs)), runs, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = grid[i, j]
            ax.text(j, i, "n/a" if math.isnan(v) else f"{v:.0f}", ha="center", va="center",
                    color="white" if not math.isnan(v) and v < 60 else "black", fontsize=7)
    fig.colorbar(im, ax=ax, label="AP@[.5:.95] (%)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _zero(v: float) -> float:
    return 0.0 if v is None or math.isnan(v) else v


def _sortable(v: float) -> float:
    return -1.0 if v is None or math.isnan(v) else v
