"""Speed of the per-rank analysis on RetinaNet (2,000+ nodes): all ranks, static and measured.

Side by side in one run, same machine, same image:
  plain     one ordinary inference of the whole model (the unit of cost)
  static    our static pass (per-node shape inference + shape arithmetic), all ranks
  measured  our one inference exposing every crossing tensor, all ranks
  per-rank  the naive way: build and run Part I for each rank; timed on a few sampled ranks and
            extrapolated to every rank (labelled as an estimate)
Prints seconds and ratios, and the peak memory of this process.

  .venv/bin/python bench/bench_analysis.py [--model FILE] [--samples 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="ONNX file (default: retinanet exported into the zoo cache)")
    ap.add_argument("--samples", type=int, default=3, help="ranks timed for the per-rank estimate")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import onnx

    from splitinfer.common.studies import analysis as A
    from splitinfer.common.studies.feeds import image_feeds, load_image
    from splitinfer.common.models import zoo
    from splitinfer.common.split.graph import SplitGraph
    from splitinfer.common.core.runtime import make_session

    path = args.model or zoo.model_path("retinanet")
    model = onnx.load(str(path))
    img, img_name = load_image(None)
    feeds, how = image_feeds(model, img, None, path)
    t = time.perf_counter()
    graph = SplitGraph(model)
    t_graph = time.perf_counter() - t
    print(f"model {path}: {graph.num_nodes} nodes; image {img_name} -> "
          f"{ {k: list(v.shape) for k, v in feeds.items()} } ({how})")

    sess = make_session(model, device="cpu", threads=args.threads)
    sess.run(feeds)  # warm-up
    t = time.perf_counter()
    sess.run(feeds)
    t_plain = time.perf_counter() - t
    del sess

    t = time.perf_counter()
    static = A.analyze(model, feeds=feeds, measure=False, graph=graph)
    t_static = time.perf_counter() - t
    t = time.perf_counter()
    full = A.analyze(model, feeds=feeds, graph=graph)
    t_full = time.perf_counter() - t
    known = sum(r.static_bytes is not None for r in static.rows)
    agree = sum(r.agree is True for r in full.rows)
    disagree = sum(r.agree is False for r in full.rows)

    # the naive way on a few ranks: extract Part I and run it (what one run per rank costs)
    ranks = [int(r) for r in np.linspace(1, graph.num_nodes - 1, args.samples + 2)[1:-1].round()]
    per_rank = []
    for r in ranks:
        t = time.perf_counter()
        plan = graph.plan(rank=r)
        part1, _ = graph.extract(plan)
        s = make_session(part1, device="cpu", threads=args.threads)
        s.run({k: v for k, v in feeds.items() if k in s.input_names})
        per_rank.append(time.perf_counter() - t)
    naive = float(np.mean(per_rank)) * (graph.num_nodes + 1)

    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"ranks {len(full.rows)}: static size known at {known}, static == measured at {agree}, "
          f"disagree at {disagree}; measured in {full.measure_runs} run(s)")
    print(f"{'':<34}{'seconds':>10}{'x plain':>10}")
    rows = [("plain inference (1 run)", t_plain), ("graph analysis (SplitGraph)", t_graph),
            ("static, all ranks", t_static), ("static + measured, all ranks", t_full),
            (f"per-rank Part I runs (est., {args.samples} timed)", naive)]
    for name, sec in rows:
        print(f"{name:<34}{sec:>10.2f}{sec / t_plain:>10.1f}")
    print(f"speed-up of one exposed run over per-rank runs: {naive / t_full:.0f}x; peak memory {rss_gb:.2f} GB")


if __name__ == "__main__":
    main()
