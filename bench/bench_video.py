"""The `video` codec on consecutive video frames: speed of each encoder and preset, and rate against quality
beside NNC and fq, on real NanoDet activations.

Frames: `--frames` consecutive frames of a video from `--start` (default OpenCV's vtest.avi, a static street
camera: `bash scripts/get_vtest.sh` puts it in data/vtest/), through Part I of the bundled NanoDet at each
split (95 by default: three tensors). A sequential codec codes them in order through one encoder and one
decoder (keyframe first, then predicted frames); per-frame codecs (NNC, fq) code each frame alone, NNC on the
first `--anchor-frames` only (slow; an intra codec's bytes per frame do not depend on the frame's place).

Speed (one process, one thread per coder, medians of --repeat): encode and decode milliseconds per frame (all
of a frame's tensors); real time for a 25 fps clip means encode + decode together under 40 ms a frame, i.e.
both on one core (on the field's two processes each side has its own core and needs only its own half).

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
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = (ROOT / "data" / "vtest" / "vtest.avi", Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi"))
SPEED = ("video:30,video:30:superfast,video:30:veryfast,video:30:faster,video:30:b8,video:30:b12,"
         "video:40:av1,video:40:av1:p9,video:40:av1:p6,video:40:vp9,video:40:vp9:p6,video:30:intra")
LADDERS = "nnc:-38..-10/4,fq:-26..-2/4:x,video:18..42/4,video:18..42/4:intra"


def read_video(path: Path, start: int, count: int) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    frames = []
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
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


def code(codec, split: Split, n: int) -> tuple[list[list[bytes]], list[bool], float, list[list[np.ndarray]], float]:
    """(payloads, keyframe flags, encode s, decoded tensors, decode s) of the first n frames, in order."""
    frames = split.frames[:n]
    enc, dec = codec.sequence_encoder(), codec.sequence_decoder()
    payloads, keys = [], []
    t = time.perf_counter()
    for f in frames:
        payloads.append(enc.encode_frame(split.names, f))
        keys.append(enc.last_keyframe)
    t_enc = time.perf_counter() - t
    outs = []
    t = time.perf_counter()
    for ps, f in zip(payloads, frames):
        bound = [dec.bind(name) for name in split.names]
        outs.append([b.decode(p, a.dtype, a.shape, **({"trusted": True} if codec.name == "nnc" else {}))
                     for b, p, a in zip(bound, ps, f)])
    t_dec = time.perf_counter() - t
    enc.close()
    dec.close()
    return payloads, keys, t_enc, outs, t_dec


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
        enc_ms = 1e3 * statistics.median(r[2] for r in runs) / n
        dec_ms = 1e3 * statistics.median(r[4] for r in runs) / n
        payloads, keys, _, outs, _ = runs[0]
        rows.append({"split": split.rank, "codec": codec.spec, "encode_ms": enc_ms, "decode_ms": dec_ms,
                     "fps_one_core": 1e3 / (enc_ms + dec_ms), "realtime_25fps": enc_ms + dec_ms < 40.0,
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
        payloads, keys, t_enc, outs, t_dec = code(codec, split, n)
        tests = [split.outputs(o, i) for i, o in enumerate(outs)]
        rows.append({"split": split.rank, "codec": codec.spec, "family": family_of(codec),
                     **sizes(payloads, keys, split), "feature_psnr": feature_psnr(split, outs),
                     "output_psnr": psnr(split.reference[:n], tests),
                     "encode_ms": 1e3 * t_enc / n, "decode_ms": 1e3 * t_dec / n})
    return rows


def family_of(codec) -> str:
    if codec.name == "video":
        return "video" + (":intra" if codec.gop == 1 else "") + ("" if codec.encoder == "x265" else ":" + codec.encoder)
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
        print(f"\n{'split':>5} {'codec':<24} {'enc ms':>7} {'dec ms':>7} {'fps 1core':>9} {'25fps':>5} "
              f"{'key kB':>7} {'pred kB':>7} {'bits/el':>7} {'feat dB':>7}")
        for r in speed:
            print(f"{r['split']:5d} {r['codec']:<24} {r['encode_ms']:7.1f} {r['decode_ms']:7.1f} "
                  f"{r['fps_one_core']:9.1f} {'yes' if r['realtime_25fps'] else 'no':>5} {r['key_bytes'] / 1e3:7.2f} "
                  f"{r['pred_bytes'] / 1e3:7.2f} {r['bits_per_element']:7.4f} {r['feature_psnr']:7.2f}")
    bd = bd_table(rates) if rates else []
    if rates:
        print(f"\n{'split':>5} {'codec':<24} {'kB/frame':>8} {'key kB':>7} {'pred kB':>7} {'bits/el':>7} "
              f"{'feat dB':>7} {'out dB':>7} {'enc ms':>7} {'dec ms':>7}")
        for r in rates:
            print(f"{r['split']:5d} {r['codec']:<24} {r['bytes_per_frame'] / 1e3:8.2f} {r['key_bytes'] / 1e3:7.2f} "
                  f"{r['pred_bytes'] / 1e3:7.2f} {r['bits_per_element']:7.4f} {r['feature_psnr']:7.2f} "
                  f"{r['output_psnr']:7.2f} {r['encode_ms']:7.1f} {r['decode_ms']:7.1f}")
        print("\nBD-rate on output PSNR against NNC (negative: fewer bits at equal PSNR)")
        for b in bd:
            print(f"{b['split']:5d} {b['family']:<16} {b['bd_rate_percent']:8.1f} %  overlap {b['overlap']:.2f} "
                  f"{b['note']}")
    if args.json:
        args.json.write_text(json.dumps({"speed": speed, "rates": rates, "bd": bd}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
