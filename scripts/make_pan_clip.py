"""Make the moving-camera clip of docs/study/: a window panning over vtest.avi, with one scene cut.

Why: vtest.avi is filmed by a fixed camera, where temporal prediction is at its best. This clip keeps
vtest's content (pedestrians, so the detector has something to find) but moves the camera: a 576x432
window (3/4 of the frame) slides across the picture, so every pixel of the background moves from frame to
frame, as with a panning or hand-held camera; halfway there is a hard cut to another part of the video
seen through a window panning the other way (a scene cut a temporal codec must absorb).

    .venv/bin/python scripts/make_pan_clip.py data/vtest/vtest.avi data/vtest/vtest_pan.avi [--frames 100]

Segment 1: vtest frames 0..N/2-1, window moving right 3.84 px and down 1.44 px per frame (0 -> 192, 0 -> 72
over 50 frames). Segment 2: vtest frames 400..400+N/2-1, window moving left and up from (192, 144).
Written lossless (FFV1), so every difference between frames is the camera's and the scene's, not the
clip encoder's. Deterministic: the same vtest.avi gives the same frames.
"""

from __future__ import annotations

import argparse
import sys


def windows(n: int, w: int, h: int, cw: int, ch: int):
    """(source frame index, x, y) of each output frame: two pans of n/2 frames, the second after a cut."""
    half = n // 2
    span_x, span_y = w - cw, (h - ch) // 2
    for i in range(half):
        t = i / max(half - 1, 1)
        yield i, round(t * span_x), round(t * span_y)
    for i in range(n - half):
        t = i / max(n - half - 1, 1)
        yield 400 + i, round((1 - t) * span_x), round(2 * span_y - t * span_y)


def main(argv=None) -> int:
    import cv2

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--frames", type=int, default=100)
    args = ap.parse_args(argv)
    cap = cv2.VideoCapture(args.src)
    total, w, h = (int(cap.get(p)) for p in (cv2.CAP_PROP_FRAME_COUNT, cv2.CAP_PROP_FRAME_WIDTH,
                                              cv2.CAP_PROP_FRAME_HEIGHT))
    if not cap.isOpened() or total < 400 + args.frames - args.frames // 2:
        print(f"make_pan_clip: {args.src} must be vtest.avi (795 frames); got {total} frames", file=sys.stderr)
        return 2
    cw, ch = w * 3 // 4, h * 3 // 4
    frames = {}
    plan = list(windows(args.frames, w, h, cw, ch))
    wanted = {src for src, _, _ in plan}
    for i in range(max(wanted) + 1):
        ok, frame = cap.read()
        if not ok:
            print(f"make_pan_clip: {args.src} ends at frame {i}", file=sys.stderr)
            return 2
        if i in wanted:
            frames[i] = frame
    writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"FFV1"), 10.0, (cw, ch))
    for src, x, y in plan:
        writer.write(frames[src][y:y + ch, x:x + cw])
    writer.release()
    print(f"wrote {args.out}: {len(plan)} frames {cw}x{ch}, cut after frame {args.frames // 2 - 1}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
