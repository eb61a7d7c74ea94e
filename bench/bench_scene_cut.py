"""What a scene cut costs a sequential codec, with and without the keyframe it now chooses there.

Frames: the moving-camera clip's window around its hard cut (scripts/make_pan_clip.py makes
data/vtest/vtest_pan.avi from vtest.avi; the cut is between frames 49 and 50), through Part I of the bundled
NanoDet at each split. Each codec codes the frames in order twice with fresh stream coders: as the UE does
now (`encode_frame`: a tensor's codec may choose a keyframe where prediction does not pay, sequence.py's
`encode_choosing`), and forced to predict every frame after the first (the behaviour before: each tensor's
`TensorEncoder.encode(arr, key=False)`). Printed per split and codec: kB of the frame at the cut, of the
keyframe that starts the clip, of the frame after the cut, and the total over the window, both ways;
whether the cut frame was flagged a keyframe (a fresh decoder can start there).

    .venv/bin/python bench/bench_scene_cut.py [--video data/vtest/vtest_pan.avi] [--cut 50] [--before 3]
                                              [--after 3] [--splits 46,95] [--codecs fqi:-14:x,video:12,dzstd]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_codecs import frames_at  # noqa: E402
from bench_fqi import read_frames  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def sizes_choosing(codec, names, frames) -> tuple[list[int], list[bool]]:
    """Bytes per frame and keyframe flags, coded as the UE codes them."""
    enc = codec.sequence_encoder()
    sizes, keys = [], []
    for f in frames:
        sizes.append(sum(len(p) for p in enc.encode_frame(names, f)))
        keys.append(enc.last_keyframe)
    enc.close()
    return sizes, keys


def sizes_always_predicting(codec, names, frames) -> list[int]:
    """Bytes per frame (without the 12-byte headers) when every frame after the first is predicted."""
    encs = [codec.tensor_encoder(a.dtype, a.shape) for a in frames[0]]
    sizes = [sum(len(e.encode(a, k == 0)) for e, a in zip(encs, f)) for k, f in enumerate(frames)]
    for e in encs:
        e.close()
    return sizes


def main(argv=None) -> int:
    from splitinfer.common.codecs import get_codec
    from splitinfer.common.codecs.sequence import HEADER

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", type=Path, default=ROOT / "data" / "vtest" / "vtest_pan.avi")
    ap.add_argument("--cut", type=int, default=50, help="index of the first frame after the cut")
    ap.add_argument("--before", type=int, default=3)
    ap.add_argument("--after", type=int, default=3)
    ap.add_argument("--splits", default="46,95")
    ap.add_argument("--codecs", default="fqi:-14:x,video:12,dzstd")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not args.video.exists():
        raise SystemExit(f"bench_scene_cut: {args.video} does not exist (scripts/make_pan_clip.py makes it)")
    images = read_frames(args.video, args.cut - args.before, args.before + args.after)
    at = args.before  # the cut frame's index in the window
    rows = []
    for rank in [int(s) for s in args.splits.split(",")]:
        frames = frames_at(rank, images)
        names = [f"t{k}" for k in range(len(frames[0]))]
        for spec in args.codecs.split(","):
            codec = get_codec(spec)
            now, keys = sizes_choosing(codec, names, frames)
            now = [s - HEADER.size * len(names) for s in now]
            before = sizes_always_predicting(codec, names, frames)
            row = {"split": rank, "codec": codec.spec, "start_key_kB": now[0] / 1e3,
                   "cut_kB_now": now[at] / 1e3, "cut_kB_before": before[at] / 1e3,
                   "after_cut_kB_now": now[at + 1] / 1e3, "after_cut_kB_before": before[at + 1] / 1e3,
                   "window_kB_now": sum(now) / 1e3, "window_kB_before": sum(before) / 1e3,
                   "cut_is_keyframe": keys[at], "keyframes": sum(keys)}
            rows.append(row)
            print(f"split {rank:3d} {codec.spec:12s} cut frame {row['cut_kB_before']:7.1f} -> "
                  f"{row['cut_kB_now']:7.1f} kB (clip's first keyframe {row['start_key_kB']:.1f} kB), next frame "
                  f"{row['after_cut_kB_before']:6.1f} -> {row['after_cut_kB_now']:6.1f} kB, window "
                  f"{row['window_kB_before']:7.1f} -> {row['window_kB_now']:7.1f} kB, keyframe at the cut: "
                  f"{'yes' if keys[at] else 'no'} ({sum(keys)} in all)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
