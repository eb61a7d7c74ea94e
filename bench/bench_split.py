"""Split-engine speed on a real detector, side by side with `onnx.utils.extract_model`, end to end.

Fair comparison: both sides start from the same model FILE and a list of ranks, and end with the same
outputs, Part I and Part II written as ONNX files for every rank. Everything each side needs is timed:

- ours: load the file, analyse the graph once (order, constants, crossing intervals, types), then per
  rank plan + write both parts (`SplitGraph.write_parts`);
- ours, onnx's writer: the same, but each part built as a full ModelProto and written with
  `onnx_io.save_model` (the plain onnx path, to measure what parts.py's weight fragments buy);
- extract_model: per rank two `onnx.utils.extract_model` calls (Part I: model inputs -> crossing tensors
  and early outputs; Part II: crossing tensors -> remaining outputs), each reading the file, inferring
  shapes and writing its part, exactly as a user would call it.

Ratios are of wall time measured in this one run. With --check, every written part pair is run in
onnxruntime on the same random inputs and must give the same outputs on both sides.
Without a model path it exports torchvision's RetinaNet-ResNet50-FPN (random weights, TorchScript
exporter, opset 17; about 2,050 nodes); `--model nanodet` uses the bundled NanoDet-m.

    .venv/bin/python bench/bench_split.py [MODEL] [--ranks 5] [--check] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path


class Timer:
    """Wall and CPU time of a block: CPU time stays meaningful when the machine is shared."""

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._w
        self.cpu = time.process_time() - self._c

    def __str__(self):
        return f"{self.wall:.2f} s wall / {self.cpu:.2f} s CPU"


def export_retinanet(path: Path, size: int = 800) -> Path:
    """TorchScript export (dynamo=False) of RetinaNet with random weights; nothing is downloaded."""
    import torch
    import torchvision

    model = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None).eval()
    x = torch.rand(1, 3, size, size)
    torch.onnx.export(model, x, str(path), opset_version=17, dynamo=False, input_names=["images"])
    return path


def pick_ranks(model_path: Path, k: int) -> list[int]:
    """k ranks spread over the graph plus the one with most crossing tensors (chosen before timing)."""
    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.split.graph import SplitGraph

    graph = SplitGraph(load_model(model_path))
    n = graph.num_nodes
    sets = graph.all_crossing_sets()
    spread = {round(i * n / (k + 1)) for i in range(1, k + 1)}
    return sorted(spread | {max(range(1, n), key=lambda r: len(sets[r]))})


def ours(model_path: Path, ranks, out: Path, writer: str) -> dict:
    """Load + one analysis + per rank plan and both part files; `writer` 'fragments' or 'save_model'."""
    from splitinfer.common.core.files import file_sha256
    from splitinfer.common.core.onnx_io import load_model, save_model
    from splitinfer.common.split.graph import SplitGraph

    files = {}
    with Timer() as t_setup:
        graph = SplitGraph(load_model(model_path), source_sha256=file_sha256(model_path))
        graph.type_map()
    with Timer() as t_ranks:
        for r in ranks:
            plan = graph.plan(rank=r)
            p1, p2 = out / f"p1_{r}.onnx", out / f"p2_{r}.onnx"
            if writer == "fragments":
                graph.write_parts(plan, p1, p2)
            else:
                for part, path in zip(graph.extract(plan), (p1, p2)):
                    save_model(part, path)
            files[r] = (p1, p2, plan)
    return {"setup": t_setup, "ranks": t_ranks, "files": files}


def reference(model_path: Path, plans: dict, out: Path) -> dict:
    """Two onnx.utils.extract_model calls per rank, for the same parts our plans describe."""
    import onnx

    files, failed = {}, {}
    with Timer() as t:
        for r, plan in plans.items():
            p1, p2 = out / f"ref_p1_{r}.onnx", out / f"ref_p2_{r}.onnx"
            try:
                onnx.utils.extract_model(str(model_path), str(p1), list(plan.part1_inputs), list(plan.part1_outputs),
                                         check_model=False)
                if not plan.part2_identity:
                    onnx.utils.extract_model(str(model_path), str(p2), list(plan.part2_inputs),
                                             list(plan.part2_outputs), check_model=False)
                files[r] = (p1, p2)
            except Exception as exc:  # report, keep timing the others
                failed[r] = f"{type(exc).__name__}: {str(exc)[:120]}"
    return {"ranks": t, "files": files, "failed": failed}


def same_outputs(model_path: Path, plan, ours_files, ref_files) -> bool:
    """Both part pairs give the same model outputs on the same random inputs (onnxruntime, CPU)."""
    import numpy as np

    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.split.graph import random_feeds, run_split
    from splitinfer.common.split.verify import verify_session

    feeds = random_feeds(load_model(model_path, load_external_data=False))
    a = run_split(verify_session(ours_files[0]), verify_session(ours_files[1]), plan, feeds)
    p2 = ref_files[1] if not plan.part2_identity else ours_files[1]
    b = run_split(verify_session(ref_files[0]), verify_session(p2), plan, feeds)
    return all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="ONNX model or bundled id (default: export RetinaNet)")
    ap.add_argument("--ranks", type=int, default=5, help="spread ranks to split at, plus the max-branch one")
    ap.add_argument("--check", action="store_true", help="run both sides' parts and compare their outputs")
    ap.add_argument("--keep", help="directory to keep the exported model and parts in")
    args = ap.parse_args(argv)

    from splitinfer.common.core.models import find_model

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_split_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.model:
        model_path = find_model(args.model)
    else:
        model_path = work / "retinanet_resnet50_fpn.onnx"
        if not model_path.exists():
            t = time.perf_counter()
            export_retinanet(model_path)
            print(f"exported RetinaNet in {time.perf_counter() - t:.1f} s -> {model_path}")
    ranks = pick_ranks(model_path, max(1, args.ranks))
    print(f"model: {model_path} ({model_path.stat().st_size / 1e6:.1f} MB); ranks {ranks}")

    sides = {}
    for name, writer in (("ours", "fragments"), ("ours_save", "save_model")):
        d = work / name
        d.mkdir(exist_ok=True)
        sides[name] = ours(model_path, ranks, d, writer)
    d = work / "extract_model"
    d.mkdir(exist_ok=True)
    ref = reference(model_path, {r: f[2] for r, f in sides["ours"]["files"].items()}, d)

    o, s = sides["ours"], sides["ours_save"]
    total_o = o["setup"].wall + o["ranks"].wall
    total_s = s["setup"].wall + s["ranks"].wall
    k = len(ranks)
    print(f"ours: load + analysis once {o['setup']}; {k} ranks x (plan + write both parts) {o['ranks']}; "
          f"total {total_o:.2f} s")
    print(f"ours with onnx_io.save_model instead of weight fragments: writing {s['ranks']}; total {total_s:.2f} s"
          f" -> fragments {s['ranks'].wall / o['ranks'].wall:.1f}x faster at writing")
    ok = len(ref["files"])
    print(f"onnx.utils.extract_model, 2 calls per rank, {ok}/{k} ranks done: {ref['ranks']}")
    for r, why in ref["failed"].items():
        print(f"  rank {r}: extract_model failed: {why}")
    if ok == k:
        print(f"end to end, same file in, same part files out: ours {ref['ranks'].wall / total_o:.1f}x faster "
              f"({ref['ranks'].wall / k:.2f} s vs {total_o / k:.2f} s per rank, analysis included)")
    if args.check:
        checks = [same_outputs(model_path, o["files"][r][2], o["files"][r][:2], ref["files"][r]) for r in ref["files"]]
        print(f"same model outputs from both sides' parts: {sum(checks)}/{len(checks)} ranks")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
