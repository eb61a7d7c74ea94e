"""Data crossing the network at every split point of a model, and what sending it costs.

For each split rank (rank 0 = the whole model on the network, sending the raw input): the node, the
number of crossing tensors (branches), their size from the model's shapes with symbolic dimensions
resolved for the input size (static; tensors that depend on the image itself are listed as unknown),
their size measured on a real photo (one inference for all ranks), whether the two agree, and the
transfer time at each bandwidth (bytes x 8 / rate; rates in tc's units: mbit = 10^6
bit/s, mbps = 10^6 BYTES/s; MB = 10^6 bytes). Bytes sent also count the model outputs Part I has already
made (the network consolidates them).

Writes, per input size, <model>_<H>x<W>.csv / .json / .png (size and branches per node); with several
--input-size values on a dynamic-input model also <model>_sizes_lines.png and <model>_sizes_bars.png.

MODEL is an .onnx file, a model folder, a bundled model id (nanodet) or a survey model name
(vgg16, resnet18, ..., ssd_resnet, retinanet: exported into the cache on first use).

examples:
  splitinfer analyze nanodet -o out/analysis
  splitinfer analyze resnet18 --input-size 224x224 320x320 480x640 --bandwidth 100M 1G
  splitinfer analyze retinanet.onnx --image photo.jpg --bandwidth 500M 1G 5G
"""

from __future__ import annotations

import argparse

from splitinfer.common.cli.options import add_list_option

NAME = "analyze"
HELP = "per split point: crossing tensors, static and measured sizes, transfer times (CSV, JSON, plots)"
# output options (argparse dest -> "file" or "dir"), checked and prepared by the CLI before run()
OUTPUTS = {"output": "dir"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from splitinfer.common.cli import options as opt

    p.add_argument("model", help="ONNX file, model folder, bundled model id or survey model name")
    add_list_option(p, "--input-size", metavar="HxW",
                   help="input height x width (several for a dynamic-input model; default: the family's "
                        "preprocessing, the model's nominal size, or the image's size)")
    p.add_argument("--image", metavar="FILE", help="photo to measure on (default: the first bundled photo)")
    add_list_option(p, "--bandwidth", default="500M,1G,5G", metavar="RATE",
                    help="link rates, tc's units: 500mbit, 1gbit, 10mbps (= bytes/s); 500M = 500mbit "
                         "(default: 500M 1G 5G; comma- or space-separated)")
    p.add_argument("-o", "--output", metavar="DIR", default="analysis", help="output folder (default: analysis)")
    p.add_argument("--device", choices=("cpu", "gpu", "auto"), default="cpu",
                   help="processing unit for the measuring inference (default: cpu)")
    p.add_argument("--static-only", action="store_true", help="skip the inference (no measured sizes)")
    p.add_argument("--no-plots", action="store_true", help="write CSV and JSON only")
    p.add_argument("--max-exposed-gb", type=opt.POSITIVE_FLOAT, default=6.0,
                   help="measure in chunks when the exposed tensors would hold more than this (default 6 GB)")


def resolve_model_arg(spec: str):
    """Path of MODEL: a survey model name (exported into the cache on first use), else any model spec
    (`splitinfer.common.core.models.find_model`: file, folder with model.onnx, bundled id)."""
    from pathlib import Path

    from splitinfer.common.core.models import find_model
    from splitinfer.common.models import zoo

    if spec in zoo.ALL and not Path(spec).exists():
        path = zoo.model_path(spec, export=False)
        if not path.is_file():
            print(f"exporting {spec} into {path.parent} (first use; cached afterwards) ...", flush=True)
        return zoo.model_path(spec)
    return find_model(spec, what=f"a survey model ({', '.join(zoo.ALL)})")


def run(args) -> int:
    from splitinfer.common.studies import analysis as A
    from splitinfer.common.studies import analysis_report as R
    from splitinfer.common.studies.feeds import load_image
    from splitinfer.common.studies.inputs import is_dynamic_input, parse_input_size
    from splitinfer.common.core.errors import UserError
    from splitinfer.common.core.files import make_output_dir
    from splitinfer.common.core.rates import parse_rate
    from splitinfer.common.split.graph import SplitGraph
    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.studies.splitability import model_label

    bandwidths = [parse_rate(b) for b in args.bandwidth]
    sizes = [parse_input_size(s) for s in args.input_size] if args.input_size else [None]
    if args.max_exposed_gb <= 0:
        raise UserError("--max-exposed-gb must be positive")
    path = resolve_model_arg(args.model)
    model = load_model(path)
    graph = SplitGraph(model)
    label = model_label(path)
    out = make_output_dir(args.output)
    image = None
    if not args.static_only:
        image, image_label = load_image(args.image)  # read once, and fail early on a bad file
    results = []
    for size in sizes:
        a = A.analyze(model, input_size=size, image=image, bandwidths=bandwidths, measure=not args.static_only,
                      device=args.device, graph=graph, model_path=path,
                      max_exposed_bytes=int(args.max_exposed_gb * 1e9), progress=True)
        a.model = label
        if image is not None:
            a.image = str(image_label)
        stem = out / f"{label}_{a.size_label}"
        written = [R.write_csv(a, stem.with_suffix(".csv")), R.write_json(a, stem.with_suffix(".json"))]
        if not args.no_plots:
            written.append(R.plot_per_node(a, stem.with_suffix(".png")))
        print("\n".join(R.summary_lines(a)))
        print("  wrote " + ", ".join(str(w) for w in written))
        results.append(a)
    if len(results) > 1 and not args.no_plots:
        lines, bars = R.plot_sizes_by_input(results, out / f"{label}_sizes_lines.png", out / f"{label}_sizes_bars.png")
        print(f"sizes per node for {len(results)} input sizes: wrote {lines}, {bars}")
    elif len(results) == 1 and is_dynamic_input(model) and not args.input_size:
        print("  (dynamic input: give several --input-size HxW to compare sizes per node across input sizes)")
    return 0
