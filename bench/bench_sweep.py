"""Sweep speed: the fast sweep against the naive way, side by side on the same splits, codecs and images.

Naive (what a per-split script does): for every (split, codec), split the model, create both
sessions, and for every image read it, preprocess, run Part I, encode, decode, run Part II and
post-process; one process. Fast (`splitinfer sweep`): every image runs the whole model once with all
crossing tensors exposed, then per (split, codec) only encode/decode/Part II, on a process pool.
Both paths end with the same mAP evaluation, which is timed in both. The fast sweep runs on an empty
cache (a resumed sweep would be faster still; its time is printed too).

    .venv/bin/python bench/bench_sweep.py [--splits 27 46 95] [--codecs none float16 nnc:-4] [--max-images 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def naive_sweep(model_path, family, ranks, codecs, items, score_threshold, reference):
    """Rows the naive way; returns (stored rows in the sweep's format, seconds per phase). `reference`:
    the whole model's outputs per image (for the fidelity sums every row carries)."""
    from splitinfer.common.codecs import get_codec
    from splitinfer.common.split.graph import SplitGraph, consolidate
    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.core.runtime import make_session
    from splitinfer.common.studies.sweep import read_frames
    from splitinfer.common.studies.sweep.fidelity import frame_stats

    phases = dict.fromkeys(("split", "sessions", "read+preprocess", "part1", "encode", "decode", "part2",
                            "postprocess"), 0.0)
    t = time.perf_counter()
    graph = SplitGraph(load_model(model_path))
    phases["split"] += time.perf_counter() - t
    stored = {}
    for r in ranks:
        for spec in codecs:
            codec = get_codec(spec)
            t = time.perf_counter()
            plan = graph.plan(rank=r)
            part1, part2 = graph.extract(plan)
            t1 = time.perf_counter()
            s1 = make_session(part1, device="cpu")
            s2 = None if plan.part2_identity else make_session(part2, device="cpu")
            t2 = time.perf_counter()
            phases["split"] += t1 - t
            phases["sessions"] += t2 - t1
            recs = {}
            for name, _, image in read_frames(items):
                t = time.perf_counter()
                feeds, meta = family.preprocess(image)
                t1 = time.perf_counter()
                out1 = dict(zip(plan.part1_outputs, s1.run({k: v for k, v in feeds.items() if k in s1.input_names},
                                                           plan.part1_outputs)))
                t2 = time.perf_counter()
                payloads = {n: codec.encode(a) for n, a in out1.items()}
                t3 = time.perf_counter()
                dec = {n: codec.decode(payloads[n], out1[n].dtype, out1[n].shape, trusted=True) for n in out1}
                t4 = time.perf_counter()
                out2 = {} if s2 is None else dict(zip(plan.part2_outputs, s2.run(
                    {n: dec[n] for n in plan.part2_inputs}, plan.part2_outputs)))
                t5 = time.perf_counter()
                outputs = dict(zip([o for o, _ in plan.consolidation], consolidate(plan, dec, out2)))
                dets = family.postprocess(outputs, meta, score_threshold)
                t6 = time.perf_counter()
                for k, a, b in (("read+preprocess", t, t1), ("part1", t1, t2), ("encode", t2, t3), ("decode", t3, t4),
                                ("part2", t4, t5), ("postprocess", t5, t6)):
                    phases[k] += b - a
                recs[name] = {"raw": sum(a.nbytes for a in out1.values()), "enc": sum(map(len, payloads.values())),
                              "elems": sum(a.size for a in out1.values()),
                              "fid": frame_stats(reference[name], outputs),
                              "encode_s": t3 - t2, "decode_s": t4 - t3, "part2_s": t5 - t4, "max_abs_err": 0.0,
                              "dets": [[d.label, d.x1, d.y1, d.x2, d.y2, d.score] for d in dets]}
            stored[(r, codec.spec)] = {"images": recs}
    return stored, phases


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="nanodet")
    ap.add_argument("--splits", nargs="+", help="ranks or node names (default: the sweep's 6 automatic splits)")
    ap.add_argument("--codecs", nargs="+", default=["none", "float16", "nnc:-4"])
    ap.add_argument("--data", help="images (default: the bundled photos)")
    ap.add_argument("--max-images", type=int, default=4)
    ap.add_argument("--workers", type=int, help="fast sweep's pool size (default: one per core)")
    args = ap.parse_args(argv)

    import os

    from splitinfer.common.assets import IMAGES_DIR
    from splitinfer.common.codecs import get_codec
    from splitinfer.common.families import resolve_model
    from splitinfer.common.split.graph import SplitGraph
    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.studies.sweep import (DEFAULT_ANCHOR_THRESHOLD, DEFAULT_SCORE_THRESHOLD, SweepConfig,
                                                 data_items, evaluate_rows, resolve_splits, run_sweep)

    model_path, family = resolve_model(args.model)
    data = args.data or str(IMAGES_DIR)
    items = data_items(data, args.max_images)
    graph = SplitGraph(load_model(model_path))
    ranks = resolve_splits(graph, args.splits)
    codecs = [get_codec(c) for c in args.codecs]
    workers = args.workers or os.cpu_count() or 1
    print(f"model {model_path.parent.name}: {graph.num_nodes} nodes; splits {ranks}; codecs "
          f"{[c.spec for c in codecs]}; {len(items)} images; {len(ranks) * len(codecs)} rows; {os.cpu_count()} CPUs")

    work = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    cfg = dict(model=args.model, data=data, splits=ranks, codecs=[c.spec for c in codecs], max_images=args.max_images)

    t = time.perf_counter()
    fast = run_sweep(SweepConfig(**cfg, out_dir=str(work / "fast"), workers=workers), progress=False)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    run_sweep(SweepConfig(**cfg, out_dir=str(work / "fast1"), workers=0), progress=False)
    t_fast1 = time.perf_counter() - t
    t = time.perf_counter()
    resumed = run_sweep(SweepConfig(**cfg, out_dir=str(work / "fast")), progress=False)
    t_resumed = time.perf_counter() - t
    assert resumed.stats["rows_computed"] == 0

    t = time.perf_counter()
    # the naive way's anchor: the whole model run from each image (same as the fast path's anchor)
    from splitinfer.common.core.runtime import make_session
    from splitinfer.common.studies.sweep import read_frames

    sess = make_session(model_path, device="cpu")
    anchor, reference = {}, {}
    for name, _, image in read_frames(items):
        feeds, meta = family.preprocess(image)
        reference[name] = dict(zip(sess.output_names, sess.run(feeds)))
        anchor[name] = family.postprocess(reference[name], meta, DEFAULT_SCORE_THRESHOLD)
    stored, phases = naive_sweep(model_path, family, ranks, [c.spec for c in codecs], items, DEFAULT_SCORE_THRESHOLD,
                                 reference)
    plans = {r: graph.plan(rank=r) for r in ranks}
    naive_rows = evaluate_rows(ranks, codecs, graph, plans, stored, set(stored), anchor, None,
                                DEFAULT_ANCHOR_THRESHOLD, False)
    t_naive = time.perf_counter() - t

    print("\nrow                     naive sent B   fast sent B   naive rel mAP  fast rel mAP")
    worst_bytes = worst_map = 0.0
    for a, b in zip(naive_rows, fast.rows):
        rel = abs(a.encoded_bytes - b.encoded_bytes) / a.encoded_bytes
        worst_bytes, worst_map = max(worst_bytes, rel), max(worst_map, abs(a.rel_map - b.rel_map))
        print(f"  r{a.rank:<4} {a.codec:<14} {a.encoded_bytes:>14,.0f} {b.encoded_bytes:>13,.0f} "
              f"{100 * a.rel_map:>14.1f} {100 * b.rel_map:>13.1f}")
    print(f"agreement: encoded bytes within {100 * worst_bytes:.3f} %, "
          f"relative mAP within {100 * worst_map:.2f} points")

    print("\nnaive phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
    s = fast.stats
    print(f"fast phases (s): activations {s['activations_s']:.2f}, tasks {s['tasks_s']:.2f}, mAP {s['evaluate_s']:.2f}")
    print(f"\nnaive (1 process)                  {t_naive:8.2f} s")
    print(f"fast, tasks in this process        {t_fast1:8.2f} s   speed-up x{t_naive / t_fast1:.2f}")
    print(f"fast, pool of {workers} workers            {t_fast:8.2f} s   speed-up x{t_naive / t_fast:.2f}")
    print(f"fast, resumed (all rows cached)    {t_resumed:8.2f} s   speed-up x{t_naive / t_resumed:.1f}")
    part1_naive = phases["part1"] + phases["read+preprocess"]
    print(f"model work: naive ran Part I {len(ranks) * len(codecs) * len(items)} times ({part1_naive:.2f} s with "
          f"reading/preprocessing); fast ran the whole model {len(items)} times ({s['activations_s']:.2f} s)")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
