"""Export the reference detectors to ONNX, and list model families and bundled models.

  splitinfer models export ssd_resnet [-o FILE] [--checkpoint FILE]
  splitinfer models export retinanet  [-o FILE] [--weights DEFAULT|FILE] [--variant torchvision|tr]
  splitinfer models import darknet CFG WEIGHTS [--names coco.names] -o DIR
  splitinfer models list

ssd_resnet is NVIDIA's SSD300 ResNet-50; retinanet is torchvision's retinanet_resnet50_fpn with its
transform and post-processing in the graph. Offline both get deterministic random weights (with
trained-like batch-norm statistics, so the graph structure matches an export of a trained model).
`--weights DEFAULT` fetches torchvision's trained RetinaNet weights (needs network or the torch hub
cache). `--variant tr` exports the TR's retinanet.onnx instead: torchvision's RetinaNet v2 from a batch
tensor `input_images` [bs,3,h,w], numeric output names, opset 11 (family retinanet_tr). An output named `model.onnx` also gets a `model.json`, making its folder a model-repository entry.
"""

from __future__ import annotations

from splitinfer.common.cli.commands import models_import

NAME = "models"
HELP = "export ssd_resnet/retinanet to ONNX; import darknet YOLOs; list families and bundled models"

EXPORTABLE = ("ssd_resnet", "retinanet")


def OUTPUTS(args) -> dict:
    """Output options checked and prepared by the CLI before run(): `export -o`."""
    return {"output": "file"} if getattr(args, "action", None) == "export" else {}


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    ex = sub.add_parser("export", help="export a reference detector to ONNX with torch")
    ex.add_argument("name", choices=EXPORTABLE, help="model to export")
    ex.add_argument("-o", "--output", help="output .onnx file (default: <name>.onnx)")
    ex.add_argument("--checkpoint", metavar="FILE", help="torch state dict to load (plain tensors only)")
    ex.add_argument("--weights", metavar="DEFAULT|FILE",
                    help="retinanet: DEFAULT = torchvision's trained COCO weights (downloaded), or a state-dict file")
    ex.add_argument("--variant", choices=("torchvision", "tr"), default="torchvision",
                    help="retinanet: torchvision = ours ([3,H,W] input `input`); tr = the TR's export "
                         "(RetinaNet v2, `input_images` [bs,3,h,w], numeric output names, opset 11)")
    models_import.add_parser(sub)
    sub.add_parser("list", help="list model families, bundled models and exportable models")


def run(args) -> int:
    if args.action == "export":
        return _export(args)
    if args.action == "import":
        return models_import.run_import(args)
    if args.action == "list":
        return _list()
    args._parser.print_help()
    return 2


def _export(args) -> int:
    import json
    import time
    from pathlib import Path

    from splitinfer.common.models import export as exporters
    from splitinfer.common.core.errors import UserError

    out = Path(args.output or f"{args.name}.onnx")
    if out.suffix.lower() != ".onnx":
        raise UserError(f"output must be an .onnx file: {out}")
    if out.is_dir():
        raise UserError(f"output is a folder, expected a file: {out}")
    if args.name == "ssd_resnet" and args.weights is not None:
        raise UserError("ssd_resnet has no downloadable weights; use --checkpoint FILE")
    print(f"exporting {args.name} -> {out} (torch, TorchScript exporter) ...", flush=True)
    t0 = time.perf_counter()
    path = exporters.export(args.name, out, checkpoint=args.checkpoint, weights=args.weights,
                            variant=getattr(args, "variant", "torchvision"))
    family = "retinanet_tr" if getattr(args, "variant", "torchvision") == "tr" else args.name
    if out.name == "model.onnx":
        import onnx

        weights = next((p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
                        if p.key == "splitinfer.weights"), "")
        out.with_name("model.json").write_text(json.dumps({"family": family, "weights": weights}, indent=2) + "\n")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    from splitinfer.common.core.models import random_weights_warning

    warning = random_weights_warning(path)
    if warning:
        print(warning, flush=True)
    return 0


def _list() -> int:
    import json

    from splitinfer.common.assets import MODELS_DIR
    from splitinfer.common.families import family_names, get_family

    print("families:")
    width = max([len(n) for n in family_names()] + [11])  # columns fit the longest name (retinanet_tr)
    for name in family_names():
        fam = get_family(name)
        size = f"{fam.input_size[0]}x{fam.input_size[1]}" if fam.input_size else "any size"
        print(f"  {name:<{width}} {size:<9} {fam.description}")
    print(f"bundled models ({MODELS_DIR}):")
    for d in sorted(MODELS_DIR.iterdir()) if MODELS_DIR.is_dir() else []:
        onnx_path, info = d / "model.onnx", d / "model.json"
        if onnx_path.is_file() and info.is_file():
            try:
                family = json.loads(info.read_text()).get("family", "?")
            except ValueError:
                family = "? (unreadable model.json)"
            print(f"  {d.name:<{width}} family {family:<{width}} {onnx_path.stat().st_size / 1e6:6.1f} MB")
    print(f"exportable: {', '.join(EXPORTABLE)} (splitinfer models export NAME)")
    return 0
