"""Split-engine speed on a real detector, side by side with `onnx.utils.extract_model`.

Prints: the one-pass crossing sets for all ranks, our Part I/II extraction per rank, one
`extract_model` call for the same cut, and the ratios. Without a model path it exports torchvision's
RetinaNet-ResNet50-FPN (random weights, TorchScript exporter, opset 17; about 2,050 nodes).

    .venv/bin/python bench/bench_split.py [MODEL.onnx] [--ranks 20] [--keep DIR]
"""

from __future__ import annotations

import argparse
import statistics
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
        return f"{self.wall * 1000:.0f} ms wall / {self.cpu * 1000:.0f} ms CPU"

    @staticmethod
    def median(timers) -> str:
        return (f"{statistics.median(t.wall for t in timers) * 1000:.0f} ms wall / "
                f"{statistics.median(t.cpu for t in timers) * 1000:.0f} ms CPU")


def export_retinanet(path: Path, size: int = 800) -> Path:
    """TorchScript export (dynamo=False) of RetinaNet with random weights; nothing is downloaded."""
    import torch
    import torchvision

    model = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None).eval()
    x = torch.rand(1, 3, size, size)
    torch.onnx.export(model, x, str(path), opset_version=17, dynamo=False, input_names=["images"])
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="ONNX model (default: export RetinaNet)")
    ap.add_argument("--ranks", type=int, default=20, help="how many spread ranks to extract")
    ap.add_argument("--keep", help="directory to keep the exported model and parts in")
    args = ap.parse_args(argv)

    import onnx

    from splitinfer.common.split.graph import SplitGraph, file_sha256
    from splitinfer.common.core.onnx_io import load_model, save_model

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_split_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.model:
        model_path = Path(args.model)
    else:
        model_path = work / "retinanet_resnet50_fpn.onnx"
        if not model_path.exists():
            t = time.perf_counter()
            export_retinanet(model_path)
            print(f"exported RetinaNet in {time.perf_counter() - t:.1f} s -> {model_path}")

    t = time.perf_counter()
    model = load_model(model_path)
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    sha = file_sha256(model_path)
    t_sha = time.perf_counter() - t
    t = time.perf_counter()
    graph = SplitGraph(model, source_sha256=sha)
    t_analyse = time.perf_counter() - t
    t = time.perf_counter()
    sets = graph.all_crossing_sets()
    t_all = time.perf_counter() - t
    t = time.perf_counter()
    graph._type_map()
    t_types = time.perf_counter() - t
    n = graph.num_nodes
    print(f"model: {model_path.name}: {n} nodes, {model_path.stat().st_size / 1e6:.1f} MB; load {t_load:.2f} s, "
          f"sha256 {t_sha:.2f} s")
    print(f"analysis (order, producers, consumers, constants, intervals): {t_analyse * 1000:.1f} ms (once)")
    print(f"dtype/shape inference on a weightless skeleton: {t_types * 1000:.1f} ms (once)")
    print(f"crossing sets for all {n + 1} ranks, one pass: {t_all * 1000:.1f} ms; "
          f"largest set {max(map(len, sets))} tensors")

    # ranks spread over the graph plus the one with most crossing tensors (multi-branch)
    k = max(2, args.ranks)
    ranks = sorted({round(i * n / (k - 1)) for i in range(k)} | {max(range(n + 1), key=lambda r: len(sets[r]))})
    ext, save = [], []
    for r in ranks:
        with Timer() as te:
            plan = graph.plan(rank=r)
            graph.extract(plan)
        with Timer() as ts:
            graph.write_parts(plan, work / f"p1_{r}.onnx", work / f"p2_{r}.onnx")
        ext.append(te)
        save.append(ts)
    print(f"our plan+extract (Part I and II, in memory) over {len(ranks)} ranks: {Timer.median(ext)} median, "
          f"max wall {max(t.wall for t in ext) * 1000:.0f} ms")
    print(f"plan + writing both files (write_parts: weights serialised once per model): {Timer.median(save)} "
          f"median; first rank {save[0]}")

    # one onnx.utils.extract_model call for the same kind of cut (Part I of the median rank)
    r = ranks[len(ranks) // 2]
    plan = graph.plan(rank=r)
    with Timer() as tref:
        onnx.utils.extract_model(str(model_path), str(work / "extract_model_p1.onnx"), list(plan.part1_inputs),
                                 list(plan.part1_outputs), check_model=False)
    ours = []
    for _ in range(3):
        with Timer() as t:
            p1, p2 = graph.extract(graph.plan(rank=r))
        ours.append(t)
    with Timer() as tw:
        graph.write_parts(plan, work / "ours_p1.onnx", work / "ours_p2.onnx")
    with Timer() as tsave:
        save_model(p1, work / "save_p1.onnx")
        save_model(p2, work / "save_p2.onnx")
    t_ours = statistics.median(t.wall for t in ours)
    print(f"rank {r}: onnx.utils.extract_model (Part I only, incl. its file I/O): {tref}")
    print(f"  ours, Part I + Part II in memory: {Timer.median(ours)}: ratio {tref.wall / t_ours:.0f}x wall")
    print(f"  ours, extract + write both files: {tw}: ratio {tref.wall / tw.wall:.1f}x wall "
          f"(extract + onnx_io.save_model of both instead: {tsave.wall + t_ours:.2f} s wall)")
    print(f"all {n + 1} crossing sets the naive way (one extract_model per rank): ~{tref.wall * (n + 1) / 60:.0f} min "
          f"vs one pass {t_all * 1000:.1f} ms: ratio {tref.wall * (n + 1) / t_all:.0f}x")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
