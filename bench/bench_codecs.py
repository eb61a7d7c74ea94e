"""Codec speed and size side by side, on real NanoDet activations: ratio, bits per element, encode/decode MB/s.

Frames: what Part I of the bundled NanoDet sends at splits 46 (one 128x52x52 tensor), 69 and 95 (three
tensors each: the multi-branch splits) on the bundled photos, plus 4 frames of OpenCV's vtest.avi when
it is there (Debian's opencv-doc, or the study's clip docs/study/vtest_clip.avi). Every codec encodes
and decodes every tensor of every frame; times are medians over --repeat runs of the whole set, MB/s of
raw float32 bytes. Codecs run one after the other in this one process, so their figures are comparable
with each other (the machine's load moves them all alike).

Also measured side by side: NNC on a multi-tensor frame coded by 2 helper processes (`encode_many`: every
tensor and slab at once) against the same tensors coded one bitstream after the other in this process
(serial). bench/bench_nnc_parallel.py compares those two and the per-tensor loop on split 74's 5 tensors.

Relative mAP is not measured here (that needs Part II and the anchor): run
`splitinfer sweep nanodet --splits 46 69 95 --codecs fq:3 fq:4 ...` for it.

    .venv/bin/python bench/bench_codecs.py [--codecs LIST] [--images N] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SPLITS = (46, 69, 95)
DEFAULT_CODECS = ("none,float16,zstd:1,zstd,blosc2:lz4:5:bitshuffle,blosc2,float16+zstd:1,float16+blosc2,"
                  "fq:2,fq:3,fq:3.5,fq:4,fq:5,fq:6,fq:8,fq:4.5:t,fq:6:t,fq:4:c,fq:3.5:x,fq:4:x,fq:4.5:tx,"
                  "fq:5.5:tx,fq:-22:x,fq:-18:x,fq:-14:x,fq:-10:x,fq:-6:x,fq:-14:tx,fq:4+zstd:19,nnc:-26,nnc:-18,nnc:-14")
VIDEOS = (Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi"),  # Debian's opencv-doc
          Path(__file__).resolve().parents[1] / "docs" / "study" / "vtest_clip.avi")  # the study's clip, if there


def frames_at(rank: int, images: list) -> list[list[np.ndarray]]:
    """Part I's outputs (every tensor the UE sends) at a split, one list per image."""
    from splitinfer.common.assets import default_model_path
    from splitinfer.common.families import get_family
    from splitinfer.device.part1 import Part1

    part1 = Part1(default_model_path(), rank=rank, threads=1)
    family = get_family("nanodet")
    out = []
    for img in images:
        feeds, _ = family.preprocess(img)
        outs = part1.run(feeds)
        out.append([np.ascontiguousarray(outs[n]) for n in part1.plan.part1_outputs])
    return out


def load_images(limit: int) -> list:
    from splitinfer.common.assets import bundled_images
    from splitinfer.common.core.images import read_image

    imgs = [read_image(p) for p in sorted(bundled_images())[:limit]]
    video = next((v for v in VIDEOS if v.exists()), None)
    if video is not None:  # optional: a few frames spread over the video
        import cv2

        cap = cv2.VideoCapture(str(video))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 1
        for i in range(0, count, max(1, count // 4))[:4]:
            cap.set(cv2.CAP_PROP_POS_FRAMES, i)
            ok, frame = cap.read()
            if ok:
                imgs.append(frame)
        cap.release()
    return imgs


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def measure(codec, frames: list[list[np.ndarray]], repeat: int) -> dict:
    tensors = [t for f in frames for t in f]
    raw = sum(t.nbytes for t in tensors)
    elems = sum(t.size for t in tensors)
    t_enc, payloads = timed(lambda: [codec.encode(t) for t in tensors], repeat)
    trusted = codec.name == "nnc"  # NNC: in-process decode of our own payloads (helpers: see --nnc-helpers)
    t_dec, outs = timed(lambda: [codec.decode(p, t.dtype, t.shape, trusted=trusted)
                                 for p, t in zip(payloads, tensors)], repeat)
    sent = sum(len(p) for p in payloads)
    num = sum(float(np.sum((o.astype(np.float64) - t) ** 2)) for o, t in zip(outs, tensors))
    den = sum(float(np.sum(t.astype(np.float64) ** 2)) for t in tensors)
    return {"codec": codec.spec, "raw_bytes": raw, "sent_bytes": sent, "ratio": raw / sent,
            "bits_per_element": 8 * sent / elems, "encode_MBps": raw / t_enc / 1e6,
            "decode_MBps": raw / t_dec / 1e6, "encode_ms_per_frame": 1e3 * t_enc / len(frames),
            "decode_ms_per_frame": 1e3 * t_dec / len(frames), "rel_l2_error": (num / den) ** 0.5 if den else 0.0}


def _cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one by default), from /proc."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def nnc_parallel_vs_serial(frames: list[list[np.ndarray]], qp: int, repeat: int) -> dict:
    """Encode the same multi-tensor frames with 2 helper processes (slabs) and serially in-process.

    Wall times depend on how many cores are free; CPU seconds do not: `critical_path_s` is the busiest
    helper's CPU time per run, i.e. the wall time of the parallel run with one free core per helper, and
    `speedup_free_cores` = serial CPU / critical path is the speed-up on an otherwise idle machine."""
    from splitinfer.common.codecs import encode_many, get_codec, nnc, nnc_pool

    codec = get_codec(f"nnc:{qp}")
    tensors = [t for f in frames for t in f]
    pool = nnc_pool.helper_pool()
    pool.warm_up()  # starts every helper
    saved_min, saved_size = nnc.PARALLEL_MIN, pool.size
    serial, parallel, serial_cpu, critical = [], [], [], []
    try:
        for _ in range(repeat):  # alternate, so both see the same machine load
            nnc.PARALLEL_MIN = 1 << 62
            c0 = _cpu_s()
            serial.append(timed(lambda: [codec.encode(t) for t in tensors], 1)[0])
            serial_cpu.append(_cpu_s() - c0)
            nnc.PARALLEL_MIN = saved_min
            with pool.cv:
                pids = [w.proc.pid for w in pool.idle]
            before = {p: _cpu_s(p) for p in pids}
            parallel.append(timed(lambda: encode_many(codec, tensors), 1)[0])
            critical.append(max(_cpu_s(p) - before[p] for p in pids))
    finally:
        nnc.PARALLEL_MIN, pool.size = saved_min, saved_size
    s, p = statistics.median(serial), statistics.median(parallel)
    cpu, crit = statistics.median(serial_cpu), statistics.median(critical)
    return {"qp": qp, "helpers": pool.size, "frames": len(frames), "serial_s": s, "parallel_s": p, "speedup": s / p,
            "serial_cpu_s": cpu, "critical_path_s": crit, "speedup_free_cores": cpu / crit if crit else float("nan"),
            "load_average": os.getloadavg()[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codecs", default=DEFAULT_CODECS)
    ap.add_argument("--splits", default=",".join(map(str, SPLITS)))
    ap.add_argument("--images", type=int, default=4, help="bundled photos to use (plus vtest.avi frames)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    ap.add_argument("--nnc-images", type=int, default=1, help="images for NNC (slow)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    os.environ.setdefault("SPLITINFER_NNC_WORKERS", "2")

    from tqdm import tqdm

    from splitinfer.common.codecs import get_codec

    codecs = [get_codec(s) for s in args.codecs.split(",") if s.strip()]
    for c in codecs:
        c.warm_up()
    images = load_images(args.images)
    splits = [int(s) for s in args.splits.split(",")]
    data = {r: frames_at(r, images) for r in splits}
    rows = []
    for rank, codec in tqdm([(r, c) for r in splits for c in codecs], desc="codecs", unit="run",
                            file=sys.stderr, disable=not sys.stderr.isatty()):
        frames = data[rank][: args.nnc_images] if codec.name == "nnc" else data[rank]
        rows.append({"split": rank, "tensors": len(frames[0]), "frames": len(frames),
                     **measure(codec, frames, 1 if codec.name == "nnc" else args.repeat)})
    multi = max(splits, key=lambda r: len(data[r][0]))
    par = nnc_parallel_vs_serial(data[multi][:1], -18, max(2, args.repeat))
    par["split"] = multi

    head = (f"{'split':>5} {'tens':>4} {'codec':<28} {'ratio':>7} {'bits/el':>7} {'enc MB/s':>9} {'dec MB/s':>9} "
            f"{'enc ms/fr':>9} {'dec ms/fr':>9} {'rel L2 err':>10}")
    print(f"{len(images)} images ({len(data[splits[0]])} frames per split; NNC on {args.nnc_images}); "
          f"MB/s of raw float32 bytes, one process, medians of {args.repeat}")
    print(head)
    print("-" * len(head))
    last = None
    for r in rows:
        if last is not None and r["split"] != last:
            print()
        last = r["split"]
        print(f"{r['split']:5d} {r['tensors']:4d} {r['codec']:<28} {r['ratio']:7.2f} {r['bits_per_element']:7.3f} "
              f"{r['encode_MBps']:9.1f} {r['decode_MBps']:9.1f} {r['encode_ms_per_frame']:9.1f} "
              f"{r['decode_ms_per_frame']:9.1f} {r['rel_l2_error']:10.2e}")
    print(f"\nNNC QP {par['qp']} encode of split {multi}'s frame ({len(data[multi][0])} tensors): serial in-process "
          f"{par['serial_s'] * 1e3:.0f} ms, {par['helpers']} helper processes (encode_many) {par['parallel_s'] * 1e3:.0f} ms: "
          f"{par['speedup']:.2f}x at load average {par['load_average']:.1f}; with a free core per helper "
          f"(CPU seconds: serial {par['serial_cpu_s'] * 1e3:.0f} ms, busiest helper {par['critical_path_s'] * 1e3:.0f} "
          f"ms): {par['speedup_free_cores']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "nnc_parallel": par}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
