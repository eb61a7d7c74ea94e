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

Codecs side by side (--codecs none,fq:5,nnc:-18): in latency mode every frame goes through each codec's
UE in turn, on one network process, so all codecs see the same machine load; each codec's end-to-end
median is printed with its ratio to the first codec (`x first`, normally `none`, the lossless frame).
Goal: a frame at fq's 99 % relative-mAP point costs at most 1.5x the lossless one (fq:5 is at 99.2-99.3 %
on NanoDet's splits 46, 74 and 95 in docs/study/report.md). Throughput mode runs the first codec.

  .venv/bin/python bench/bench_pipeline.py --threads 2 --frames 40
  .venv/bin/python bench/bench_pipeline.py --ranks 46,95 --codecs none,fq:5,fq:5.5:t,nnc:-18 --no-throughput
  .venv/bin/python bench/bench_pipeline.py --video data/vtest/vtest.avi --ranks 46,95 \
      --codecs none,fqi:-22:x,dzstd --no-throughput --max-ratio 1.3      # sequential codecs on a video
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from splitinfer.common.core.allocator import tune_allocator


def load_frames(n: int, video: Path | None = None, start: int = 0):
    """n frames: consecutive frames of `video` from `start` (what sequential codecs are for), else the bundled
    photos in turn (unrelated pictures: every frame is a scene cut for a sequential codec)."""
    import cv2

    from splitinfer.common.assets import bundled_images

    if video is not None:
        from itertools import islice

        from splitinfer.common.core.errors import UserError
        from splitinfer.common.core.images import iter_frames

        try:
            got = [(video.stem, k, img) for k, (_, img) in enumerate(islice(iter_frames(video), start, start + n))]
        except UserError as exc:
            raise SystemExit(f"bench_pipeline: {exc}") from None
        if len(got) < n:
            raise SystemExit(f"bench_pipeline: {video} has {len(got)} frames from frame {start} on, {n} asked for")
        return got

    paths = [p for p in bundled_images() if p.suffix.lower() in (".jpg", ".jpeg")]
    imgs = [(p.name, cv2.imread(str(p))) for p in paths]
    return [(imgs[i % len(imgs)][0], i, imgs[i % len(imgs)][1]) for i in range(n)]


def bench_npz(model_path, family, frames, threads, rank):
    from splitinfer.common.split.graph import SplitGraph
    from splitinfer.common.split.consolidate import consolidated_outputs
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
            outs = consolidated_outputs(plan, loaded, out2)
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
    ap.add_argument("--video", type=Path, help="consecutive frames of this video instead of the bundled photos")
    ap.add_argument("--start", type=int, default=0, help="first frame of --video")
    ap.add_argument("--block", type=int, default=8, help="frames per alternating block in the throughput run")
    ap.add_argument("--ranks", default="10,60,120")
    ap.add_argument("--in-flight", type=int, default=4)
    ap.add_argument("--codecs", "--codec", default="none",
                    help="codec specs side by side, comma-separated; the first is the one ratios are to (default none)")
    ap.add_argument("--no-throughput", action="store_true", help="latency only")
    ap.add_argument("--max-ratio", type=float, default=1.5,
                    help="goal: each lossy codec's end-to-end <= this x the first codec's (default 1.5)")
    args = ap.parse_args(argv)

    from splitinfer.common.assets import default_model_path
    from splitinfer.common.codecs import get_codec
    from splitinfer.common.families import get_family
    from splitinfer.common.core.runtime import make_session
    from splitinfer.experiments.server_process import ServerProcess

    tune_allocator()
    model_path, family = default_model_path(), get_family("nanodet")
    codecs = [get_codec(c.strip()) for c in args.codecs.split(",") if c.strip()]
    for c in codecs:
        c.warm_up()
    codec = codecs[0]
    frames = load_frames(args.frames, args.video, args.start)
    ranks = [int(r) for r in args.ranks.split(",")]
    print(f"NanoDet, {args.frames} frames ({f'{args.video} from frame {args.start}' if args.video else 'bundled photos'}), codecs {', '.join(c.spec for c in codecs)}; latency: {args.threads} "
          f"intra-op threads in each process (they take turns); throughput: {args.pipe_threads} per process, {args.in_flight} frames in "
          f"flight. Whole model and split run alternately, frame by frame (block by block for throughput), so "
          f"both see the same machine load. Per codec, medians in ms: e2e (UE's frame start to detections), "
          f"Part I, encode (UE), serial(ization), transfer, decode / Part II / server total (network process).")
    whole = make_session(model_path, device="cpu", threads=args.threads)

    def whole_frame(img):
        t0 = time.perf_counter()
        feeds, meta = family.preprocess(img)
        family.postprocess(dict(zip(whole.output_names, whole.run(feeds))), meta)
        return time.perf_counter() - t0

    for _, _, img in frames[:3]:
        whole_frame(img)
    lat, tput, codec_ratios = [], [], []
    with ServerProcess(threads=args.threads) as server:
        for rank in ranks:
            npz = bench_npz(model_path, family, frames, args.threads, rank)
            ues = [make_ue(server, model_path, family, c, args.threads, rank, 1) for c in codecs]
            try:
                for ue, _ in ues:
                    list(ue.run(frames[:3]))  # warm-up: sessions, connection
                w_times, recs = [], [[] for _ in codecs]
                for item in frames:  # frame by frame: the whole model, then each codec's UE
                    w_times.append(whole_frame(item[2]))
                    for (ue, _), got in zip(ues, recs):
                        got.extend(ue.run([item]))
            finally:
                for ue, client in ues:
                    ue.close()
                    client.close()
            med = lambda xs: statistics.median(xs) * 1e3  # noqa: E731
            w_med = statistics.median(w_times) * 1e3
            first = med([r.end_to_end_s for r in recs[0]])
            print(f"rank {rank:3d}: whole model {w_med:6.1f} ms | field npz one process {med(npz):6.1f} ms = "
                  f"{med(npz) / w_med:4.2f}x | two processes over gRPC, {recs[0][-1].tensors} tensors:", flush=True)
            print(f"  {'codec':<14} {'e2e ms':>7} {'x first':>7} {'x whole':>7} {'Part I':>7} {'encode':>7} "
                  f"{'serial.':>7} {'transfer':>8} {'decode':>7} {'Part II':>7} {'server':>7} {'kB/frame':>9} "
                  f"{'msgs':>4}")
            for c, rs in zip(codecs, recs):
                e2e = med([r.end_to_end_s for r in rs])
                print(f"  {c.spec:<14} {e2e:7.1f} {e2e / first:7.2f} {e2e / w_med:7.2f} "
                      f"{med([r.part1_s for r in rs]):7.1f} {med([r.encode_s for r in rs]):7.2f} "
                      f"{med([r.serialize_s for r in rs]):7.2f} {med([r.transfer_s for r in rs]):8.2f} "
                      f"{med([r.server['decode'] for r in rs]):7.2f} {med([r.server['part2'] for r in rs]):7.1f} "
                      f"{med([r.server['total'] for r in rs]):7.1f} "
                      f"{statistics.mean(r.encoded_bytes for r in rs) / 1e3:9.1f} {rs[-1].messages:4d}", flush=True)
                if c is not codec:
                    codec_ratios.append((rank, c.spec, e2e / first))
            lat.append(first / w_med)
    if args.no_throughput:
        ranks = []
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
    print(f"goal latency <= 1.4x whole ({codec.spec}): {'met' if all(r <= 1.4 for r in lat) else 'NOT met'} "
          f"({', '.join(f'{r:.2f}x' for r in lat)})")
    if tput:
        print(f"goal throughput >= 90% of whole: {'met' if all(r >= 0.9 for r in tput) else 'NOT met'} "
              f"({', '.join(f'{r * 100:.0f}%' for r in tput)})")
    fast = [(r, spec, x) for r, spec, x in codec_ratios if get_codec(spec).name in ("fq", "fqi")]
    if fast:
        print(f"goal fast codec (fq, fqi) <= {args.max_ratio}x the {codec.spec} frame end to end: "
              f"{'met' if all(x <= args.max_ratio for _, _, x in fast) else 'NOT met'} ("
              + ", ".join(f"rank {r} {spec} {x:.2f}x" for r, spec, x in fast) + ")")
    others = [(r, spec, x) for r, spec, x in codec_ratios if get_codec(spec).name not in ("fq", "fqi")]
    if others:
        print(f"for comparison, x the {codec.spec} frame: " + ", ".join(f"rank {r} {spec} {x:.2f}x"
                                                                        for r, spec, x in others))
    return 0


if __name__ == "__main__":
    sys.exit(main())
