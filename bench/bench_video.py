"""The `video` codec on consecutive video frames: speed of each encoder and preset, and rate against quality
beside NNC and fq, on real NanoDet activations.

Frames: `--frames` consecutive frames of a video from `--start` (default OpenCV's vtest.avi, a static street
camera: `bash scripts/get_vtest.sh` puts it in data/vtest/), through Part I of the bundled NanoDet at each
split (95 by default: three tensors). A sequential codec codes them in order through one encoder and one
decoder (keyframe first, then predicted frames); per-frame codecs (NNC, fq) code each frame alone, NNC on the
first `--anchor-frames` only (slow; an intra codec's bytes per frame do not depend on the frame's place).

Speed (one process, one thread per coder, frames encoded and decoded in lockstep, medians of --repeat):
milliseconds per frame (all of a frame's tensors) of CPU time (this process, every thread: what a coder costs
on a core of its own, unlike wall time on a shared, loaded machine) and wall time; `enc P`/`dec P`: predicted
frames only. Real time for a 25 fps clip: encode + decode CPU together under 40 ms a frame, i.e. both sides
on one core (the field's two processes give each side a core of its own: each needs only its own part).
`2c fps`: frames per second with the encoder and the decoder at work at once (two threads, frames in a
queue; the machine's cores shared), over all frames and (`2c P`) over the predicted frames after the first:
the clip is coded in real time on this machine where it is 25 or more.

Rate and quality: bytes per frame (keyframe and predicted frames apart), bits per element, feature PSNR (of
the crossing tensors, peak = the largest |value|) and output PSNR (of Part II's outputs against Part II on the
uncoded tensors, as the study's psnr_db: peak = the largest |output| over all frames); BD-rate on output PSNR
against NNC's ladder (common/studies/ratestudy.bd_rate), one figure per family and split.

    .venv/bin/python bench/bench_video.py [--splits 95] [--frames 25] [--speed SPECS] [--ladders SPECS] [--json F]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = (ROOT / "data" / "vtest" / "vtest.avi", Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi"))
SPEED = ("video:6,video:6:superfast,video:6:veryfast,video:6:b8,video:14,video:22,video:30,video:6:intra,"
         "video:6:av1,video:6:av1:p8,video:6:vp9,video:6:vp9:p6")
LADDERS = "nnc:-38..-10/4,fq:-26..-2/4:x,video:2..34/4,video:2..34/8:intra"


def read_video(path: Path, start: int, count: int) -> list[np.ndarray]:
    """Frames start .. start + count - 1 of a video (or folder), as the rest of splitinfer reads them."""
    from itertools import islice

    from splitinfer.common.core.images import iter_frames

    frames = [img for _, img in islice(iter_frames(path), start, start + count)]
    if not frames:
        sys.exit(f"bench_video: no frames read from {path} at {start}")
    return frames


class Split:
    """Part I's tensors of every frame at one split, Part II, and Part II's outputs on the uncoded tensors."""

    def __init__(self, rank: int, images: list):
        from splitinfer.common.assets import default_model_path
        from splitinfer.common.families import get_family
        from splitinfer.device.part1 import Part1

        part1 = Part1(default_model_path(), rank=rank, threads=1)
        family = get_family("nanodet")
        self.rank, self.names = rank, list(part1.plan.part1_outputs)
        self.part2 = part1.part2_session(threads=1)
        self.frames, self.feeds = [], []
        for img in images:
            feeds, _ = family.preprocess(img)
            outs = part1.run(feeds)
            self.feeds.append(feeds)
            self.frames.append([np.ascontiguousarray(outs[n]) for n in self.names])
        self.reference = [self.outputs(f, i) for i, f in enumerate(self.frames)]
        self.elements = sum(t.size for t in self.frames[0])

    def outputs(self, tensors: list[np.ndarray], i: int) -> np.ndarray:
        from splitinfer.common.core.runtime import keep_feeds

        if self.part2 is None:
            return np.concatenate([t.ravel() for t in tensors]).astype(np.float64)
        feeds = {**self.feeds[i], **dict(zip(self.names, tensors))}
        outs = self.part2.run(keep_feeds(feeds, self.part2.input_names))
        return np.concatenate([np.asarray(o, np.float64).ravel() for o in outs if np.asarray(o).dtype.kind == "f"])


def code(codec, split: Split, n: int) -> tuple[list[list[bytes]], list[bool], dict, list[list[np.ndarray]]]:
    """(payloads, keyframe flags, times, decoded tensors) of the first n frames, in order; times: seconds of
    wall clock and of this process's CPU (every thread) for encoding and for decoding, predicted frames apart."""
    frames = split.frames[:n]
    enc, dec = codec.sequence_encoder(), codec.sequence_decoder()
    payloads, keys, outs = [], [], []
    times = dict.fromkeys(("enc_wall", "enc_cpu", "dec_wall", "dec_cpu", "enc_cpu_pred", "dec_cpu_pred"), 0.0)
    extra = {"trusted": True} if codec.name == "nnc" else {}
    for f in frames:
        w, c = time.perf_counter(), time.process_time()
        ps = enc.encode_frame(split.names, f)
        w2, c2 = time.perf_counter(), time.process_time()
        payloads.append(ps)
        keys.append(enc.last_keyframe)
        outs.append([dec.bind(name).decode(p, a.dtype, a.shape, **extra) for name, p, a in zip(split.names, ps, f)])
        w3, c3 = time.perf_counter(), time.process_time()
        times["enc_wall"] += w2 - w
        times["enc_cpu"] += c2 - c
        times["dec_wall"] += w3 - w2
        times["dec_cpu"] += c3 - c2
        if not keys[-1]:
            times["enc_cpu_pred"] += c2 - c
            times["dec_cpu_pred"] += c3 - c2
    enc.close()
    dec.close()
    return payloads, keys, times, outs


def pipelined(codec, split: Split, n: int) -> tuple[float, float]:
    """(frames per second over all n frames, over the predicted frames after the first keyframe) with the
    encoder and the decoder working at once, as the UE and the network process do: one thread encodes frame
    after frame into a queue, another decodes (PyAV, numpy and zstd release the GIL while they work)."""
    import queue
    import threading

    frames = split.frames[:n]
    enc, dec = codec.sequence_encoder(), codec.sequence_decoder()
    q: queue.Queue = queue.Queue()
    done = []

    def decode_all():
        for _ in range(n):
            ps, f = q.get()
            for name, p, a in zip(split.names, ps, f):
                dec.bind(name).decode(p, a.dtype, a.shape)
            done.append(time.perf_counter())

    worker = threading.Thread(target=decode_all)
    start = time.perf_counter()
    worker.start()
    for f in frames:
        q.put((enc.encode_frame(split.names, f), f))
    worker.join()
    enc.close()
    dec.close()
    total = n / (done[-1] - start)
    steady = (n - 1) / (done[-1] - done[0]) if n > 1 else math.nan
    return total, steady


def psnr(refs: list[np.ndarray], tests: list[np.ndarray]) -> float:
    peak = max(float(np.max(np.abs(r))) for r in refs)
    sse = sum(float(np.sum((r - t) ** 2)) for r, t in zip(refs, tests))
    count = sum(r.size for r in refs)
    return math.inf if sse == 0 else 10 * math.log10(peak * peak * count / sse)


def speed_rows(split: Split, specs: list[str], repeat: int) -> list[dict]:
    from splitinfer.common.codecs import get_codec

    rows = []
    n = len(split.frames)
    for spec in specs:
        codec = get_codec(spec)
        codec.warm_up()
        runs = [code(codec, split, n) for _ in range(repeat)]
        med = {k: 1e3 * statistics.median(r[2][k] for r in runs) / n for k in runs[0][2]}
        payloads, keys, _, outs = runs[0]
        fps, fps_pred = max(pipelined(codec, split, n) for _ in range(repeat))
        pred = max(1, sum(not k for k in keys))
        enc_pred, dec_pred = med["enc_cpu_pred"] * n / pred, med["dec_cpu_pred"] * n / pred
        rows.append({"split": split.rank, "codec": codec.spec, "encode_ms": med["enc_wall"],
                     "decode_ms": med["dec_wall"], "encode_cpu_ms": med["enc_cpu"], "decode_cpu_ms": med["dec_cpu"],
                     "encode_cpu_ms_pred": enc_pred, "decode_cpu_ms_pred": dec_pred,
                     "fps_one_core": 1e3 / (med["enc_cpu"] + med["dec_cpu"]),
                     "realtime_25fps": med["enc_cpu"] + med["dec_cpu"] < 40.0,
                     "pipelined_fps": fps, "pipelined_fps_pred": fps_pred,
                     **sizes(payloads, keys, split), "feature_psnr": feature_psnr(split, outs)})
    return rows


def sizes(payloads, keys, split: Split) -> dict:
    per = [sum(len(p) for p in ps) for ps in payloads]
    key = [b for b, k in zip(per, keys) if k]
    pred = [b for b, k in zip(per, keys) if not k]
    return {"frames": len(per), "bytes_per_frame": statistics.mean(per),
            "key_bytes": statistics.mean(key) if key else math.nan,
            "pred_bytes": statistics.mean(pred) if pred else math.nan,
            "bits_per_element": 8 * statistics.mean(per) / split.elements}


def feature_psnr(split: Split, outs) -> float:
    refs = [t.astype(np.float64).ravel() for f in split.frames[:len(outs)] for t in f]
    return psnr(refs, [t.astype(np.float64).ravel() for f in outs for t in f])


def rate_rows(split: Split, ladders: list[str], anchor_frames: int) -> list[dict]:
    from splitinfer.common.codecs import get_codec
    from splitinfer.common.studies.ratestudy import expand_ladders

    rows = []
    for spec in expand_ladders(ladders):
        codec = get_codec(spec)
        codec.warm_up()
        n = min(anchor_frames, len(split.frames)) if codec.name == "nnc" else len(split.frames)
        payloads, keys, times, outs = code(codec, split, n)
        tests = [split.outputs(o, i) for i, o in enumerate(outs)]
        rows.append({"split": split.rank, "codec": codec.spec, "family": family_of(codec),
                     **sizes(payloads, keys, split), "feature_psnr": feature_psnr(split, outs),
                     "output_psnr": psnr(split.reference[:n], tests),
                     "encode_cpu_ms": 1e3 * times["enc_cpu"] / n, "decode_cpu_ms": 1e3 * times["dec_cpu"] / n})
    return rows


def family_of(codec) -> str:
    """A ladder's name: the spec without its QP (`video:superfast`, `video:intra`), or the codec's name."""
    if codec.name == "video":
        return ":".join(p for p in codec.spec.split(":") if not p.lstrip("-").isdecimal())
    return codec.name


def bd_table(rows: list[dict]) -> list[dict]:
    from splitinfer.common.studies.ratestudy import bd_rate

    out = []
    for rank in sorted({r["split"] for r in rows}):
        at = [r for r in rows if r["split"] == rank]
        anchor = [(r["bits_per_element"], r["output_psnr"]) for r in at if r["family"] == "nnc"]
        for fam in dict.fromkeys(r["family"] for r in at if r["family"] != "nnc"):
            test = [(r["bits_per_element"], r["output_psnr"]) for r in at if r["family"] == fam]
            value, overlap, note = bd_rate(anchor, test)
            out.append({"split": rank, "family": fam, "bd_rate_percent": value, "overlap": overlap, "note": note})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=next((v for v in VIDEOS if v.exists()), VIDEOS[0]))
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--splits", default="95")
    ap.add_argument("--speed", default=SPEED, help="codecs to time ('' for none)")
    ap.add_argument("--ladders", default=LADDERS, help="rate-quality ladders ('' for none); a..b/s ranges")
    ap.add_argument("--anchor-frames", type=int, default=3, help="frames NNC codes (slow)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not args.video.exists():
        sys.exit(f"bench_video: {args.video} not found (bash scripts/get_vtest.sh)")
    images = read_video(args.video, args.start, args.frames)
    splits = [Split(int(s), images) for s in args.splits.split(",")]
    speed = [r for s in splits for r in speed_rows(s, [x for x in args.speed.split(",") if x], args.repeat)]
    rates = [r for s in splits for r in rate_rows(s, [x for x in args.ladders.split(",") if x], args.anchor_frames)]
    print(f"{args.video.name} frames {args.start}..{args.start + len(images) - 1}, one process, one thread per coder")
    if speed:
        print(f"\nms per frame: CPU (wall in brackets, load average {os.getloadavg()[0]:.1f}); "
              "P: predicted frames only")
        print(f"{'split':>5} {'codec':<24} {'enc cpu':>7} {'(wall)':>7} {'dec cpu':>7} {'(wall)':>7} {'enc P':>6} "
              f"{'dec P':>6} {'fps 1core':>9} {'25fps':>5} {'2c fps':>6} {'2c P':>6} {'key kB':>7} {'pred kB':>7} "
              f"{'bits/el':>7} {'feat dB':>7}")
        for r in speed:
            print(f"{r['split']:5d} {r['codec']:<24} {r['encode_cpu_ms']:7.1f} {r['encode_ms']:7.1f} "
                  f"{r['decode_cpu_ms']:7.1f} {r['decode_ms']:7.1f} {r['encode_cpu_ms_pred']:6.1f} "
                  f"{r['decode_cpu_ms_pred']:6.1f} {r['fps_one_core']:9.1f} "
                  f"{'yes' if r['realtime_25fps'] else 'no':>5} "
                  f"{r['pipelined_fps']:6.1f} {r['pipelined_fps_pred']:6.1f} {r['key_bytes'] / 1e3:7.2f} "
                  f"{r['pred_bytes'] / 1e3:7.2f} {r['bits_per_element']:7.4f} {r['feature_psnr']:7.2f}")
    bd = bd_table(rates) if rates else []
    if rates:
        print(f"\n{'split':>5} {'codec':<24} {'kB/frame':>8} {'key kB':>7} {'pred kB':>7} {'bits/el':>7} "
              f"{'feat dB':>7} {'out dB':>7} {'enc cpu':>7} {'dec cpu':>7}")
        for r in rates:
            print(f"{r['split']:5d} {r['codec']:<24} {r['bytes_per_frame'] / 1e3:8.2f} {r['key_bytes'] / 1e3:7.2f} "
                  f"{r['pred_bytes'] / 1e3:7.2f} {r['bits_per_element']:7.4f} {r['feature_psnr']:7.2f} "
                  f"{r['output_psnr']:7.2f} {r['encode_cpu_ms']:7.1f} {r['decode_cpu_ms']:7.1f}")
        print("\nBD-rate on output PSNR against NNC (negative: fewer bits at equal PSNR)")
        for b in bd:
            print(f"{b['split']:5d} {b['family']:<16} {b['bd_rate_percent']:8.1f} %  overlap {b['overlap']:.2f} "
                  f"{b['note']}")
    if args.json:
        args.json.write_text(json.dumps({"speed": speed, "rates": rates, "bd": bd}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
