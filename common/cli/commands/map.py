"""COCO mAP (pycocotools) of predictions files against ground truth or against the anchor.

PREDICTIONS is one predictions file (one image), or a folder of them (a dataset, or a video's
frames), named after the image (`<stem>.txt`, lines `label x1 y1 x2 y2 score`). Ground truth
(`--gt`) is a COCO instances JSON, a folder of `label x1 y1 x2 y2` files, or one such file.
Relative mode (`--anchor`) takes the whole-model anchor's predictions above
`--anchor-threshold` as the ground truth: what splitting and compression alone cost.
`--splits-root DIR` scores every folder of predictions under DIR (one per split/codec) at once
and prints a table (and `--csv`). AP values are printed in percent.

examples:
  splitinfer map out/preds --gt data/coco50/instances.json --plot ap.png
  splitinfer map out/preds/dog.txt --gt data/labels
  splitinfer map --splits-root sweep/ --anchor sweep/anchor --gt data/labels --csv map.csv
"""

from __future__ import annotations

import argparse

from splitinfer.common.eval.evaluation import DEFAULT_ANCHOR_THRESHOLD
from pathlib import Path

NAME = "map"
HELP = "COCO mAP of predictions (one image, a video's frames, a dataset, many split folders)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("predictions", nargs="?", help="predictions file or folder (omit with --splits-root)")
    p.add_argument("--gt", help="ground truth: COCO JSON, folder of 'label x1 y1 x2 y2' files, or one file")
    p.add_argument("--anchor", help="relative mode: the anchor's predictions (file, folder, or a subfolder "
                                    "name of --splits-root)")
    p.add_argument("--splits-root", metavar="DIR", help="score every predictions folder under DIR")
    p.add_argument("--threshold", type=float, default=0.0, help="drop predictions scored below this (default 0)")
    p.add_argument("--anchor-threshold", type=float, default=DEFAULT_ANCHOR_THRESHOLD,
                   help="relative mode: anchor detections at or above this score are the truth (default %(default)s)")
    p.add_argument("--alias", action="append", metavar="SRC=DST",
                   help="count label SRC as DST on both sides (repeatable), e.g. --alias truck=car")
    p.add_argument("--plot", metavar="PNG", help="write a plot of AP per class (a heat map with --splits-root)")
    p.add_argument("--csv", metavar="FILE", help="write the numbers as CSV (AP in [0,1])")


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


def _print_per_class(result, label: str) -> None:
    from splitinfer.common.eval.evaluation import fmt_pct

    print(f"{label}: AP {fmt_pct(result.ap)}  AP50 {fmt_pct(result.ap50)}  AP75 {fmt_pct(result.ap75)}  "
          f"(images {result.num_images}, gt boxes {result.num_gt}, predictions {result.num_predictions})")
    if result.per_class:
        width = max(len(n) for n in result.per_class) + 2
        print(f"  {'class':<{width}}{'gt':>5}{'AP':>8}{'AP50':>8}")
        for name in sorted(result.per_class):
            print(f"  {name:<{width}}{result.per_class_gt.get(name, 0):>5}{fmt_pct(result.per_class[name]):>8}"
                  f"{fmt_pct(result.per_class_ap50[name]):>8}")


def _single(args, preds_path: Path, threshold: float, aliases) -> int:
    from splitinfer.common.eval.evaluation import (GroundTruth, evaluate_against, load_detections_dir,
                                              load_ground_truth, plot_per_class, relative_ground_truth)

    preds = load_detections_dir(preds_path)
    one_file = preds_path.is_file()
    results = {}
    if args.gt:
        gt = load_ground_truth(args.gt)
        if one_file and gt.boxes is not None and Path(args.gt).is_file():
            gt = GroundTruth(gt.source, boxes={preds_path.stem: next(iter(gt.boxes.values()))})
        results["vs ground truth"] = evaluate_against(preds, gt, threshold=threshold, aliases=aliases, subset=one_file)
    if args.anchor:
        anchor = load_detections_dir(args.anchor, "anchor predictions")
        if one_file and Path(args.anchor).is_file():
            anchor = {preds_path.stem: next(iter(anchor.values()))}
        gt = GroundTruth(Path(args.anchor), boxes=relative_ground_truth(anchor, args.anchor_threshold))
        results["relative to anchor"] = evaluate_against(preds, gt, threshold=threshold, aliases=aliases,
                                                         subset=one_file)
    for label, r in results.items():
        _print_per_class(r, label)
    main_label, main = next(iter(results.items()))
    if args.plot:
        print(f"plot: {plot_per_class(main, args.plot, f'{preds_path.name} ({main_label})')}")
    if args.csv:
        import csv

        with open(args.csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["mode", "class", "gt_boxes", "AP", "AP50", "AP75"])
            for label, r in results.items():
                mode = "absolute" if label.startswith("vs") else "relative"
                w.writerow([mode, "all", r.num_gt, f"{r.ap:.6f}", f"{r.ap50:.6f}", f"{r.ap75:.6f}"])
                for name in sorted(r.per_class):
                    w.writerow([mode, name, r.per_class_gt.get(name, 0), f"{r.per_class[name]:.6f}",
                                f"{r.per_class_ap50[name]:.6f}", ""])
        print(f"csv: {args.csv}")
    return 0


def _many(args, root: Path, threshold: float, aliases) -> int:
    from tqdm import tqdm

    from splitinfer.common.core.errors import UserError
    from splitinfer.common.eval.evaluation import (GroundTruth, evaluate_against, fmt_pct, load_detections_dir,
                                              load_ground_truth, plot_per_class_table, relative_ground_truth)

    if not root.is_dir():
        raise UserError(f"splits root not found: {root}")
    folders = _leaf_folders(root)
    if not folders:
        raise UserError(f"{root}: no folder of .txt predictions files")
    gt = load_ground_truth(args.gt) if args.gt else None
    rel = None
    if args.anchor:
        anchor_dir = Path(args.anchor)
        if not anchor_dir.exists() and (root / args.anchor).is_dir():
            anchor_dir = root / args.anchor
        anchor = load_detections_dir(anchor_dir, "anchor predictions folder")
        rel = GroundTruth(anchor_dir, boxes=relative_ground_truth(anchor, args.anchor_threshold))
    if gt is not None:  # a ground-truth folder kept under the root is not a run
        folders = [f for f in folders if f.resolve() != Path(args.gt).resolve()]
    rows, per_class = [], {}
    for folder in tqdm(folders, desc="runs", unit="run", leave=False):
        name = _run_name(folder, root)
        preds = load_detections_dir(folder)
        row = {"run": name, "images": len(preds), "predictions": sum(
            1 for ds in preds.values() for d in ds if d.score >= threshold)}
        if gt is not None:
            r = evaluate_against(preds, gt, threshold=threshold, aliases=aliases)
            row.update(AP=r.ap, AP50=r.ap50, AP75=r.ap75)
            per_class[name] = r
        if rel is not None:
            r = evaluate_against(preds, rel, threshold=threshold, aliases=aliases)
            row.update(rel_AP=r.ap, rel_AP50=r.ap50, rel_AP75=r.ap75)
            per_class.setdefault(name, r)
        rows.append(row)
    cols = ["run", "images", "predictions"] + [c for c in ("AP", "AP50", "AP75", "rel_AP", "rel_AP50", "rel_AP75")
                                               if c in rows[0]]
    width = max(len(r["run"]) for r in rows) + 2
    print(f"{'run':<{width}}" + "".join(f"{c:>12}" for c in cols[1:]))
    for r in rows:
        cells = [str(r[c]) if c in ("images", "predictions") else fmt_pct(r[c]) for c in cols[1:]]
        print(f"{r['run']:<{width}}" + "".join(f"{c:>12}" for c in cells))
    if args.csv:
        import csv

        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            for r in rows:
                w.writerow({c: (f"{r[c]:.6f}" if isinstance(r[c], float) else r[c]) for c in cols})
        print(f"csv: {args.csv}")
    if args.plot:
        mode = "vs ground truth" if gt is not None else "relative to anchor"
        print(f"plot: {plot_per_class_table(per_class, args.plot, f'AP per class and run ({mode})')}")
    return 0


def run(args: argparse.Namespace) -> int:
    from splitinfer.common.core.errors import UserError
    from splitinfer.common.eval.evaluation import parse_aliases

    if not args.gt and not args.anchor:
        raise UserError("give --gt (ground truth) and/or --anchor (relative mode)")
    if not 0.0 <= args.anchor_threshold <= 1.0:
        raise UserError(f"--anchor-threshold must be in [0, 1], got {args.anchor_threshold}")
    aliases = parse_aliases(args.alias)
    if args.splits_root:
        if args.predictions:
            raise UserError("give either PREDICTIONS or --splits-root, not both")
        return _many(args, Path(args.splits_root), args.threshold, aliases)
    if not args.predictions:
        raise UserError("give a predictions file or folder (or --splits-root DIR)")
    return _single(args, Path(args.predictions), args.threshold, aliases)
