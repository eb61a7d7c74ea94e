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
    from pathlib import Path

    from splitinfer.common.assets import IMAGES_DIR
    from splitinfer.common.core.errors import UserError
    from splitinfer.common.core.rates import parse_rate, rate_label
    from splitinfer.common.families import resolve_model
    from splitinfer.common.studies import recommend as R

    if args.keep_first < 0:
        raise UserError(f"--keep-first must be 0 or more (got {args.keep_first})")
    if args.min_map is not None and not 0 <= args.min_map <= 100:
        raise UserError(f"--min-map is a percentage in [0, 100] (got {args.min_map})")
    if not args.server_speedup > 0:
        raise UserError(f"--server-speedup must be positive (got {args.server_speedup})")
    bandwidths = [parse_rate(b) for b in args.bandwidth]
    model_path, family = resolve_model(args.model, args.family)
    image_path = Path(args.image) if args.image else IMAGES_DIR / "dog.jpg"
    inputs = R.load_inputs(model_path, family, args.results, image_path, args.keep_first)
    sides = {"device": (args.device_profile, args.device_threads), "server": (args.server_profile, args.server_threads)}
    profiles = R.side_profiles(inputs, sides, args.runs, args.save_profiles, say=lambda t: print(t, flush=True))
    dev, srv = profiles["device"], profiles["server"]
    print(R.profile_line(dev))
    print(R.profile_line(srv, args.server_speedup))
    results = inputs.results
    min_acc = None if args.min_map is None else args.min_map / 100.0
    print(f"sweep: {results['model']} on {len(results['images'])} images, {len(results['rows'])} rows; "
          f"accuracy = {R.METRICS[args.metric]}"
          + (f" >= {args.min_map:g} %" if min_acc is not None else "")
          + (f"; privacy: first {args.keep_first} nodes on the device" if args.keep_first else ""))
    report = {"model": str(model_path), "metric": args.metric, "min_map": args.min_map,
              "keep_first": args.keep_first, "server_speedup": args.server_speedup, "bandwidths": {}}
    status = 0
    for bps in bandwidths:
        cands = R.build_candidates(results, dev, srv, bps, server_speedup=args.server_speedup, metric=args.metric,
                                   input_bytes=inputs.input_bytes)
        ch = R.choose(cands, min_accuracy=min_acc, keep_first=args.keep_first)
        status = max(status, _print_choice(args, rate_label(bps), cands, ch))
        report["bandwidths"][rate_label(bps)] = R.choice_report(ch)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(R.json_safe(report), indent=1))
        print(f"wrote {out}")
    return status


def _print_choice(args, label: str, cands, ch) -> int:
    """One bandwidth's candidates, front and recommendation; 1 when no candidate meets the constraints."""
    from splitinfer.common.studies.recommend import best_line, table_lines

    print(f"\nbandwidth {label}bit/s: {len(cands)} candidates, {ch.excluded_privacy} excluded by privacy, "
          f"{ch.excluded_accuracy} below the accuracy floor, {len(ch.feasible)} feasible")
    shown = sorted(ch.feasible, key=lambda c: c.total_ms) if args.all else ch.pareto
    base = [c for c in ch.feasible if c.kind == "device only"]
    if shown or base:
        print("feasible candidates:" if args.all else
              "Pareto front of the networked candidates (bytes sent, latency, accuracy), and the device-only "
              "baseline:")
        for line in table_lines(shown + ([] if args.all else base), args.metric):
            print("  " + line)
    if ch.best is None:
        print("no candidate meets the constraints")
        return 1
    print(best_line(ch.best, args.metric))
    return 0
