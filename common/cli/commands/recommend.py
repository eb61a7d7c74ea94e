"""Recommend the split point and codec with the least estimated end-to-end latency.

latency = device time of Part I + encode + bytes x 8 / bandwidth + decode + server time of Part II.
Device and server times come from per-node onnxruntime profiles of the whole model (one profiled run
prices every split); bytes, codec times and accuracy come from a sweep's results.json
(`splitinfer sweep`). On one machine both sides are this CPU: the device is profiled with
--device-threads (default 1, a weak UE) and the server with --server-threads (default: all cores);
--server-speedup divides the server's Part II time to emulate faster hardware, or --server-profile
loads per-node times measured on the real server (--save-profiles DIR writes them).

Constraints: --min-map (percent, on --metric) and --keep-first K (privacy: the first K nodes stay on the
device, i.e. only splits at rank >= K). Prints the candidates on the Pareto front of bytes sent,
latency and accuracy, and the recommendation, for each --bandwidth.

examples:
  splitinfer recommend nanodet --results docs/sweep --bandwidth 100M 1G --min-map 95
  splitinfer recommend nanodet --results out/sweep --keep-first 20 --server-speedup 8
  splitinfer recommend nanodet --results out/sweep --save-profiles out/prof
  splitinfer recommend nanodet --results out/sweep --server-profile server_profile.json
"""

from __future__ import annotations

import argparse

from splitinfer.common.cli.options import add_family_option, add_list_option

NAME = "recommend"
HELP = "pick the split and codec with the least estimated latency (profiles + sweep results); Pareto front"
# output options (argparse dest -> "file" or "dir"), checked and prepared by the CLI before run()
OUTPUTS = {"save_profiles": "dir", "json": "file"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from splitinfer.common.cli import options as opt

    p.add_argument("model", help="bundled model id (nanodet), model folder or .onnx file")
    add_family_option(p)
    p.add_argument("--results", required=True, help="sweep results.json, or the sweep's output folder")
    add_list_option(p, "--bandwidth", default="1G", metavar="RATE",
                    help="uplink rate(s), tc's units: 100mbit 1gbit, 10mbps (= bytes/s); 1G = 1gbit (default 1G)")
    p.add_argument("--metric", default="rel_map", choices=("rel_map", "rel_map50", "map", "map50"),
                   help="accuracy measure (default rel_map: relative to the whole model)")
    p.add_argument("--min-map", type=float, metavar="PCT", help="minimum accuracy in percent on --metric")
    p.add_argument("--keep-first", type=opt.COUNT, default=0, metavar="K",
                   help="privacy: the first K nodes run on the device (splits at rank >= K only)")
    p.add_argument("--server-speedup", type=opt.POSITIVE_FLOAT, default=1.0, help="divide server Part II time by this (default 1)")
    p.add_argument("--device-profile", metavar="JSON", help="per-node device times (skip device profiling)")
    p.add_argument("--server-profile", metavar="JSON", help="per-node server times (skip server profiling)")
    p.add_argument("--save-profiles", metavar="DIR", help="write device_profile.json / server_profile.json here")
    p.add_argument("--image", help="image to profile with (default: a bundled photo)")
    p.add_argument("--runs", type=opt.POSITIVE_INT, default=10, help="profiled runs per side, after one warm-up (default 10)")
    p.add_argument("--device-threads", type=opt.THREADS, default=1, help="onnxruntime threads of the device (default 1)")
    p.add_argument("--server-threads", type=opt.THREADS, default=0, help="onnxruntime threads of the server (0: all cores)")
    p.add_argument("--all", action="store_true", help="print every feasible candidate, not only the Pareto front")
    p.add_argument("--json", metavar="FILE", help="write the candidates, front and choice as JSON")


def run(args) -> int:
    import json
    import math
    from dataclasses import asdict
    from pathlib import Path

    from splitinfer.common.core.rates import parse_rate, rate_label
    from splitinfer.common.assets import IMAGES_DIR
    from splitinfer.common.core.errors import UserError
    from splitinfer.common.families import resolve_model
    from splitinfer.common.split.graph import SplitGraph, file_sha256
    from splitinfer.common.core.images import read_image
    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.studies.recommend import (METRICS, build_candidates, choose, json_safe, load_profile,
                                             profile_line, profile_model, table_lines)
    from splitinfer.common.studies.sweep import load_results

    if args.keep_first < 0:
        raise UserError(f"--keep-first must be 0 or more (got {args.keep_first})")
    if args.min_map is not None and not 0 <= args.min_map <= 100:
        raise UserError(f"--min-map is a percentage in [0, 100] (got {args.min_map})")
    if not args.server_speedup > 0:
        raise UserError(f"--server-speedup must be positive (got {args.server_speedup})")
    bandwidths = [parse_rate(b) for b in args.bandwidth]
    model_path, family = resolve_model(args.model, args.family)
    sha = file_sha256(model_path)
    results = load_results(args.results)
    if results["model_sha256"] != sha:
        raise UserError(f"{args.results}: the sweep was run on a different model "
                        f"({results['model']}, sha256 {results['model_sha256'][:16]}...)")
    graph = SplitGraph(load_model(model_path), source_sha256=sha)
    if args.keep_first > graph.num_nodes:
        raise UserError(f"--keep-first {args.keep_first} exceeds the model's {graph.num_nodes} nodes")

    image_path = Path(args.image) if args.image else IMAGES_DIR / "dog.jpg"
    feeds, _ = family.preprocess(read_image(image_path))
    input_bytes = sum(v.nbytes for k, v in feeds.items() if k in graph.input_names)
    profiles = {}
    for side, path, threads in (("device", args.device_profile, args.device_threads),
                                ("server", args.server_profile, args.server_threads)):
        if path:
            profiles[side] = load_profile(path, sha, graph.num_nodes, side)
        else:
            print(f"profiling the {side} side ({args.runs} runs, image {image_path.name})...", flush=True)
            profiles[side] = profile_model(model_path, feeds, side=side, runs=args.runs, threads=threads)
        if args.save_profiles:
            profiles[side].save(Path(args.save_profiles) / f"{side}_profile.json")
    dev, srv = profiles["device"], profiles["server"]
    print(profile_line(dev))
    print(profile_line(srv, args.server_speedup))
    min_acc = None if args.min_map is None else args.min_map / 100.0
    print(f"sweep: {results['model']} on {len(results['images'])} images, {len(results['rows'])} rows; "
          f"accuracy = {METRICS[args.metric]}"
          + (f" >= {args.min_map:g} %" if min_acc is not None else "")
          + (f"; privacy: first {args.keep_first} nodes on the device" if args.keep_first else ""))

    report = {"model": str(model_path), "metric": args.metric, "min_map": args.min_map,
              "keep_first": args.keep_first, "server_speedup": args.server_speedup, "bandwidths": {}}
    status = 0
    for bps in bandwidths:
        label = rate_label(bps)
        cands = build_candidates(results, dev, srv, bps, server_speedup=args.server_speedup, metric=args.metric,
                                 input_bytes=input_bytes)
        ch = choose(cands, min_accuracy=min_acc, keep_first=args.keep_first)
        print(f"\nbandwidth {label}bit/s: {len(cands)} candidates, {ch.excluded_privacy} excluded by privacy, "
              f"{ch.excluded_accuracy} below the accuracy floor, {len(ch.feasible)} feasible")
        shown = sorted(ch.feasible, key=lambda c: c.total_ms) if args.all else ch.pareto
        base = [c for c in ch.feasible if c.kind == "device only"]
        if shown or base:
            print("feasible candidates:" if args.all else
                  "Pareto front of the networked candidates (bytes sent, latency, accuracy), and the device-only "
                  "baseline:")
            lines = table_lines(shown + ([] if args.all else base), args.metric)
            for line in lines:
                print("  " + line)
        if ch.best is None:
            print("no candidate meets the constraints")
            status = 1
        else:
            b = ch.best
            acc = "n/a" if math.isnan(b.accuracy) else f"{100 * b.accuracy:.1f} %"
            print(f"recommended: {b.label}: {b.total_ms:.1f} ms = device {b.device_ms:.1f} + encode {b.encode_ms:.1f}"
                  f" + transfer {b.transfer_ms:.2f} + decode {b.decode_ms:.1f} + server {b.server_ms:.1f}; "
                  f"sends {b.sent_bytes / 1e3:.1f} kB per image; {METRICS[args.metric]} {acc}")
        report["bandwidths"][label] = {
            "best": asdict(ch.best) | {"total_ms": ch.best.total_ms} if ch.best else None,
            "pareto": [asdict(c) | {"total_ms": c.total_ms} for c in ch.pareto],
            "feasible": [asdict(c) | {"total_ms": c.total_ms} for c in ch.feasible]}
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(json_safe(report), indent=1))
        print(f"wrote {out}")
    return status
