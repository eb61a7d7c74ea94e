"""Sweep split points x codecs: bytes sent, codec times and mAP per (split, codec), with plots and a report.

Each image runs through the whole model once (every crossing tensor of every split exposed as an
output, cached as .npz); then per (split, codec) only encode, decode and Part II run, in parallel on a
local process pool (default: one worker per core) or on a Ray cluster (--ray-address; 'local' starts a
local Ray instance). Finished rows are stored under the cache folder, so an interrupted sweep resumes
where it stopped (Ctrl-C is safe); --fresh ignores them.

Every row also reports bits per element, encode/decode MB/s and the fidelity of the model outputs after
Part II against the whole model's (NMSE, PSNR, cosine similarity, top-1/top-5 agreement for class vectors).

mAP: relative (the whole model's own detections at or above --anchor-threshold are the ground truth)
for every row; absolute against --gt (COCO JSON, or a folder of `label x1 y1 x2 y2` files) on the
images that have ground truth.

SPLITS are node ranks (the split node goes to Part II) or node names; without --splits six interior
ranks are picked, one per sixth of the model, each where Part I sends the least data.

Ray: each task is one (image batch, split, codec); activations and Part II travel through Ray's object
store, so cluster nodes need splitinfer installed but no shared files. A cluster started with
`ray start --head` (Ray >= 2.59) uses token auth: run with RAY_AUTH_MODE=token.

Writes to -o DIR: results.csv, results.json, map_by_split.png, map_vs_size.png, map_vs_ratio.png,
report.md, report.html (and cache/ unless --cache-dir).

examples:
  splitinfer sweep nanodet --data common/assets/images --gt common/assets/images/terrain2_coco.json -o out/sweep
  splitinfer sweep nanodet --splits 27 46 95 --codecs none float16 nnc:-38 --data imgs/ --workers 2
  RAY_AUTH_MODE=token splitinfer sweep model.onnx --family nanodet --data imgs/ --ray-address auto
"""

from __future__ import annotations

import argparse

NAME = "sweep"
HELP = "split-point x codec sweep: bytes, codec times, mAP; plots and report (resumable, parallel, Ray)"
# output options (argparse dest -> "file" or "dir"), checked and prepared by the CLI before run()
OUTPUTS = {"out_dir": "dir", "cache_dir": "dir"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from splitinfer.common.cli import options as opt
    from splitinfer.common.cli.options import add_list_option
    from splitinfer.common.studies.sweep import DEFAULT_ANCHOR_THRESHOLD, DEFAULT_BATCH, DEFAULT_SCORE_THRESHOLD

    p.add_argument("model", help="bundled model id (nanodet), model folder, .onnx file, or zoo:NAME (a torchvision "
                                 "model of the splitability zoo, exported on first use)")
    p.add_argument("--family", help="model family when MODEL is a bare .onnx file without metadata; 'raw' (also "
                                    "the fallback when none is known): any image model, rows report the fidelity "
                                    "of its outputs (NMSE, PSNR, cosine, top-1/top-5) instead of mAP")
    add_list_option(p, "--splits", metavar="SPLIT",
                    help="node ranks or node names, comma- or space-separated (default: 6 automatic)")
    add_list_option(p, "--codecs", metavar="CODEC",
                    help="codec specs, comma- or space-separated (default: none float16 nnc:-38 nnc:-26 nnc:-18 nnc:-14 nnc:-10 nnc:-6 "
                        "nnc:-4 nnc:0)")
    opt.add_data_options(p)
    opt.add_run_options(p, "sweep_out", DEFAULT_BATCH)
    p.add_argument("--score-threshold", type=opt.SCORE, default=DEFAULT_SCORE_THRESHOLD,
                   help=f"keep detections scored at or above this (default {DEFAULT_SCORE_THRESHOLD})")
    p.add_argument("--anchor-threshold", type=opt.SCORE, default=DEFAULT_ANCHOR_THRESHOLD,
                   help=f"relative mAP: anchor detections at or above this are the truth "
                        f"(default {DEFAULT_ANCHOR_THRESHOLD})")


def run(args) -> int:
    from splitinfer.common.assets import IMAGES_DIR
    from splitinfer.common.cli.options import warn_random_weights
    from splitinfer.common.core.errors import UserError
    from splitinfer.common.studies.sweep import (DEFAULT_CODECS, SweepConfig, print_table, run_sweep, summary_lines,
                                         write_outputs)

    if args.max_images is not None and args.max_images < 1:
        raise UserError(f"--max-images must be at least 1 (got {args.max_images})")
    if not 0 <= args.score_threshold <= 1 or not 0 <= args.anchor_threshold <= 1:
        raise UserError("--score-threshold and --anchor-threshold must be in [0, 1]")
    cfg = SweepConfig(model=args.model, data=args.data or str(IMAGES_DIR), splits=args.splits,
                      codecs=list(args.codecs or DEFAULT_CODECS), family=args.family, gt=args.gt,
                      out_dir=args.out_dir, cache_dir=args.cache_dir, workers=args.workers,
                      ray_address=args.ray_address, batch_size=args.batch_size, max_images=args.max_images,
                      start=args.start,
                      score_threshold=args.score_threshold, anchor_threshold=args.anchor_threshold,
                      resume=not args.fresh)
    warn_random_weights(NAME, args.model)
    result = run_sweep(cfg, progress=not args.quiet)
    paths = write_outputs(result, args.out_dir, plots=not args.no_plots)
    print_table(result)
    for line in summary_lines(result):
        print(line)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0

