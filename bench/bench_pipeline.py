"""Split pipeline speed, side by side in one run: the whole model locally vs the two real processes.

Measures, for NanoDet on the bundled photos with a fixed number of CPU threads:
  whole      preprocess + whole model + postprocess, one process (the reference)
  npz        the field's one-process way: Part I, np.savez to disk, np.load, Part II, postprocess
  split      UE (this process: Part I, encode) -> gRPC -> network process (decode, Part II,
             consolidation, postprocess) -> detections back; one frame at a time (latency)
  pipelined  the same with several frames in flight on the stream (throughput)
and prints ms/frame, frames/s and the ratios the goals are stated in (latency <= 1.4x whole,
pipelined throughput >= 90% of whole). Threads are pinned: the UE's Part I and the server's Part II
each get --threads intra-op threads in latency mode (they take turns), and --pipe-threads each in
throughput mode (they run at the same time).

  .venv/bin/python bench/bench_pipeline.py --threads 2 --frames 40
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def load_frames(n: int):
    import cv2

    from splitinfer.common.assets import bundled_images

    paths = [p for p in bundled_images() if p.suffix.lower() in (".jpg", ".jpeg")]
    imgs = [(p.name, cv2.imread(str(p))) for p in paths]
    return [(imgs[i % len(imgs)][0], i, imgs[i % len(imgs)][1]) for i in range(n)]


def bench_npz(model_path, family, frames, threads, rank):
    from splitinfer.common.split.graph import SplitGraph, consolidate
    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.core.runtime import make_session

    g = SplitGraph(load_model(model_path))
    plan = g.plan(rank=rank)
    p1, p2 = g.extract(plan)
    s1, s2 = make_session(p1, "cpu", threads), make_session(p2, "cpu", threads)
    times = []
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "intermediate.npz"
        for k, (_, _, img) in enumerate(frames):
            t0 = time.perf_counter()
            feeds, meta = family.preprocess(img)
            out1 = dict(zip(plan.part1_outputs, s1.run(feeds, plan.part1_outputs)))
            np.savez(path, **out1)
            with np.load(path, allow_pickle=False) as z:
                loaded = {n: z[n] for n in z.files}
            out2 = {} if plan.part2_identity else dict(zip(s2.output_names, s2.run({n: loaded[n] for n in plan.part2_inputs})))
            outs = dict(zip([n for n, _ in plan.consolidation], consolidate(plan, loaded, out2)))
            family.postprocess(outs, meta)
            if k >= 2:
                times.append(time.perf_counter() - t0)
    return times


def make_ue(server, model_path, family, codec, threads, rank, in_flight):
    from splitinfer.device.client import UEClient
    from splitinfer.device.part1 import Part1
    from splitinfer.device.pipeline import FramePipeline

    client = UEClient(server.address)
    client.wait_ready()
    ue = FramePipeline(client, Part1(model_path, rank=rank, threads=threads), family, codec, "nanodet",
                       in_flight=in_flight)
    return ue, client


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads per session (latency mode)")
    ap.add_argument("--pipe-threads", type=int, default=2,
                    help="intra-op threads per process when pipelined (ORT spinning is off, so both processes may use every core)")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--block", type=int, default=8, help="frames per alternating block in the throughput run")
    ap.add_argument("--ranks", default="10,60,120")
    ap.add_argument("--in-flight", type=int, default=4)
    ap.add_argument("--codec", default="none")
    args = ap.parse_args(argv)

    from splitinfer.common.transport import wire
    from splitinfer.common.assets import default_model_path
    from splitinfer.common.codecs import get_codec
    from splitinfer.common.families import get_family
    from splitinfer.common.core.runtime import make_session
    from splitinfer.common.transport.process import ServerProcess

    wire.tune_allocator()
    model_path, family, codec = default_model_path(), get_family("nanodet"), get_codec(args.codec)
    frames = load_frames(args.frames)
    ranks = [int(r) for r in args.ranks.split(",")]
    print(f"NanoDet, {args.frames} frames, codec {args.codec}; latency: {args.threads} intra-op threads in each "
          f"process (they take turns); throughput: {args.pipe_threads} per process, {args.in_flight} frames in "
          f"flight. Whole model and split run alternately, frame by frame (block by block for throughput), so "
          f"both see the same machine load.")
    whole = make_session(model_path, device="cpu", threads=args.threads)

    def whole_frame(img):
        t0 = time.perf_counter()
        feeds, meta = family.preprocess(img)
        family.postprocess(dict(zip(whole.output_names, whole.run(feeds))), meta)
        return time.perf_counter() - t0

    for _, _, img in frames[:3]:
        whole_frame(img)
    lat, tput = [], []
    with ServerProcess(threads=args.threads) as server:
        for rank in ranks:
            npz = bench_npz(model_path, family, frames, args.threads, rank)
            ue, client = make_ue(server, model_path, family, codec, args.threads, rank, 1)
            try:
                list(ue.run(frames[:3]))  # warm-up: sessions, connection
                w_times, recs = [], []
                for item in frames:
                    w_times.append(whole_frame(item[2]))
                    recs.extend(ue.run([item]))
            finally:
                ue.close()
                client.close()
            w_med = statistics.median(w_times) * 1e3
            s_med = statistics.median(r.end_to_end_s for r in recs) * 1e3
            med = lambda xs: statistics.median(xs) * 1e3  # noqa: E731
            print(f"rank {rank:3d}: whole model {w_med:6.1f} ms | field npz one process {med(npz):6.1f} ms = "
                  f"{med(npz) / w_med:4.2f}x | two processes over gRPC {s_med:6.1f} ms = {s_med / w_med:4.2f}x "
                  f"(Part I {med([r.part1_s for r in recs]):.1f}, encode {med([r.encode_s for r in recs]):.2f}, "
                  f"serialize {med([r.serialize_s for r in recs]):.2f}, transfer {med([r.transfer_s for r in recs]):.2f}, "
                  f"server {med([r.server['total'] for r in recs]):.1f} of which Part II "
                  f"{med([r.server['part2'] for r in recs]):.1f}; {recs[-1].tensors} tensors, "
                  f"{recs[-1].encoded_bytes / 1e6:.2f} MB in {recs[-1].messages} messages)", flush=True)
            lat.append(s_med / w_med)
    with ServerProcess(threads=args.pipe_threads) as server:
        for rank in ranks:
            ue, client = make_ue(server, model_path, family, codec, args.pipe_threads, rank, args.in_flight)
            try:
                list(ue.run(frames[:3]))
                t_whole = t_split = 0.0
                n = 0
                for start in range(0, len(frames), args.block):
                    block = frames[start:start + args.block]
                    t0 = time.perf_counter()
                    for item in block:
                        whole_frame(item[2])
                    t1 = time.perf_counter()
                    list(ue.run(block))
                    t2 = time.perf_counter()
                    t_whole, t_split, n = t_whole + t1 - t0, t_split + t2 - t1, n + len(block)
            finally:
                ue.close()
                client.close()
            print(f"rank {rank:3d}: throughput whole model {n / t_whole:5.2f} fps | split, {args.in_flight} in flight "
                  f"{n / t_split:5.2f} fps = {t_whole / t_split * 100:5.1f}% of whole", flush=True)
            tput.append(t_whole / t_split)
    print(f"goal latency <= 1.4x whole: {'met' if all(r <= 1.4 for r in lat) else 'NOT met'} "
          f"({', '.join(f'{r:.2f}x' for r in lat)})")
    print(f"goal throughput >= 90% of whole: {'met' if all(r >= 0.9 for r in tput) else 'NOT met'} "
          f"({', '.join(f'{r * 100:.0f}%' for r in tput)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
