"""`splitinfer export triton`: split models as a Triton Inference Server model repository.

Writes, per split rank, Part I and Part II as onnxruntime-backend models (`config.pbtxt` + `1/model.onnx`)
and an ensemble chaining them; the library is splitinfer.common.models.triton.
"""

from __future__ import annotations

NAME = "export"
HELP = "export split models for a serving engine (triton: Triton model repository, onnxruntime backend)"
# output options (argparse dest -> "file" or "dir"), checked and prepared by the CLI before run()
OUTPUTS = {"out": "dir"}


def add_arguments(p):
    from splitinfer.common.cli import options as opt

    p.add_argument("target", choices=["triton"], help="serving engine layout to write")
    p.add_argument("-a", "--model", default="nanodet", metavar="MODEL",
                   help="ONNX model file, model folder or bundled model id (default: nanodet)")
    p.add_argument("-r", "--split", type=opt.COUNT, nargs="+", required=True, metavar="RANK",
                   help="split ranks to export (e.g. 9 60)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="the model repository folder to write")
    p.add_argument("--name", help="model name prefix in the repository (default: the model's folder or file name)")
    p.add_argument("--instances", type=opt.POSITIVE_INT, default=1, help="instance_group count per part (default 1)")
    p.add_argument("--gpu", action="store_true", help="instance_group kind KIND_GPU (default KIND_CPU)")
    p.add_argument("--no-ensemble", action="store_true", help="write only the parts, no ensemble")


def run(args) -> int:
    from tqdm import tqdm

    from splitinfer.common.core.errors import UserError
    from splitinfer.common.core.models import find_model
    from splitinfer.common.models.triton import export_triton

    if args.instances < 1:
        raise UserError(f"--instances must be at least 1, got {args.instances}")
    model_path = find_model(args.model)
    with tqdm(total=len(args.split), desc="export triton", unit="split", disable=None) as bar:
        done = export_triton(model_path, args.split, args.out, model_name=args.name, instances=args.instances,
                             gpu=args.gpu, ensemble=not args.no_ensemble, progress=bar)
    for d in done:
        models = ", ".join(n for n in (d.part1, d.part2, d.ensemble) if n)
        print(f"split {d.rank}: {models}")
    print(f"Triton model repository: {args.out} (tritonserver --model-repository {args.out})")
    return 0
