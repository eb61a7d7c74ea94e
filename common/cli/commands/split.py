"""Cut an ONNX model at a node into Part I (UE) and Part II (network), write both and a JSON manifest.

Compatible with the field's split_onnx_multi.py: -a MODEL, -r RANK or -n NAME, --flag before|after (the
field's `-f before|after` works too; elsewhere `-f` is the model family).
Prints the split node, Part I/II inputs and outputs and the intermediate data that crosses the cut.
"""

from __future__ import annotations

from splitinfer.common.cli.options import add_flag_option

NAME = "split"
HELP = "split an ONNX model at a node into Part I and Part II (+ JSON manifest)"


def add_arguments(p):
    p.add_argument("-a", "--model", required=True, metavar="MODEL",
                   help="ONNX model file, model folder or bundled model id")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("-r", "--rank", type=int, help="index of the split node in topological order "
                       "(0..N; N with 'before' = everything in Part I)")
    which.add_argument("-n", "--name", help="name of the split node")
    add_flag_option(p)
    p.add_argument("-o", "--out-dir", metavar="DIR", help="where to write the parts (default: beside the model)")
    p.add_argument("--verify", action="store_true",
                   help="run the whole model and Part II(Part I(x)) in onnxruntime and compare every output")
    p.add_argument("--input", metavar="NPZ", help="with --verify: .npz of model inputs (default: random)")
    p.add_argument("--seed", type=int, default=0, help="with --verify: seed of the random inputs")
    p.add_argument("--rtol", type=float, default=0.0, help="with --verify: relative tolerance (default exact)")
    p.add_argument("--atol", type=float, default=0.0, help="with --verify: absolute tolerance (default exact)")


def _fmt(info) -> str:
    shape = "?" if info.shape is None else "[" + ", ".join("?" if d is None else str(d) for d in info.shape) + "]"
    return f"{info.name}  {info.dtype or '?'}{shape}"


def run(args) -> int:
    from pathlib import Path

    from splitinfer.common.core.errors import UserError
    from splitinfer.common.core.models import find_model
    from splitinfer.common.split.graph import SplitGraph, file_sha256, load_feeds, split_model, verify_split
    from splitinfer.common.core.onnx_io import load_model

    model_path = find_model(args.model)
    model = load_model(model_path)
    graph = SplitGraph(model, source_sha256=file_sha256(model_path))
    if args.out_dir:
        out = Path(args.out_dir)
        if out.exists() and not out.is_dir():
            raise UserError(f"output directory is a file: {out}")
    p1, p2, manifest, plan = split_model(model_path, rank=args.rank, name=args.name, flag=args.flag,
                                         out_dir=args.out_dir, graph=graph)
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
