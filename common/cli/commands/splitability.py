"""Can these models be split, and does the split compute the same thing? One table for many models.

For each model: task, split possible (an interior cut whose two parts onnxruntime loads), verified with
inference (at sampled ranks, Part II(Part I(x)) equals the whole model bit for bit on a real photo),
multi-branch (some cut has several crossing tensors) and the largest number of branches.
Prints the table as Markdown; with -o DIR also writes DIR/splitability.md and DIR/splitability.csv.

MODEL_OR_DIR: .onnx files, or folders searched for .onnx files. --zoo adds the survey models
(torchvision's vgg16, resnet18, resnet152, resnext50_32x4d, squeezenet1_0, mobilenet_v3_large,
efficientnet_b0, inception_v3 with random weights, plus ssd_resnet, retinanet, the TR's retinanet_tr and
the bundled nanodet),
exported once into the cache (or --zoo-dir).

examples:
  splitinfer splitability --zoo -o docs
  splitinfer splitability --zoo resnet18 squeezenet1_0 nanodet
  splitinfer splitability models/ my_model.onnx --samples 8
"""

from __future__ import annotations

import argparse

NAME = "splitability"
HELP = "which models can be split (verified by inference), multi-branch cuts, max branches; Markdown + CSV"
# output options (argparse dest -> "file" or "dir"), checked and prepared by the CLI before run()
OUTPUTS = {"output": "dir"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from splitinfer.common.cli import options as opt

    p.add_argument("models", nargs="*", metavar="MODEL_OR_DIR", help=".onnx files or folders of them")
    p.add_argument("--zoo", nargs="*", metavar="NAME",
                   help="add the survey models (all when no NAME is given)")
    p.add_argument("--zoo-dir", metavar="DIR", help="where survey exports are kept (default: the user cache)")
    p.add_argument("--samples", type=opt.POSITIVE_INT, default=4,
                   help="evenly spaced ranks verified per model, plus the max-branch rank (default 4)")
    p.add_argument("--image", metavar="FILE", help="photo the verification runs on (default: a bundled one)")
    p.add_argument("-o", "--output", metavar="DIR", help="write splitability.md and splitability.csv here")


def run(args) -> int:
    from pathlib import Path

    from splitinfer.common.studies import splitability as S
    from splitinfer.common.models import zoo
    from splitinfer.common.studies.feeds import load_image
    from splitinfer.common.core.errors import UserError

    if args.samples < 0:
        raise UserError("--samples must be 0 or more")
    if not args.models and args.zoo is None:
        raise UserError("give model files/folders, or --zoo")
    paths = S.find_models(args.models) if args.models else []
    if args.zoo is not None:
        names = args.zoo or list(zoo.ALL)
        unknown = [n for n in names if n not in zoo.ALL]
        if unknown:
            raise UserError(f"unknown survey model(s) {', '.join(unknown)} (known: {', '.join(zoo.ALL)})")
        missing = [n for n in names if not zoo.model_path(n, args.zoo_dir, export=False).is_file()]
        if missing:
            print(f"exporting {', '.join(missing)} (first use; cached in "
                  f"{Path(args.zoo_dir) if args.zoo_dir else zoo.cache_dir()}) ...", flush=True)
        paths += zoo.ensure(names, args.zoo_dir, progress=True)
    image, _ = load_image(args.image)
    rows = []
    for path in paths:
        row = S.assess(path, samples=args.samples, image=image, progress=True)
        print(f"{row.model}: {row.nodes} nodes, split {'possible' if row.split_possible else 'NOT possible'}, "
              f"verified {len(row.ranks_ok)}/{len(row.ranks_checked)} ranks, max branches {row.max_branches} "
              f"({row.seconds:.1f} s)", flush=True)
        rows.append(row)
    table = S.to_markdown(rows)
    print()
    print(table)
    if args.output:
        out = Path(args.output)
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "splitability.md").write_text(table)
        except OSError as exc:
            raise UserError(f"cannot write to {out}: {exc}") from None
        S.write_csv(rows, out / "splitability.csv")
        print(f"wrote {out / 'splitability.md'}, {out / 'splitability.csv'}")
    return 1 if any(r.split_possible and not r.verified for r in rows) else 0
