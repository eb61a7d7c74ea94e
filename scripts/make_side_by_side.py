"""Regenerate docs/side_by_side.png: the anchor and a split + lossy codec, side by side.

Runs the bundled NanoDet whole (the anchor) and split at `--rank` with crossing tensors passed
through `--codec` (encode, decode), on every bundled image, in one process (the picture needs
no gRPC). Titles carry the split's mAP relative to the anchor over all bundled images; the
picture shows `--image`.

  .venv/bin/python scripts/make_side_by_side.py --rank 60 --codec nnc:-6 --image dog.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> int:
    from splitinfer.common.assets import IMAGES_DIR, bundled_images, default_model_path
    from splitinfer.common.codecs import get_codec
    from splitinfer.common.families import get_family
    from splitinfer.common.split.graph import SplitGraph, run_split
    from splitinfer.common.core.images import read_image
    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.core.runtime import make_session
    from splitinfer.common.eval.visualize import Run, compose, map_titles

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rank", type=int, default=60)
    ap.add_argument("--codec", default="nnc:-6")
    ap.add_argument("--image", default="dog.jpg")
    ap.add_argument("--threshold", type=float, default=0.3, help="drawing threshold")
    ap.add_argument("--width", type=int, default=1200, help="picture width (a palette PNG keeps the repo small)")
    ap.add_argument("-o", "--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "side_by_side.png"))
    args = ap.parse_args()

    family = get_family("nanodet")
    model = load_model(default_model_path())
    graph = SplitGraph(model)
    plan = graph.plan(rank=args.rank)
    part1, part2 = graph.extract(plan)
    whole, s1, s2 = (make_session(m, device="cpu", threads=2) for m in (model, part1, part2))
    codec = get_codec(args.codec)
    out_names = [n for n, _ in plan.consolidation]

    class _Coded:
        """Part II session whose inputs first go through the codec (what crosses the wire)."""

        def __init__(self, session):
            self.ort = self
            self._s = getattr(session, "ort", session)
            self.sizes = [0, 0]

        def get_inputs(self):
            return self._s.get_inputs()

        def run(self, names, feeds):
            coded = {}
            for k, v in feeds.items():
                payload = codec.encode(np.ascontiguousarray(v))
                self.sizes[0] += v.nbytes
                self.sizes[1] += len(payload)
                coded[k] = np.array(codec.decode(payload, v.dtype, v.shape))
            return self._s.run(names, coded)

    coded = _Coded(s2)
    anchor, split = {}, {}
    for path in bundled_images():
        img = read_image(path)
        feeds, meta = family.preprocess(img)
        outs = dict(zip(out_names, getattr(whole, "ort", whole).run(out_names, feeds)))
        anchor[path.stem] = family.postprocess(outs, meta, score_threshold=0.05)
        split[path.stem] = family.postprocess(run_split(s1, coded, plan, feeds), meta, score_threshold=0.05)
    keys = sorted(anchor)
    ratio = coded.sizes[0] / max(1, coded.sizes[1])
    runs = [Run("anchor: NanoDet-m, whole model", anchor),
            Run(f"split at rank {plan.rank} ({len(plan.crossing)} tensors), {codec.spec}, {ratio:.0f}x fewer bytes",
                split)]
    map_titles(runs, keys, None, anchor_threshold=args.threshold)  # the truth is what the anchor shows
    for r in runs:  # the numbers are over every bundled image, not only the one shown
        r.title = r.title.replace("frames)", "bundled images)")
    img = read_image(IMAGES_DIR / args.image)
    key = Path(args.image).stem
    pic = compose(img, [(r.for_frame(key), r.title) for r in runs], None, args.threshold)
    _write_small_png(pic, Path(args.out), args.width)
    print(runs[1].title.replace("\n", ": "))
    print(f"wrote {args.out}")
    return 0


def _write_small_png(pic: np.ndarray, out: Path, width: int) -> None:
    """Downscale and store as a 256-colour palette PNG (a few hundred kB instead of 1.5 MB)."""
    import cv2
    from PIL import Image

    if pic.shape[1] > width:
        pic = cv2.resize(pic, (width, round(pic.shape[0] * width / pic.shape[1])), interpolation=cv2.INTER_AREA)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pic[:, :, ::-1]).quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


if __name__ == "__main__":
    raise SystemExit(main())
