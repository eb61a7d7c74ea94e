"""fq with inter prediction (`fqi`) beside fq and dzstd on consecutive video frames: size and one-core speed.

Frames: N consecutive frames of OpenCV's vtest.avi (data/vtest/vtest.avi from scripts/get_vtest.sh, else the
study's clip docs/study/vtest_clip.avi, whose frames are spread over the video: prediction helps less there),
through Part I of the bundled NanoDet at each split. Every codec codes each split's frames in order through
its stream coders (`sequence_encoder()` / `sequence_decoder()`, every crossing tensor by name), as the UE and
the network process do: sequential codecs (fqi, dzstd) predict, per-frame codecs (fq) code each frame alone.
A run is a fresh encoder and decoder over all frames; times are the best of --repeat runs (the load of
other processes only adds time), MB/s of raw float32 bytes, the process pinned to one CPU core, codecs one
after the other (comparable side by side).
Columns: ratio, bits per element, kB per frame of keyframes and of predicted frames, relative L2 error and
the largest error in steps (fq/fqi: step 2**(QP/4)), encode and decode MB/s over all frames and over the
predicted frames alone (P enc, P dec: the inter path's own speed).

With --rd: also rate-distortion on the model's outputs: Part II (onnxruntime, one thread) runs on every
decoded frame; quality is the output PSNR against Part II on the raw tensors (peak: the largest output
magnitude, as in the sweep); BD-rate (bits per element, Akima, ratestudy.bd_rate) of each ladder against
NNC's QP ladder -38..-10 step 4 (intra), ladders fq:QP:x, fqi:QP, fqi:QP:h, fqi:QP:x, fqi:QP:xh, fqi:QP:hm and
fqi:QP:xhm (x: context coders, temporal ones for predicted frames; m: motion) with QP -26..-2 step 4.

    .venv/bin/python bench/bench_fqi.py [--frames 20] [--start 0] [--splits 46,95] [--codecs LIST]
                                        [--repeat 3] [--video PATH] [--rd] [--json out.json]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_codecs import frames_at  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = (ROOT / "data" / "vtest" / "vtest.avi", Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi"),
          ROOT / "docs" / "study" / "vtest_clip.avi")
DEFAULT_CODECS = ("fq:-14,fq:-14:x,fqi:-14,fqi:-14:x,fqi:-14:h,fqi:-14:xh,fqi:-10,fqi:-10:h,fqi:-18,fqi:-22,fqi:-22:x,"
                  "fqi:-14:h:10,dzstd:1,dzstd")


def read_frames(video: Path, start: int, count: int) -> list:
    """Frames start .. start + count - 1 of a video (or folder), as the rest of splitinfer reads them."""
    from itertools import islice

    from splitinfer.common.core.images import iter_frames

    frames = [img for _, img in islice(iter_frames(video), start, start + count)]
    if not frames:
        raise SystemExit(f"bench_fqi: no frames read from {video} at {start}")
    return frames


def run_once(codec, names, frames):
    """(encode s per frame, decode s per frame, payloads per frame, outputs per frame, keyframe flags)."""
    enc, dec = codec.sequence_encoder(), codec.sequence_decoder()
    payloads, keys, t_enc = [], [], []
    for f in frames:
        t = time.perf_counter()
        payloads.append(enc.encode_frame(names, f))
        t_enc.append(time.perf_counter() - t)
        keys.append(enc.last_keyframe)
    outs, t_dec = [], []
    for f, ps in zip(frames, payloads):
        t = time.perf_counter()
        bound = [dec.bind(n) for n in names]
        outs.append([b.decode(p, a.dtype, a.shape) for b, p, a in zip(bound, ps, f)])
        t_dec.append(time.perf_counter() - t)
    enc.close()
    dec.close()
    return t_enc, t_dec, payloads, outs, keys


def measure(codec, frames, repeat: int) -> dict:
    names = [f"t{k}" for k in range(len(frames[0]))]
    runs = [run_once(codec, names, frames) for _ in range(repeat)]
    _, _, payloads, outs, keys = runs[-1]
    t_enc = min(sum(r[0]) for r in runs)  # best run: other processes' load only adds time (timeit's rule)
    t_dec = min(sum(r[1]) for r in runs)
    pred = [k for k, key in enumerate(keys) if not key]  # predicted frames alone (the inter path's speed)
    t_enc_pred = min(sum(r[0][k] for k in pred) for r in runs) if pred else None
    t_dec_pred = min(sum(r[1][k] for k in pred) for r in runs) if pred else None
    raw = sum(t.nbytes for f in frames for t in f)
    raw_pred = sum(t.nbytes for k in pred for t in frames[k])
    elems = sum(t.size for f in frames for t in f)
    sizes = [sum(len(p) for p in ps) for ps in payloads]
    key_sizes = [s for s, k in zip(sizes, keys) if k]
    pred_sizes = [s for s, k in zip(sizes, keys) if not k]
    num = sum(float(np.sum((o.astype(np.float64) - t) ** 2)) for f, fo in zip(frames, outs) for o, t in zip(fo, f))
    den = sum(float(np.sum(t.astype(np.float64) ** 2)) for f in frames for t in f)
    worst = max(float(np.abs(o - t).max()) for f, fo in zip(frames, outs) for o, t in zip(fo, f))
    step = getattr(codec, "step", None) or (2 ** (codec.qp / 4) if getattr(codec, "qp", None) is not None else None)
    return {"codec": codec.spec, "frames": len(frames), "raw_bytes": raw, "sent_bytes": sum(sizes),
            "ratio": raw / sum(sizes), "bits_per_element": 8 * sum(sizes) / elems,
            "key_kB": statistics.mean(key_sizes) / 1e3 if key_sizes else None, "keyframes": len(key_sizes),
            "pred_kB": statistics.mean(pred_sizes) / 1e3 if pred_sizes else None,
            "rel_l2_error": (num / den) ** 0.5 if den else 0.0, "max_error_steps": worst / step if step else None,
            "encode_MBps": raw / t_enc / 1e6, "decode_MBps": raw / t_dec / 1e6,
            "pred_encode_MBps": raw_pred / t_enc_pred / 1e6 if pred else None,
            "pred_decode_MBps": raw_pred / t_dec_pred / 1e6 if pred else None}


RD_LADDERS = {"nnc": [f"nnc:{q}" for q in range(-38, -9, 4)], "fq:x": [f"fq:{q}:x" for q in range(-26, -1, 4)],
              "fqi": [f"fqi:{q}" for q in range(-26, -1, 4)], "fqi:h": [f"fqi:{q}:h" for q in range(-26, -1, 4)],
              "fqi:x": [f"fqi:{q}:x" for q in range(-26, -1, 4)], "fqi:xh": [f"fqi:{q}:xh" for q in range(-26, -1, 4)],
              "fqi:hm": [f"fqi:{q}:hm" for q in range(-26, -1, 4)],
              "fqi:xhm": [f"fqi:{q}:xhm" for q in range(-26, -1, 4)]}


def rate_distortion(rank: int, frames) -> dict:
    """{family: [(bits per element, output PSNR dB) per rung]} at a split, frames coded in order."""
    import tempfile

    import onnxruntime as ort

    from splitinfer.common.assets import default_model_path
    from splitinfer.common.codecs import get_codec
    from splitinfer.common.split.graph import split_model

    with tempfile.TemporaryDirectory() as tmp:
        _, part2, _, plan = split_model(default_model_path(), rank=rank, out_dir=tmp)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        session = ort.InferenceSession(str(part2), so, providers=["CPUExecutionProvider"])
    names = list(plan.part1_outputs)
    inputs = [i.name for i in session.get_inputs()]
    run = lambda arrays: session.run(None, {n: arrays[names.index(n)] for n in inputs})  # noqa: E731
    anchor = [run(f) for f in frames]
    peak = max(float(np.max(np.abs(o))) for a in anchor for o in a)
    elems = sum(t.size for f in frames for t in f)
    out = {}
    for family, specs in RD_LADDERS.items():
        out[family] = []
        for spec in specs:
            _, _, payloads, decoded, _ = run_once(get_codec(spec), names, frames)
            sse = cnt = 0.0
            for dec, ref in zip(decoded, anchor):
                for o, a in zip(run(dec), ref):
                    sse, cnt = sse + float(np.sum((o.astype(np.float64) - a) ** 2)), cnt + a.size
            bits = 8 * sum(len(p) for ps in payloads for p in ps)
            out[family].append((bits / elems, 10 * np.log10(peak * peak / (sse / cnt)) if sse else float("inf")))
    return out


def print_rd(rank: int, points: dict) -> dict:
    from splitinfer.common.studies.ratestudy import bd_rate

    print(f"\nsplit {rank}: output PSNR (dB) at bits per element, frames in order")
    for family, specs in RD_LADDERS.items():
        rungs = (f"{s.split(':')[1]}:{b:.3f}/{q:.1f}" for s, (b, q) in zip(specs, points[family]))
        print(f"  {family:<6} " + "  ".join(rungs))
    bd = {f: bd_rate(points["nnc"], points[f])[0] for f in RD_LADDERS if f != "nnc"}
    print("  BD-rate on output PSNR against NNC: " + ", ".join(f"{f} {v:+.1f} %" for f, v in bd.items()))
    return bd


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codecs", default=DEFAULT_CODECS)
    ap.add_argument("--splits", default="46,95")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--video", type=Path)
    ap.add_argument("--rd", action="store_true", help="also output PSNR and BD-rate against NNC (slow: NNC)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})  # one core, as the goal is stated

    from splitinfer.common.codecs import get_codec

    video = args.video or next((v for v in VIDEOS if v.exists()), None)
    if video is None:
        raise SystemExit("bench_fqi: no video; run `bash scripts/get_vtest.sh` or pass --video")
    images = read_frames(video, args.start, args.frames)
    codecs = [get_codec(s) for s in args.codecs.split(",") if s.strip()]
    for c in codecs:
        c.warm_up()
    splits = [int(s) for s in args.splits.split(",")]
    rows, rd = [], {}
    for rank in splits:
        frames = frames_at(rank, images)
        for codec in codecs:
            rows.append({"split": rank, "tensors": len(frames[0]), **measure(codec, frames, args.repeat)})
        if args.rd:
            rd[rank] = rate_distortion(rank, frames)
    print(f"{video.name}: frames {args.start}..{args.start + len(images) - 1} in order; one core "
          f"(load average {os.getloadavg()[0]:.1f}); MB/s of raw float32 bytes, best of {args.repeat} runs")
    head = (f"{'split':>5} {'codec':<14} {'ratio':>7} {'bits/el':>7} {'key kB':>7} {'pred kB':>7} "
            f"{'rel L2':>8} {'max/step':>8} {'enc MB/s':>8} {'dec MB/s':>8} {'P enc':>6} {'P dec':>6}")
    print(head)
    print("-" * len(head))
    last = None
    for r in rows:
        if last is not None and r["split"] != last:
            print()
        last = r["split"]
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        print(f"{r['split']:5d} {r['codec']:<14} {r['ratio']:7.2f} {r['bits_per_element']:7.3f} "
              f"{fmt(r['key_kB'], '7.1f')} {fmt(r['pred_kB'], '7.1f')} {r['rel_l2_error']:8.2e} "
              f"{fmt(r['max_error_steps'], '8.3f')} {r['encode_MBps']:8.1f} {r['decode_MBps']:8.1f} "
              f"{fmt(r['pred_encode_MBps'], '6.0f')} {fmt(r['pred_decode_MBps'], '6.0f')}")
    bd = {rank: print_rd(rank, points) for rank, points in rd.items()}
    if args.json:
        Path(args.json).write_text(json.dumps({"video": str(video), "start": args.start, "rows": rows, "rd": rd,
                                               "bd_rate_vs_nnc": bd}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
