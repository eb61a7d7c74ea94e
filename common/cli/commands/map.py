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


def _hint(runs: dict, threshold: float) -> None:
    from splitinfer.common.eval.map_runs import threshold_hint

    hint = threshold_hint(runs, threshold)
    if hint:
        _note(hint)


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


def _write_coco_results(path, preds: dict, gt, threshold: float) -> None:
    from splitinfer.common.eval.coco_results import to_results, write_results

    entries = to_results(preds, gt.coco if gt is not None else None, threshold)
    print(f"COCO results: {write_results(path, entries)} ({len(entries)} detections)")


def _report_runs(rows: list[dict], per_class: dict, csv_path, plot_path, mode: str) -> None:
    from splitinfer.common.eval.evaluation import fmt_pct, plot_per_class, plot_per_class_table
    from splitinfer.common.eval.map_runs import write_runs_csv

    shown = ["run", "images", "predictions"] + [c for c in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100",
                                                            "rel_AP", "rel_AP50", "rel_AP75") if c in rows[0]]
    width = max(len(r["run"]) for r in rows) + 2
    cols = {c: max(10, len(c) + 2) for c in shown[1:]}  # a header never runs into its neighbour
    print(f"{'run':<{width}}" + "".join(f"{c:>{cols[c]}}" for c in shown[1:]))
    for r in rows:
        cells = {c: str(r[c]) if c in ("images", "predictions") else fmt_pct(r[c]) for c in shown[1:]}
        print(f"{r['run']:<{width}}" + "".join(f"{cells[c]:>{cols[c]}}" for c in shown[1:]))
    if csv_path:
        write_runs_csv(csv_path, rows)
        print(f"csv: {csv_path}")
    if plot_path:
        if len(per_class) == 1:
            name, r = next(iter(per_class.items()))
            print(f"plot: {plot_per_class(r, plot_path, f'{name} ({mode})')}")
        else:
            print(f"plot: {plot_per_class_table(per_class, plot_path, f'AP per class and run ({mode})')}")


# ---------------------------------------------------------------------------------------------- modes


def _single(args, preds_path: Path, threshold: float, aliases) -> int:
    from splitinfer.common.eval.evaluation import plot_per_class
    from splitinfer.common.eval.map_runs import score_one, write_class_csv

    results, scored, gt = score_one(preds_path, args.gt, args.anchor, anchor_threshold=args.anchor_threshold,
                                    threshold=threshold, aliases=aliases, count=args.count_unpredicted, note=_note)
    for label, r in results.items():
        _print_result(r, label)
    main_label, main = next(iter(results.items()))
    if args.plot:
        print(f"plot: {plot_per_class(main, args.plot, f'{preds_path.name} ({main_label})')}")
    if args.csv:
        write_class_csv(args.csv, results)
        print(f"csv: {args.csv}")
    if args.coco_results:
        _write_coco_results(args.coco_results, scored, gt, threshold)
    return 0


def _many(args, root: Path, threshold: float, aliases) -> int:
    from splitinfer.common.eval.evaluation import load_ground_truth
    from splitinfer.common.eval.map_runs import anchor_truth, score_runs, tree_runs

    runs = tree_runs(root, args.gt)
    gt = load_ground_truth(args.gt) if args.gt else None
    rel = anchor_truth(args.anchor, args.anchor_threshold, root)
    _hint(runs, threshold)
    rows, per_class = score_runs(runs, gt, rel, threshold, aliases, args.count_unpredicted, _note)
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
    from splitinfer.common.eval.map_runs import anchor_truth, field_runs, score_runs

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
    runs = field_runs(Path(preds_path), args.multisplit, image_key)
    if allowed is not None:
        runs = {n: {k: v for k, v in p.items() if k in allowed} for n, p in runs.items()}
        empty = [n for n, p in runs.items() if not p]
        if empty:
            raise UserError(f"{preds_path}: run {empty[0]} has no predictions for images of {args.image_dataset_path}")
    _hint(runs, args.threshold)
    rows, per_class = score_runs(runs, gt, anchor_truth(args.anchor, args.anchor_threshold), args.threshold,
                                 aliases, args.count_unpredicted, _note)
    if len(runs) == 1:
        _print_result(next(iter(per_class.values())), "vs ground truth" if gt is not None else "relative to anchor")
    _report_runs(rows, per_class, args.results_filename or args.csv, plot,
                 "vs ground truth" if gt is not None else "relative to anchor")
    return 0


def run(args: argparse.Namespace) -> int:
    from splitinfer.common.core.errors import UserError
    from splitinfer.common.eval.evaluation import parse_aliases
    from splitinfer.common.eval.map_runs import label_aliases

    if not 0.0 <= args.anchor_threshold <= 1.0:
        raise UserError(f"--anchor-threshold must be in [0, 1], got {args.anchor_threshold}")
    aliases = {**label_aliases([p for p in (args.labels_coco, args.labels_imagenet) if p]),
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
