"""Cut an ONNX model at a node into Part I (UE) and Part II (network), write both and a JSON manifest.

Compatible with the field's scripts (TR 26.847 Annex B.3):
  split_onnx_multi.py (B.3.4): -a/--anchor MODEL, -r RANK or -n NAME, -f/--flag before|after; parts
    `<model>_part_I_node_<rank>.onnx` and `_part_II_` beside the model (or in -o DIR)
  split_onnx.py (B.3.3):       MODEL NODE_NAME [before|after]; parts `<model>_Part_I_<node>.onnx` and
    `<model>_Part_II_<node>.onnx` beside the model, '/' in the node name written as '_'
Prints the split node, Part I/II inputs and outputs and the intermediate data that crosses the cut.

examples:
  splitinfer split -a nanodet -r 60 --verify
  splitinfer split --anchor models/ssd_resnet.onnx -n /feature_extractor/Relu -f after
  splitinfer split models/ssd_resnet.onnx /feature_extractor/feature_extractor.4/Relu before
"""

from __future__ import annotations

from splitinfer.common.cli.options import add_flag_option

NAME = "split"
HELP = "split an ONNX model at a node into Part I and Part II (+ JSON manifest)"
# output options (argparse dest -> "file" or "dir"), checked and prepared by the CLI before run()
OUTPUTS = {"out_dir": "dir"}


def add_arguments(p):
    from splitinfer.common.cli import options as opt

    p.add_argument("field", nargs="*", metavar="MODEL NODE [before|after]",
                   help="split_onnx.py's form: model file, split node name, flag (default before)")
    p.add_argument("-a", "--model", "--anchor", dest="model", metavar="MODEL",
                   help="ONNX model file, model folder or bundled model id (--anchor: the field's name)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("-r", "--rank", type=opt.COUNT, help="index of the split node in topological order "
                       "(0..N; N with 'before' = everything in Part I)")
    which.add_argument("-n", "--name", help="name of the split node")
    add_flag_option(p)
    p.add_argument("-o", "--out-dir", metavar="DIR", help="where to write the parts (default: beside the model)")
    p.add_argument("--verify", action="store_true",
                   help="run the whole model and Part II(Part I(x)) in onnxruntime and compare every output")
    p.add_argument("--input", metavar="NPZ", help="with --verify: .npz of model inputs (default: random)")
    p.add_argument("--seed", type=opt.COUNT, default=0, help="with --verify: seed of the random inputs")
    p.add_argument("--rtol", type=opt.NONNEG, default=0.0, help="with --verify: relative tolerance (default exact)")
    p.add_argument("--atol", type=opt.NONNEG, default=0.0, help="with --verify: absolute tolerance (default exact)")


def _fmt(info) -> str:
    shape = "?" if info.shape is None else "[" + ", ".join("?" if d is None else str(d) for d in info.shape) + "]"
    return f"{info.name}  {info.dtype or '?'}{shape}"


def _field_form(args) -> bool:
    """split_onnx.py's positional form (MODEL NODE [before|after]) into the options; True when it was used."""
    from splitinfer.common.core.errors import UserError

    if not args.field:
        if not args.model:
            raise UserError("give the model (-a MODEL) and the split point (-r RANK or -n NAME), "
                            "or split_onnx.py's form: MODEL NODE [before|after]")
        if args.rank is None and args.name is None:
            raise UserError("give the split point: -r RANK or -n NAME")
        return False
    if args.model or args.rank is not None or args.name is not None:
        raise UserError("give either MODEL NODE [before|after] or -a MODEL -r RANK/-n NAME, not both")
    if len(args.field) not in (2, 3):
        raise UserError(f"split_onnx.py's form is MODEL NODE [before|after], got {len(args.field)} values")
    args.model, args.name = args.field[0], args.field[1]
    if len(args.field) == 3:
        if args.field[2] not in ("before", "after"):
            raise UserError(f"split flag must be 'before' or 'after', got {args.field[2]!r}")
        args.flag = args.field[2]
    return True


def field_part_paths(model_path, node_name: str, out_dir=None):
    """split_onnx.py's names: `<stem>_Part_I_<node>.onnx`, `_Part_II_`, '/' written as '_' (+ our manifest)."""
    from pathlib import Path

    model_path = Path(model_path)
    d = Path(out_dir) if out_dir else model_path.parent
    safe = node_name.replace("/", "_")
    return (d / f"{model_path.stem}_Part_I_{safe}.onnx", d / f"{model_path.stem}_Part_II_{safe}.onnx",
            d / f"{model_path.stem}_split_{safe}.json")


def run(args) -> int:
    from pathlib import Path

    from splitinfer.common.core.errors import UserError
    from splitinfer.common.core.models import find_model
    from splitinfer.common.split.graph import SplitGraph, file_sha256, load_feeds, split_model, verify_split
    from splitinfer.common.core.onnx_io import load_model

    single_branch = _field_form(args)
    model_path = find_model(args.model)
    model = load_model(model_path)
    graph = SplitGraph(model, source_sha256=file_sha256(model_path))
    if args.out_dir:
        out = Path(args.out_dir)
        if out.exists() and not out.is_dir():
            raise UserError(f"output directory is a file: {out}")
    paths = field_part_paths(model_path, args.name, args.out_dir) if single_branch else None
    p1, p2, manifest, plan = split_model(model_path, rank=args.rank, name=args.name, flag=args.flag,
                                         out_dir=args.out_dir, graph=graph, paths=paths)
    n = graph.num_nodes
    where = "Part II" if plan.flag == "before" else "Part I"
    node = plan.node_name if plan.node_name is not None else "(end of graph)"
    print(f"Model: {model_path} ({n} nodes{'' if graph.was_sorted else ', re-sorted topologically'})")
    print(f"Split node: {node} (flag {plan.flag}: it goes to {where}; rank {plan.rank}: "
          f"Part I = nodes [0, {plan.rank}), Part II = nodes [{plan.rank}, {n}))")
    info = {t.name: t for t in plan.crossing}

    def describe(names):
        return [_fmt(info[x]) if x in info else _fmt(graph.tensor_info(x)) for x in names]

    for title, path, ins, outs in (("Part I", p1, plan.part1_inputs, plan.part1_outputs),
                                   ("Part II", p2, plan.part2_inputs, plan.part2_outputs)):
        print(f"{title}: {path}")
        print(f"  inputs : {', '.join(describe(ins)) or '(none)'}")
        print(f"  outputs: {', '.join(describe(outs)) or '(none)'}")
    if plan.part2_identity:
        print("  (Part II has no node of its own: it is the identity on Part I's final outputs)")
    print(f"Intermediate data ({len(plan.crossing)} tensors cross from Part I to Part II):")
    for t in plan.crossing:
        print(f"  {_fmt(t)}")
    for pt in plan.passthrough_inputs:
        if pt.mode == "tensor":
            print(f"  graph input {pt.name!r} is passed through to Part II")
        else:
            print(f"  graph input {pt.name!r} is needed by Part II only through Shape/Size: "
                  f"{', '.join(pt.shape_tensors)} computed in Part I instead")
    print("Consolidation: " + ", ".join(f"{o} <- Part {p}" for o, p in plan.consolidation))
    print(f"Manifest: {manifest}")

    if args.verify:
        feeds = load_feeds(args.input) if args.input else None
        report = verify_split(model_path, plan, feeds=feeds, rtol=args.rtol, atol=args.atol,
                              parts=(p1, p2), seed=args.seed)
        for line in report.lines():
            print(line)
        return 0 if report.ok else 1
    return 0
