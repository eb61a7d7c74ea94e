"""Rate-accuracy study: quality against bits per element and kB per frame for codec ladders, with BD-rates.

For a model, a few splits, a frame source (folder of images, one image or a video) and codec ladders
(default: NNC's QP ladder nnc:-38..-10/4, the fast quantiser's step ladder fq:-26..-2/4:x once it is
registered, and the ladder of each registered temporal codec family), prints and plots relative mAP
(and mAP against --gt where given) against bits per element and kB per frame, plus encode/decode MB/s,
one curve per codec family per split, and the Bjontegaard delta rate of each family against NNC. A model
without a family (or --family raw) is studied on the fidelity of its outputs (NMSE, PSNR, cosine,
top-1/top-5 agreement) instead of mAP.

Video: frames are taken consecutively (--start FIRST, --max-images N). A sequential (temporal) codec's
row codes its frames in order through one encoder/decoder pair, as the UE and the network process would
(one task per row; rows still run in parallel); its rows report kB per keyframe and per predicted frame.

Runs on the sweep's machinery: one whole-model run per frame, cached activations, finished rows cached
(an interrupted study resumes; --fresh recomputes), tasks on a process pool or Ray.

Ladders: `NAME:A..B` expands to every value from A to B in steps of 1, `/S` sets the step
(nnc:-38..-8/10 = nnc:-38 -28 -18 -8; fq:3..5/0.5 = fq:3 fq:3.5 ... fq:5).

Writes to -o DIR: report.md, study.csv, bd_rate.csv, rate_quality_bpe.png, rate_quality_kb.png,
throughput.png, sweep/ (the sweep's results.json and CSV); cache/ unless --cache-dir.

examples:
  splitinfer study nanodet --data docs/study/vtest_clip.avi --splits 46 95 --max-images 10 -o out/study
  splitinfer study nanodet --codecs nnc:-38..-8/10 fq:2..8 --data imgs/ --gt imgs/gt.json
  splitinfer study zoo:resnet18 --data imgs/ --splits 20 40 --quality top1   # raw: fidelity, no mAP
"""

from __future__ import annotations

import argparse

NAME = "study"
HELP = "rate-accuracy study: quality vs bits/element and kB/frame per codec ladder and split, BD-rate vs NNC"
# output options (argparse dest -> "file" or "dir"), checked and prepared by the CLI before run()
OUTPUTS = {"out_dir": "dir", "cache_dir": "dir"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from splitinfer.common.cli import options as opt
    from splitinfer.common.cli.options import add_list_option
    from splitinfer.common.studies.ratestudy import ANCHOR_FAMILY, QUALITIES

    p.add_argument("model", help="bundled model id (nanodet), model folder, .onnx file, or zoo:NAME (a torchvision "
                                 "model of the splitability zoo, exported on first use)")
    p.add_argument("--family", help="model family; 'raw' = any image model, fidelity metrics only "
                                    "(default: from the model's metadata, else raw)")
    add_list_option(p, "--splits", metavar="SPLIT", help="node ranks or node names (default: 6 automatic)")
    add_list_option(p, "--codecs", metavar="LADDER",
                   help="codec specs and ladders NAME:A..B[/STEP] (default: nnc:-38..-10/4, fq:-26..-2/4:x when "
                        "the fq codec is installed, else float16 zstd, and the temporal families' ladders)")
    opt.add_data_options(p)
    p.add_argument("--quality", choices=sorted(QUALITIES),
                   help="quality metric of the BD-rate (default: rel_map; psnr_db for a raw model)")
    p.add_argument("--anchor-family", default=ANCHOR_FAMILY,
                   help=f"codec family the BD-rates are against (default {ANCHOR_FAMILY})")
    opt.add_run_options(p, "study_out", 16)


def run(args) -> int:
    import shlex
    import sys

    from splitinfer.common.assets import IMAGES_DIR
    from splitinfer.common.cli.options import warn_random_weights
    from splitinfer.common.core.errors import UserError
    from splitinfer.common.studies.ratestudy import (StudyConfig, default_ladders, print_study, run_study,
                                                     summary_lines, write_study_outputs)

    if args.max_images is not None and args.max_images < 1:
        raise UserError(f"--max-images must be at least 1 (got {args.max_images})")
    cfg = StudyConfig(model=args.model, data=args.data or str(IMAGES_DIR), splits=args.splits,
                      codecs=list(args.codecs or default_ladders()), family=args.family, gt=args.gt,
                      out_dir=args.out_dir, cache_dir=args.cache_dir, workers=args.workers,
                      ray_address=args.ray_address, batch_size=args.batch_size, max_images=args.max_images,
                      start=args.start,
                      anchor_family=args.anchor_family, quality=args.quality, resume=not args.fresh)
    warn_random_weights(NAME, args.model)
    result = run_study(cfg, progress=not args.quiet)
    result.command = "splitinfer study " + " ".join(shlex.quote(a) for a in sys.argv[2:]) \
        if len(sys.argv) > 1 and sys.argv[1] == NAME else ""
    paths = write_study_outputs(result, args.out_dir, plots=not args.no_plots)
    print_study(result)
    for line in summary_lines(result):
        print(line)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0

