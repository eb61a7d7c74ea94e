"""COCO mAP (pycocotools) of predictions files against ground truth or against the anchor.

PREDICTIONS is one predictions file (one image), a folder of them (a dataset, or a video's frames), named
after the image (`<stem>.txt`, lines `label x1 y1 x2 y2 score`), or a COCO results .json. Ground truth
(`--gt`) is a COCO instances JSON, a folder of `label x1 y1 x2 y2` files, or one such file; predicted
images it does not cover are left out with a note, and so are ground-truth images without predictions (a
`device -nb_frames 10` run on a long video), unless `--count-unpredicted` counts them as misses. Relative mode (`--anchor`) takes the whole-model
anchor's predictions above `--anchor-threshold` as the ground truth: what splitting and compression alone
cost. `--splits-root DIR` scores every folder of predictions under DIR (one per split/codec) at once and
prints a table (and `--csv`). AP values are printed in percent, with COCO's whole summary (APs/APm/APl by
object size, AR1/AR10/AR100 and ARs/ARm/ARl recall). `--coco-results` writes the predictions scored as
COCO results JSON. COCO AP counts low-score detections too: predictions written at a display threshold
(detect's default) score far lower than at 0.05, and `map` says so.

The field's calc_map scripts (TR 26.847 Annex B.3) work with their own options:
  calc_map_image.py:         -i IMAGE -p PREDICTIONS(file, or folder of one file per split) -g GT_FILE
                             [-r RESULTS.csv] [--threshold T] [--no_plot]
  calc_map_video.py:         -v VIDEO -p PREDICTIONS(folder, or folder of split folders) -g GT_DIR
                             [-r RESULTS.csv] [-o/--image_path PLOT.png] [--labels_coco CSV] [--labels_imagenet CSV]
  calc_map_image_dataset.py: -d IMAGES -p PREDICTIONS [--multisplit] -g GT_DIR [-r RESULTS.csv] [--labels_coco CSV]
  calc_map.py:               VIDEO_NAME [--ds DATASET] [--threshold T]: ground truth DATASET/VIDEO_NAME/labels
                             (as `dataset sfu -o DATASET/VIDEO_NAME` writes it), predictions
                             DATASET/VIDEO_NAME/predictions (or -p); DATASET defaults to SFU-HW-Objects
Their results CSV (-r) has one row per run (split): images, predictions and the COCO summary in [0,1].

examples:
  splitinfer map out/preds --gt data/coco50/instances.json --plot ap.png
  splitinfer map out/preds/dog.txt --gt data/labels
  splitinfer map --splits-root sweep/ --anchor sweep/anchor --gt data/labels --csv map.csv
  splitinfer map results.json --gt instances_val2017.json          # a COCO results file
  splitinfer map -d coco50/images -p runs/ --multisplit -g coco50/labels -r map.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from splitinfer.common.eval.evaluation import DEFAULT_ANCHOR_THRESHOLD

NAME = "map"
HELP = "COCO mAP of predictions (one image, a video's frames, a dataset, many split folders)"
# output options (argparse dest -> "file" or "dir"), checked and prepared by the CLI before run()
OUTPUTS = {"plot": "file", "csv": "file", "coco_results": "file", "results_filename": "file",
           "plot_out": "file"}
# Lowest prediction score that looks like a display threshold rather than an evaluation one.
CUT_SCORE = 0.2
FIELD_DATASET = "SFU-HW-Objects"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from splitinfer.common.cli import options as opt

    p.add_argument("predictions", nargs="?", help="predictions file or folder, or a COCO results .json "
                                                  "(omit with --splits-root); with --ds: the video name")
    p.add_argument("--gt", help="ground truth: COCO JSON, folder of 'label x1 y1 x2 y2' files, or one file")
    p.add_argument("--anchor", help="relative mode: the anchor's predictions (file, folder, or a subfolder "
                                    "name of --splits-root)")
    p.add_argument("--splits-root", metavar="DIR", help="score every predictions folder under DIR")
    p.add_argument("--threshold", type=opt.SCORE, default=0.0, help="drop predictions scored below this (default 0)")
    p.add_argument("--anchor-threshold", type=opt.SCORE, default=DEFAULT_ANCHOR_THRESHOLD,
                   help="relative mode: anchor detections at or above this score are the truth (default %(default)s)")
    p.add_argument("--alias", action="append", metavar="SRC=DST",
                   help="count label SRC as DST on both sides (repeatable), e.g. --alias truck=car")
    p.add_argument("--plot", metavar="PNG", help="write a plot of AP per class (a heat map with --splits-root)")
    p.add_argument("--csv", metavar="FILE", help="write the numbers as CSV (AP in [0,1])")
    p.add_argument("--coco-results", metavar="JSON", help="write the scored predictions as COCO results JSON")
    p.add_argument("--count-unpredicted", action="store_true",
                   help="ground-truth images/frames without a predictions file count as misses (default: only "
                        "the predicted ones are scored, and the others are counted in a note)")
    f = p.add_argument_group("the field's calc_map scripts (TR 26.847 Annex B.3)")
    f.add_argument("-i", "--image_path", help="calc_map_image.py: the image (with -v: the plot, as "
                                              "calc_map_video.py's --image_path)")
    f.add_argument("-v", "--video_path", help="calc_map_video.py: the video")
    f.add_argument("-d", "--image_dataset_path", help="calc_map_image_dataset.py: the folder of images")
    f.add_argument("-p", "--prediction_path", help="predictions: a file, a folder, or a folder of split folders")
    f.add_argument("-g", "--groundtruth_path", help="ground truth (as --gt)")
    f.add_argument("-r", "--results_filename", help="results CSV: one row per run (split)")
    f.add_argument("-o", dest="plot_out", metavar="IMAGE_PATH", help="calc_map_video.py: the mAP plot (PNG)")
    f.add_argument("--no_plot", action="store_true", help="no plot (never displayed here; only written with -o)")
    f.add_argument("--multisplit", action="store_true", help="the predictions folder holds one folder per split")
    f.add_argument("--labels_coco", metavar="CSV", help="coco_labels.csv (id,name): labels named by it count "
                                                        "as their COCO class")
    f.add_argument("--labels_imagenet", metavar="CSV", help="imagenet_coco.csv (id,name), read the same way")
    f.add_argument("--ds", metavar="DATASET", help=f"calc_map.py: dataset folder holding VIDEO_NAME/labels and "
                                                   f"VIDEO_NAME/predictions (default {FIELD_DATASET})")


# ---------------------------------------------------------------------------------------------- inputs


def _note(text: str) -> None:
    print(f"splitinfer map: {text}", file=sys.stderr, flush=True)


def _label_aliases(paths) -> dict[str, str]:
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


def _load_predictions(path: Path, gt=None) -> dict:
    """A predictions file or folder, or a COCO results .json (matched through a COCO ground truth's ids)."""
    from splitinfer.common.eval.coco_results import is_results_file, load_results, to_predictions
    from splitinfer.common.eval.evaluation import load_detections_dir

    if is_results_file(path):
        return to_predictions(load_results(path), gt.coco if gt is not None else None, str(path))
    return load_detections_dir(path)


def _covered(preds: dict, gt, what: str) -> dict:
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
    _note(f"note: {len(missing)} predicted image(s) of {what} have no ground truth in {gt.source}, not scored: {show}")
    return {k: v for k, v in preds.items() if k in keys}


def _unpredicted(preds: dict, gt, what: str, count: bool) -> bool:
    """Whether to score only the predicted images (`subset`); says how many ground-truth images have no
    predictions file (a `device -nb_frames 10` run on a long video predicts 10 of its frames)."""
    left = len(gt.keys - set(preds))
    if left:
        how = ("counted as misses (--count-unpredicted)" if count else
               "left out, only predicted frames scored (--count-unpredicted counts them as misses)")
        _note(f"note: {left} of {len(gt.keys)} ground-truth image(s) in {gt.source} have no predictions in "
              f"{what}: {how}")
    return not count


def _threshold_hint(runs: dict, threshold: float) -> None:
    """Say so when every prediction scores high: they were cut at a display threshold."""
    scores = [d.score for preds in runs.values() for dets in preds.values() for d in dets]
    if not scores:
        return
    low = min(scores)
    if low >= CUT_SCORE and threshold < low:
        from splitinfer.common.eval.coco_results import COCO_SCORE_THRESHOLD

        _note(f"hint: every prediction scores {low:.2f} or more: they were cut at a display threshold "
              f"(the family's, the default of detect and device). COCO AP counts low-score detections too; for AP "
              f"comparable with `sweep` write them with `detect --threshold {COCO_SCORE_THRESHOLD}` or "
              f"`device --threshold {COCO_SCORE_THRESHOLD}`")


# ---------------------------------------------------------------------------------------------- output


def _print_result(result, label: str) -> None:
    from splitinfer.common.eval.evaluation import fmt_pct

    s = result.summary()
    print(f"{label}: AP {fmt_pct(result.ap)}  AP50 {fmt_pct(result.ap50)}  AP75 {fmt_pct(result.ap75)}  "
          f"(images {result.num_images}, gt boxes {result.num_gt}, predictions {result.num_predictions})")
    print("  " + "  ".join(f"{k} {fmt_pct(s[k])}" for k in ("APs", "APm", "APl")) + "   " +
          "  ".join(f"{k} {fmt_pct(s[k])}" for k in ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl")))
    if result.per_class:
        width = max(len(n) for n in result.per_class) + 2
        print(f"  {'class':<{width}}{'gt':>5}{'AP':>8}{'AP50':>8}{'AP75':>8}")
        for name in sorted(result.per_class):
            print(f"  {name:<{width}}{result.per_class_gt.get(name, 0):>5}{fmt_pct(result.per_class[name]):>8}"
                  f"{fmt_pct(result.per_class_ap50[name]):>8}{fmt_pct(result.per_class_ap75.get(name)):>8}")


def _write_class_csv(path, results: dict) -> None:
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
    print(f"csv: {path}")


def _write_coco_results(path, preds: dict, gt, threshold: float) -> None:
    from splitinfer.common.eval.coco_results import to_results, write_results

    entries = to_results(preds, gt.coco if gt is not None else None, threshold)
    print(f"COCO results: {write_results(path, entries)} ({len(entries)} detections)")


# ---------------------------------------------------------------------------------------------- modes


def _single(args, preds_path: Path, threshold: float, aliases) -> int:
    from splitinfer.common.eval.coco_results import is_results_file
    from splitinfer.common.eval.evaluation import (GroundTruth, evaluate_against, load_detections_dir,
                                                   load_ground_truth, plot_per_class, relative_ground_truth)

    from splitinfer.common.core.errors import UserError

    if not preds_path.exists():
        raise UserError(f"predictions folder not found: {preds_path}")
    if is_results_file(preds_path):  # a COCO results file is matched to images through the ground truth
        gt = load_ground_truth(args.gt) if args.gt else None
        preds = _load_predictions(preds_path, gt)
    else:
        preds = _load_predictions(preds_path)
        gt = load_ground_truth(args.gt) if args.gt else None
    one_file = preds_path.is_file() and not is_results_file(preds_path)
    _threshold_hint({"": preds}, threshold)
    results, scored = {}, preds
    if gt is not None:
        if one_file and gt.boxes is not None and Path(args.gt).is_file():
            gt = GroundTruth(gt.source, boxes={preds_path.stem: next(iter(gt.boxes.values()))})
        scored = _covered(preds, gt, str(preds_path))
        subset = one_file or _unpredicted(scored, gt, str(preds_path), args.count_unpredicted)
        results["vs ground truth"] = evaluate_against(scored, gt, threshold=threshold, aliases=aliases,
                                                      subset=subset)
    if args.anchor:
        anchor = load_detections_dir(args.anchor, "anchor predictions")
        if one_file and Path(args.anchor).is_file():
            anchor = {preds_path.stem: next(iter(anchor.values()))}
        rel = GroundTruth(Path(args.anchor), boxes=relative_ground_truth(anchor, args.anchor_threshold))
        covered = _covered(preds, rel, str(preds_path))
        subset = one_file or _unpredicted(covered, rel, str(preds_path), args.count_unpredicted)
        results["relative to anchor"] = evaluate_against(covered, rel, threshold=threshold, aliases=aliases,
                                                         subset=subset)
    for label, r in results.items():
        _print_result(r, label)
    main_label, main = next(iter(results.items()))
    if args.plot:
        print(f"plot: {plot_per_class(main, args.plot, f'{preds_path.name} ({main_label})')}")
    if args.csv:
        _write_class_csv(args.csv, results)
    if args.coco_results:
        _write_coco_results(args.coco_results, scored, gt, threshold)
    return 0


def _leaf_folders(root: Path) -> list[Path]:
    """Folders under root (root included) that directly hold .txt files, sorted."""
    return sorted(d for d in [root, *root.rglob("*")] if d.is_dir() and any(
        f.suffix == ".txt" and f.is_file() for f in d.iterdir()))


def _run_name(folder: Path, root: Path) -> str:
    """Row name: the folder's path under the root, without the `predictions` level `device` adds."""
    rel = folder.relative_to(root) if folder != root else Path(root.name)
    if rel.name == "predictions" and rel.parent != Path("."):
        rel = rel.parent
    return rel.as_posix()


def _score_runs(runs: dict, gt, rel, threshold: float, aliases, count: bool = False) -> tuple[list[dict], dict]:
    """One row per run (images, predictions, COCO summary vs gt and rel_ vs the anchor) and its MapResults."""
    from splitinfer.common.eval.evaluation import evaluate_against
    from splitinfer.common.core.progress import bar

    rows, per_class = [], {}
    for name, preds in bar(runs.items(), total=len(runs), desc="runs", unit="run", leave=False):
        row = {"run": name, "images": len(preds), "predictions": sum(
            1 for ds in preds.values() for d in ds if d.score >= threshold)}
        for prefix, truth in (("", gt), ("rel_", rel)):
            if truth is None:
                continue
            covered = _covered(preds, truth, name)
            r = evaluate_against(covered, truth, threshold=threshold, aliases=aliases,
                                 subset=_unpredicted(covered, truth, name, count))
            if prefix == "":
                row["images"] = r.num_images
            row.update({prefix + k: v for k, v in r.summary().items()})
            per_class.setdefault(name, r)
        rows.append(row)
    return rows, per_class


def _report_runs(rows: list[dict], per_class: dict, csv_path, plot_path, mode: str) -> None:
    from splitinfer.common.eval.evaluation import fmt_pct, plot_per_class, plot_per_class_table

    shown = ["run", "images", "predictions"] + [c for c in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100",
                                                            "rel_AP", "rel_AP50", "rel_AP75") if c in rows[0]]
    width = max(len(r["run"]) for r in rows) + 2
    cols = {c: max(10, len(c) + 2) for c in shown[1:]}  # a header never runs into its neighbour
    print(f"{'run':<{width}}" + "".join(f"{c:>{cols[c]}}" for c in shown[1:]))
    for r in rows:
        cells = {c: str(r[c]) if c in ("images", "predictions") else fmt_pct(r[c]) for c in shown[1:]}
        print(f"{r['run']:<{width}}" + "".join(f"{cells[c]:>{cols[c]}}" for c in shown[1:]))
    if csv_path:
        import csv

        cols = list(rows[0])
        with open(csv_path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            for r in rows:
                w.writerow({c: (f"{r[c]:.6f}" if isinstance(r[c], float) else r[c]) for c in cols})
        print(f"csv: {csv_path}")
    if plot_path:
        if len(per_class) == 1:
            name, r = next(iter(per_class.items()))
            print(f"plot: {plot_per_class(r, plot_path, f'{name} ({mode})')}")
        else:
            print(f"plot: {plot_per_class_table(per_class, plot_path, f'AP per class and run ({mode})')}")


def _anchor_truth(args, root: Path | None):
    from splitinfer.common.eval.evaluation import GroundTruth, load_detections_dir, relative_ground_truth

    if not args.anchor:
        return None
    anchor_dir = Path(args.anchor)
    if root is not None and not anchor_dir.exists() and (root / args.anchor).is_dir():
        anchor_dir = root / args.anchor
    anchor = load_detections_dir(anchor_dir, "anchor predictions folder")
    return GroundTruth(anchor_dir, boxes=relative_ground_truth(anchor, args.anchor_threshold))


def _many(args, root: Path, threshold: float, aliases) -> int:
    from splitinfer.common.core.errors import UserError
    from splitinfer.common.eval.evaluation import load_detections_dir, load_ground_truth

    if not root.is_dir():
        raise UserError(f"splits root not found: {root}")
    folders = _leaf_folders(root)
    if not folders:
        raise UserError(f"{root}: no folder of .txt predictions files")
    gt = load_ground_truth(args.gt) if args.gt else None
    rel = _anchor_truth(args, root)
    if gt is not None:  # a ground-truth folder kept under the root is not a run
        folders = [f for f in folders if f.resolve() != Path(args.gt).resolve()]
    runs = {_run_name(f, root): load_detections_dir(f) for f in folders}
    _threshold_hint(runs, threshold)
    rows, per_class = _score_runs(runs, gt, rel, threshold, aliases, args.count_unpredicted)
    _report_runs(rows, per_class, args.csv, args.plot, "vs ground truth" if gt is not None else "relative to anchor")
    return 0


# ---------------------------------------------------------------------------------------------- the field's forms


def _field_form(args) -> bool:
    used = (args.image_path, args.video_path, args.image_dataset_path, args.prediction_path,
            args.groundtruth_path, args.results_filename, args.plot_out, args.ds)
    if any(v is not None for v in used) or args.multisplit:
        return True
    # calc_map.py's `calc_map.py VIDEO_NAME` with the default dataset folder
    p = args.predictions
    return bool(p) and not Path(p).exists() and (Path(FIELD_DATASET) / p).is_dir()


def _field_runs(preds_path: Path, multisplit: bool, image_key: str | None) -> dict:
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
    folders = [f for f in _leaf_folders(preds_path) if f != preds_path]
    if image_key is not None and files and not multisplit:  # calc_map_image.py: one file per split
        return {f.stem: {image_key: read_detections_file(f)} for f in files}
    if multisplit or (folders and not files):
        if not folders:
            raise UserError(f"{preds_path}: --multisplit, but no folder of .txt predictions under it")
        runs = {_run_name(f, preds_path): load_detections_dir(f) for f in folders}
        if image_key is not None:
            runs = {n: {image_key: p[image_key]} for n, p in runs.items() if image_key in p}
        return runs
    return {preds_path.name: load_detections_dir(preds_path)}


def _field_source_keys(args) -> tuple[str | None, set[str] | None]:
    """(the image's key for -i, the frame/image keys -v/-d allow), checking the paths exist."""
    from splitinfer.common.core.errors import UserError

    if args.video_path:
        video = Path(args.video_path)
        if not video.is_file():
            raise UserError(f"video not found: {video}")
        return None, None
    if args.image_path:
        image = Path(args.image_path)
        if not image.is_file():
            raise UserError(f"image not found: {image}")
        return image.stem, None
    if args.image_dataset_path:
        from splitinfer.common.core.images import list_images

        folder = Path(args.image_dataset_path)
        if not folder.is_dir():
            raise UserError(f"image dataset folder not found: {folder}")
        return None, {p.stem for p in list_images(folder)}
    return None, None


def _field(args, aliases) -> int:
    """The field's calc_map forms, scored as runs (one row per split) and reported as a table/CSV/plot."""
    from splitinfer.common.core.errors import UserError
    from splitinfer.common.eval.evaluation import GroundTruth, load_ground_truth

    gt_path, preds_path = args.groundtruth_path or args.gt, args.prediction_path
    plot = None if args.no_plot else (args.plot_out or args.plot or (args.image_path if args.video_path else None))
    image_key, allowed = _field_source_keys(args)  # with -v, -i/--image_path is the plot, not an image
    named_sequence = args.predictions and not Path(args.predictions).exists() and \
        (Path(FIELD_DATASET) / args.predictions).is_dir()
    if args.ds is not None or named_sequence:
        if not args.predictions:
            raise UserError("calc_map.py's form: give the video name, e.g. `map Kimono --ds SFU-HW-Objects`")
        seq = Path(args.ds or FIELD_DATASET) / args.predictions
        if not seq.is_dir():
            raise UserError(f"{seq}: no such sequence folder in the dataset")
        gt_path = gt_path or next((str(seq / d) for d in ("labels", "annotations") if (seq / d).exists()), None)
        preds_path = preds_path or str(seq / "predictions")
    preds_path = preds_path or args.predictions
    if not preds_path:
        raise UserError("give the predictions with -p PREDICTION_PATH")
    if not gt_path and not args.anchor:
        raise UserError("give the ground truth with -g GROUNDTRUTH_PATH (or --anchor for relative mode)")
    gt = load_ground_truth(gt_path) if gt_path else None
    if gt is not None and image_key is not None and gt.boxes is not None and Path(gt_path).is_file():
        gt = GroundTruth(gt.source, boxes={image_key: next(iter(gt.boxes.values()))})
    runs = _field_runs(Path(preds_path), args.multisplit, image_key)
    if allowed is not None:
        runs = {n: {k: v for k, v in p.items() if k in allowed} for n, p in runs.items()}
        empty = [n for n, p in runs.items() if not p]
        if empty:
            raise UserError(f"{preds_path}: run {empty[0]} has no predictions for images of {args.image_dataset_path}")
    _threshold_hint(runs, args.threshold)
    rows, per_class = _score_runs(runs, gt, _anchor_truth(args, None), args.threshold, aliases,
                                  args.count_unpredicted)
    if len(runs) == 1:
        _print_result(next(iter(per_class.values())), "vs ground truth" if gt is not None else "relative to anchor")
    _report_runs(rows, per_class, args.results_filename or args.csv, plot,
                 "vs ground truth" if gt is not None else "relative to anchor")
    return 0


def run(args: argparse.Namespace) -> int:
    from splitinfer.common.core.errors import UserError
    from splitinfer.common.eval.evaluation import parse_aliases

    if not 0.0 <= args.anchor_threshold <= 1.0:
        raise UserError(f"--anchor-threshold must be in [0, 1], got {args.anchor_threshold}")
    aliases = {**_label_aliases([p for p in (args.labels_coco, args.labels_imagenet) if p]),
               **(parse_aliases(args.alias) or {})} or None
    if _field_form(args):
        return _field(args, aliases)
    if not args.gt and not args.anchor:
        raise UserError("give --gt (ground truth) and/or --anchor (relative mode)")
    if args.splits_root:
        if args.predictions:
            raise UserError("give either PREDICTIONS or --splits-root, not both")
        return _many(args, Path(args.splits_root), args.threshold, aliases)
    if not args.predictions:
        raise UserError("give a predictions file or folder (or --splits-root DIR)")
    return _single(args, Path(args.predictions), args.threshold, aliases)
