"""Draw predictions (and ground truth) over an image, a folder of images or a video.

PREDICTIONS is a predictions file (one image) or a folder of them named after the frames
(`<image stem>.txt`, or `<video stem>_<frame:06d>.txt` for a video, as `detect` writes).
`--compare PREDICTIONS2` puts a second run (e.g. a split/codec result) beside the first
(e.g. the anchor), each titled with its mAP over the whole source: against `--gt` when given,
else the second run relative to the first. Output (`-o`): a .png (one image), a folder of PNGs,
or a video (.webm with VP8, or .mp4 with H.264 where OpenCV has it: both play in browsers; the default
for a video source is whichever works here); headless by default, `--show` also displays them on a
desktop. The field's visualize.py form works: `visualize VIDEO ANNOTATIONS --sleep_time S` (S seconds
between two frames: the written video's frame interval, and the pause between frames with --show).

examples:
  splitinfer visualize dog.jpg out/anchor/dog.txt -o dog_vis.png
  splitinfer visualize data/images out/anchor --compare out/s60_nnc-26 --gt data/instances.json -o vis/
  splitinfer visualize clip.mp4 out/anchor --compare out/split -o clip_vis.webm
  splitinfer visualize clip.mp4 out/anchor --sleep_time 0.1
"""

from __future__ import annotations

import argparse

from splitinfer.common.eval.evaluation import DEFAULT_ANCHOR_THRESHOLD

NAME = "visualize"
HELP = "draw predictions/ground truth on an image, folder or video; --compare two runs side by side"


def OUTPUTS(args) -> dict:
    """Output options checked and prepared by the CLI before run(): `-o` is a file with a suffix, else a folder."""
    from pathlib import Path

    return {"out": "file" if args.out and Path(args.out).suffix else "dir"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from splitinfer.common.cli import options as opt

    p.add_argument("source", help="image, folder of images, or video")
    p.add_argument("predictions", help="predictions file or folder (e.g. the anchor's)")
    p.add_argument("--gt", help="ground truth: COCO JSON, folder of 'label x1 y1 x2 y2' files, or one file")
    p.add_argument("--compare", metavar="PREDICTIONS2", help="second predictions, drawn side by side")
    p.add_argument("--names", nargs=2, metavar=("LEFT", "RIGHT"), help="panel names (default: folder names)")
    p.add_argument("-o", "--out", help="output .png, .webm, .mp4 or folder (default: <source>_vis.png, "
                                       "_vis.webm (or .mp4 with H.264) or _vis/)")
    p.add_argument("--threshold", type=opt.SCORE, default=0.3,
                   help="draw predictions scored at or above this (default 0.3; mAP uses all)")
    p.add_argument("--anchor-threshold", type=opt.SCORE, default=DEFAULT_ANCHOR_THRESHOLD,
                   help="without --gt: anchor boxes at or above this score are the truth (default %(default)s)")
    p.add_argument("--max-frames", type=opt.POSITIVE_INT, help="only the first N frames")
    p.add_argument("--fps", type=opt.POSITIVE_FLOAT, help="frame rate of a video output (default: the source's, or 10)")
    p.add_argument("--sleep_time", type=opt.SECONDS, metavar="S", help="visualize.py's option: S seconds between two "
                   "frames (a video output at 1/S frames per second; the pause between frames with --show)")
    p.add_argument("--show", action="store_true", help="also display on screen (needs a desktop)")


def run(args: argparse.Namespace) -> int:
    from splitinfer.common.core.errors import UserError
    from splitinfer.common.eval.visualize import visualize

    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames must be at least 1, got {args.max_frames}")
    if args.fps is not None and not args.fps > 0:
        raise UserError(f"--fps must be positive, got {args.fps}")
    if args.sleep_time is not None and not args.sleep_time > 0:
        raise UserError(f"--sleep_time must be positive, got {args.sleep_time}")
    fps = args.fps if args.fps is not None or args.sleep_time is None else 1.0 / args.sleep_time
    wait_ms = None if args.sleep_time is None else max(1, round(1000 * args.sleep_time))
    res = visualize(args.source, args.predictions, gt=args.gt, compare=args.compare, out=args.out,
                    show=args.show, threshold=args.threshold, names=tuple(args.names) if args.names else None,
                    max_frames=args.max_frames, fps=fps, anchor_threshold=args.anchor_threshold, wait_ms=wait_ms)
    what = {"image": "picture", "dir": "pictures in", "video": "frames in video"}[res.kind]
    panels = " | ".join(t.replace("\n", ": ") for t in res.titles)  # one line, with what each panel shows
    print((f"{res.frames} {what} {res.out}" if res.kind != "image" else f"picture: {res.out}")
          + (f" (panels: {panels})" if panels else ""))
    return 0
