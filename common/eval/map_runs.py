"""Scoring runs of predictions: the library behind `splitinfer map` (its CLI parses, calls this, prints).

A *run* is one folder of predictions files (one split x codec, the anchor, a dataset): {image key:
detections}. Each run is scored (COCO mAP, common/eval/evaluation.py) against a *truth*: the ground truth
(`GroundTruth`), or in relative mode the anchor's predictions above a threshold. Predicted images the truth
does not cover are left out, and so are truth images without predictions unless counted as misses; every
such choice is said through `note(text)` (the CLI prints it on stderr).
"""

from __future__ import annotations

from pathlib import Path

# Predictions all scoring this or more were cut at a display threshold (COCO AP counts low scores too).
CUT_SCORE = 0.2


def _silent(text: str) -> None:
    pass


def label_aliases(paths) -> dict[str, str]:
    """Names of a coco_labels.csv-style file -> COCO names (ids are COCO-80 indices or category ids)."""
    from splitinfer.common.core.labels import CATEGORY_ID_TO_NAME, COCO80_NAMES, canonical_label, read_labels_csv

    out = {}
    for path in paths:
        table = read_labels_csv(path)
        by_category = max(table, default=0) >= len(COCO80_NAMES)
        for key, name in table.items():
            coco = CATEGORY_ID_TO_NAME.get(key) if by_category else (COCO80_NAMES[key] if 0 <= key < 80 else None)
            if coco and canonical_label(name) != coco:
                out[canonical_label(name)] = coco
    return out


def load_predictions(path: Path, gt=None) -> dict:
    """A predictions file or folder, or a COCO results .json (matched through a COCO ground truth's ids)."""
    from splitinfer.common.eval.coco_results import is_results_file, load_results, to_predictions
    from splitinfer.common.eval.evaluation import load_detections_dir

    if is_results_file(path):
        return to_predictions(load_results(path), gt.coco if gt is not None else None, str(path))
    return load_detections_dir(path)


def covered(preds: dict, gt, what: str, note=_silent) -> dict:
    """The predicted images the ground truth covers; the others are named in a note (all missing: error)."""
    from splitinfer.common.core.errors import UserError

    keys = gt.keys
    missing = sorted(k for k in preds if k not in keys)
    if not missing:
        return preds
    if len(missing) == len(preds):
        show = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise UserError(f"{gt.source}: no ground truth for any of the {len(missing)} predicted image(s) of "
                        f"{what}: {show}")
    show = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    note(f"note: {len(missing)} predicted image(s) of {what} have no ground truth in {gt.source}, not scored: {show}")
    return {k: v for k, v in preds.items() if k in keys}


def unpredicted(preds: dict, gt, what: str, count: bool, note=_silent) -> bool:
    """Whether to score only the predicted images (`subset`); says how many ground-truth images have no
    predictions file (a `device -nb_frames 10` run on a long video predicts 10 of its frames)."""
    left = len(gt.keys - set(preds))
    if left:
        how = ("counted as misses (--count-unpredicted)" if count else
               "left out, only predicted frames scored (--count-unpredicted counts them as misses)")
        note(f"note: {left} of {len(gt.keys)} ground-truth image(s) in {gt.source} have no predictions in "
             f"{what}: {how}")
    return not count


def threshold_hint(runs: dict, threshold: float) -> str | None:
    """A hint when every prediction scores high (they were cut at a display threshold), else None."""
    scores = [d.score for preds in runs.values() for dets in preds.values() for d in dets]
    if not scores:
        return None
    low = min(scores)
    if low >= CUT_SCORE and threshold < low:
        from splitinfer.common.eval.coco_results import COCO_SCORE_THRESHOLD

        return (f"hint: every prediction scores {low:.2f} or more: they were cut at a display threshold "
                f"(the family's, the default of detect and device). COCO AP counts low-score detections too; for "
                f"AP comparable with `sweep` write them with `detect --threshold {COCO_SCORE_THRESHOLD}` or "
                f"`device --threshold {COCO_SCORE_THRESHOLD}`")
    return None


def score_one(preds_path: Path, gt_path, anchor_path, *, anchor_threshold: float, threshold: float, aliases,
              count: bool, note=_silent) -> tuple[dict, dict, object]:
    """One run (a predictions file, folder or COCO results file) against the ground truth and/or the anchor:
    ({"vs ground truth" / "relative to anchor": MapResult}, the predictions scored, the ground truth)."""
    from splitinfer.common.core.errors import UserError
    from splitinfer.common.eval.coco_results import is_results_file
    from splitinfer.common.eval.evaluation import GroundTruth, evaluate_against, load_ground_truth

    if not preds_path.exists():
        raise UserError(f"predictions folder not found: {preds_path}")
    if is_results_file(preds_path):  # a COCO results file is matched to images through the ground truth
        gt = load_ground_truth(gt_path) if gt_path else None
        preds = load_predictions(preds_path, gt)
    else:
        preds = load_predictions(preds_path)
        gt = load_ground_truth(gt_path) if gt_path else None
    one_file = preds_path.is_file() and not is_results_file(preds_path)
    hint = threshold_hint({"": preds}, threshold)
    if hint:
        note(hint)
    truths = {}
    if gt is not None:
        if one_file and gt.boxes is not None and Path(gt_path).is_file():
            gt = GroundTruth(gt.source, boxes={preds_path.stem: next(iter(gt.boxes.values()))})
        truths["vs ground truth"] = gt
    if anchor_path:
        truths["relative to anchor"] = anchor_truth(anchor_path, anchor_threshold, what="anchor predictions",
                                                    one_image=preds_path.stem if one_file else None)
    results, scored = {}, preds
    for label, truth in truths.items():
        kept = covered(preds, truth, str(preds_path), note)
        subset = one_file or unpredicted(kept, truth, str(preds_path), count, note)
        results[label] = evaluate_against(kept, truth, threshold=threshold, aliases=aliases, subset=subset)
        if truth is gt:
            scored = kept
    return results, scored, gt


def leaf_folders(root: Path) -> list[Path]:
    """Folders under root (root included) that directly hold .txt files, sorted."""
    return sorted(d for d in [root, *root.rglob("*")] if d.is_dir() and any(
        f.suffix == ".txt" and f.is_file() for f in d.iterdir()))


def run_name(folder: Path, root: Path) -> str:
    """Row name: the folder's path under the root, without the `predictions` level `device` adds."""
    rel = folder.relative_to(root) if folder != root else Path(root.name)
    if rel.name == "predictions" and rel.parent != Path("."):
        rel = rel.parent
    return rel.as_posix()


def tree_runs(root: Path, gt_path=None) -> dict:
    """{run name: predictions} of every folder of .txt predictions under `root` (a ground-truth folder
    kept under it is not a run)."""
    from splitinfer.common.core.errors import UserError
    from splitinfer.common.eval.evaluation import load_detections_dir

    if not root.is_dir():
        raise UserError(f"splits root not found: {root}")
    folders = leaf_folders(root)
    if not folders:
        raise UserError(f"{root}: no folder of .txt predictions files")
    if gt_path:
        folders = [f for f in folders if f.resolve() != Path(gt_path).resolve()]
    return {run_name(f, root): load_detections_dir(f) for f in folders}


def score_runs(runs: dict, gt, rel, threshold: float, aliases, count: bool = False,
               note=_silent) -> tuple[list[dict], dict]:
    """One row per run (images, predictions, COCO summary vs gt and rel_ vs the anchor) and its MapResults."""
    from splitinfer.common.core.progress import bar
    from splitinfer.common.eval.evaluation import evaluate_against

    rows, per_class = [], {}
    for name, preds in bar(runs.items(), total=len(runs), desc="runs", unit="run", leave=False):
        row = {"run": name, "images": len(preds), "predictions": sum(
            1 for ds in preds.values() for d in ds if d.score >= threshold)}
        for prefix, truth in (("", gt), ("rel_", rel)):
            if truth is None:
                continue
            kept = covered(preds, truth, name, note)
            r = evaluate_against(kept, truth, threshold=threshold, aliases=aliases,
                                 subset=unpredicted(kept, truth, name, count, note))
            if prefix == "":
                row["images"] = r.num_images
            row.update({prefix + k: v for k, v in r.summary().items()})
            per_class.setdefault(name, r)
        rows.append(row)
    return rows, per_class


def anchor_truth(anchor, anchor_threshold: float, root: Path | None = None, one_image: str | None = None,
                 what: str = "anchor predictions folder"):
    """The relative-mode truth: the anchor's predictions (a folder, or under `root`; with `one_image`, a lone
    file's detections under that key) above `anchor_threshold`; None without an anchor."""
    from splitinfer.common.eval.evaluation import GroundTruth, load_detections_dir, relative_ground_truth

    if not anchor:
        return None
    anchor_dir = Path(anchor)
    if root is not None and not anchor_dir.exists() and (root / anchor).is_dir():
        anchor_dir = root / anchor
    preds = load_detections_dir(anchor_dir, what)
    if one_image is not None and anchor_dir.is_file():
        preds = {one_image: next(iter(preds.values()))}
    return GroundTruth(anchor_dir, boxes=relative_ground_truth(preds, anchor_threshold))


def field_runs(preds_path: Path, multisplit: bool, image_key: str | None) -> dict:
    """{run name: predictions} of the field's -p: a file, a folder of files (one image per file, or with
    -i one split per file), or a folder of split folders."""
    from splitinfer.common.core.errors import UserError
    from splitinfer.common.eval.evaluation import load_detections_dir, read_detections_file

    if not preds_path.exists():
        raise UserError(f"predictions not found: {preds_path}")
    if preds_path.is_file():
        key = image_key or preds_path.stem
        name = preds_path.parent.name if image_key and preds_path.stem == image_key else preds_path.stem
        return {name: {key: read_detections_file(preds_path)}}
    files = sorted(f for f in preds_path.iterdir() if f.is_file() and f.suffix == ".txt")
    folders = [f for f in leaf_folders(preds_path) if f != preds_path]
    if image_key is not None and files and not multisplit:  # calc_map_image.py: one file per split
        return {f.stem: {image_key: read_detections_file(f)} for f in files}
    if multisplit or (folders and not files):
        if not folders:
            raise UserError(f"{preds_path}: --multisplit, but no folder of .txt predictions under it")
        runs = {run_name(f, preds_path): load_detections_dir(f) for f in folders}
        if image_key is not None:
            runs = {n: {image_key: p[image_key]} for n, p in runs.items() if image_key in p}
        return runs
    return {preds_path.name: load_detections_dir(preds_path)}


def write_class_csv(path, results: dict) -> None:
    """Per-class AP of each result ({label: MapResult}; labels starting with "vs" are absolute mode)."""
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        names = [n for n in results[next(iter(results))].STAT_NAMES]
        w.writerow(["mode", "class", "gt_boxes"] + names)
        for label, r in results.items():
            mode = "absolute" if label.startswith("vs") else "relative"
            s = r.summary()
            w.writerow([mode, "all", r.num_gt] + [f"{s[n]:.6f}" for n in names])
            for name in sorted(r.per_class):
                w.writerow([mode, name, r.per_class_gt.get(name, 0), f"{r.per_class[name]:.6f}",
                            f"{r.per_class_ap50[name]:.6f}", f"{r.per_class_ap75.get(name, float('nan')):.6f}"]
                           + [""] * (len(names) - 3))


def write_runs_csv(path, rows: list[dict]) -> None:
    """One line per run (score_runs' rows), floats with 6 decimals."""
    import csv

    cols = list(rows[0])
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: (f"{r[c]:.6f}" if isinstance(r[c], float) else r[c]) for c in cols})
