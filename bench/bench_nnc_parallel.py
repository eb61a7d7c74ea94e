"""NNC encoding of one multi-tensor frame: serial vs the per-tensor loop vs `encode_many`, side by side.

Why: a split such as NanoDet's 74 sends 5 tensors; `nnc.encode` already cuts each large tensor into slabs
coded by helper processes at once, but the small tensors were coded one after the other in this process
while the helpers idled. `encode_many` hands every bitstream of the frame (whole tensors and slabs) to
the helper pool at once. Defined terms, per run over the same frame:
- serial: the very bitstreams `encode_many` makes (same slabs, same bytes), coded one after the other in
  this process: what one core does;
- loop: `[codec.encode(t) for t in tensors]` (slabs of the large tensors in parallel, the rest serial);
- many: `encode_many(codec, tensors)`.
Wall seconds depend on how many cores are free (the machine is shared); CPU seconds do not: `busiest`
is the busiest helper's CPU time in a `many` run, the wall time it would take with a free core per helper,
so `serial CPU / busiest` is the speed-up on an otherwise idle machine. The three run alternately, so they
see the same load. Medians of --repeat runs.

    .venv/bin/python bench/bench_nnc_parallel.py [--split 74] [--qp -18] [--helpers 2] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def frames_at(rank: int, images: int) -> list[list[np.ndarray]]:
    """Part I's outputs at a split of the bundled NanoDet, one list per bundled photo."""
    from splitinfer.common.assets import bundled_images, default_model_path
    from splitinfer.common.core.images import read_image
    from splitinfer.common.families import get_family
    from splitinfer.device.part1 import Part1

    part1 = Part1(default_model_path(), rank=rank, threads=1)
    frames = []
    for path in sorted(bundled_images())[:images]:
        outs = part1.run(get_family("nanodet").preprocess(read_image(path))[0])
        frames.append([np.ascontiguousarray(outs[n]) for n in part1.plan.part1_outputs])
    return frames


def cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one by default), from /proc."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serial(codec, tensors) -> list[bytes]:
    """The bitstreams encode_many makes, coded one after the other in this process."""
    from splitinfer.common.codecs import nnc, nnc_pool

    pool = nnc_pool.helper_pool()
    out = []
    for a in tensors:
        plan = nnc._coding_plan(np.asarray(a), pool.size)
        streams = [nnc.encode_nnr(s, codec.qp) for s in plan[2]] if plan else None
        out.append(nnc._payload(np.asarray(a), plan, streams))
    return out


def run_once(fn, pids) -> tuple[float, float, float, object]:
    """(wall s, total CPU s of this process and the helpers, busiest helper's CPU s, result)."""
    own, helpers = cpu_s(), {p: cpu_s(p) for p in pids}
    t = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t
    used = [cpu_s(p) - helpers[p] for p in pids]
    return wall, cpu_s() - own + sum(used), max(used, default=0.0), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", type=int, default=74, help="NanoDet split rank (default 74: 5 crossing tensors)")
    ap.add_argument("--qp", type=int, default=-18)
    ap.add_argument("--helpers", type=int, default=2, help="nnc helper processes (default 2: this machine's cores)")
    ap.add_argument("--images", type=int, default=3, help="bundled photos, one frame each (default 3)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    os.environ["SPLITINFER_NNC_WORKERS"] = str(args.helpers)

    from tqdm import tqdm

    from splitinfer.common.codecs import encode_many, get_codec, nnc_pool

    codec = get_codec(f"nnc:{args.qp}")
    frames = frames_at(args.split, args.images)
    tensors = frames[0]
    codec.warm_up()  # every helper started and nncodec imported here
    pool = nnc_pool.helper_pool()
    with pool.cv:
        pids = [w.proc.pid for w in pool.idle]
    ways = {"serial": lambda: [serial(codec, f) for f in frames],  # frame after frame, as the UE sends them
            "loop": lambda: [[codec.encode(t) for t in f] for f in frames],
            "many": lambda: [encode_many(codec, f) for f in frames]}
    runs = {k: [] for k in ways}
    outputs = {}
    for _ in tqdm(range(args.repeat), desc="runs", file=sys.stderr, disable=not sys.stderr.isatty()):
        for name, fn in ways.items():  # alternate: the same machine load for all three
            wall, cpu, busiest, out = run_once(fn, pids)
            runs[name].append((wall, cpu, busiest))
            outputs[name] = out
    if outputs["serial"] != outputs["many"] or outputs["loop"] != outputs["many"]:
        print("FAILED: encode_many's payloads differ from the serial ones", file=sys.stderr)
        return 1
    # wall: median per frame; CPU: summed over every run, per frame (/proc counts in 10 ms ticks)
    n = args.repeat * len(frames)
    med = {k: [statistics.median(r[0] for r in v) / len(frames), sum(r[1] for r in v) / n, sum(r[2] for r in v) / n,
               min(r[0] for r in v) / len(frames)] for k, v in runs.items()}
    raw = sum(t.nbytes for f in frames for t in f) / len(frames)
    sent = sum(len(p) for f in outputs["many"] for p in f) / len(frames)
    print(f"NanoDet split {args.split}: {len(tensors)} tensors {[list(t.shape[1:]) for t in tensors]}, "
          f"{raw / 1e6:.2f} MB raw -> {sent / 1e3:.1f} kB per frame at NNC QP {args.qp} (the same bytes all three "
          f"ways); {len(frames)} frames x {args.repeat} runs; {args.helpers} helpers, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; per frame: wall median and best, CPU mean")
    head = (f"{'way':<7} {'wall ms':>8} {'best ms':>8} {'CPU ms':>8} {'busiest helper ms':>17} {'wall speed-up':>13} "
            f"{'best speed-up':>13}")
    print(head)
    print("-" * len(head))
    for name, (wall, cpu, busiest, best) in med.items():
        print(f"{name:<7} {wall * 1e3:8.0f} {best * 1e3:8.0f} {cpu * 1e3:8.0f} "
              f"{busiest * 1e3 if name != 'serial' else float('nan'):17.0f} {med['serial'][0] / wall:12.2f}x "
              f"{med['serial'][3] / best:12.2f}x")
    s_cpu, b = med["serial"][1], med["many"][2]
    print(f"\nencode_many vs serial: {med['serial'][0] / med['many'][0]:.2f}x wall (median), "
          f"{med['serial'][3] / med['many'][3]:.2f}x best wall on this machine now; "
          f"{s_cpu / b:.2f}x with a free core per helper (serial CPU {s_cpu * 1e3:.0f} ms / busiest helper "
          f"{b * 1e3:.0f} ms); vs the per-tensor loop: {med['loop'][0] / med['many'][0]:.2f}x wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
