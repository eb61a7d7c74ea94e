"""Bring your own data: COCO subsets, SFU-HW-Objects annotations, video frames.

Every action writes the layout the other tools read: OUT/images/ (pictures or frames) and
OUT/labels/ (one `label x1 y1 x2 y2` ground-truth file per image, named after it); `coco`
also writes OUT/instances.json (the subset as COCO JSON, for `splitinfer map --gt`).
The field's tool_for_dataset scripts (TR 26.847 B.3.2; the TR names them without their options):
get_cocodataset_annotations.sh + get_cocodataset_selection.sh = `dataset coco --download --list FILE`
(annotations, the listed images, and labels in the calc_map layout in one step).

examples:
  splitinfer dataset coco --annotations instances_val2017.json --images val2017/ --first 50 -o coco50
  splitinfer dataset coco --download --list names.txt -o coco_sel        (needs a network)
  splitinfer dataset sfu --annotations BasketballDrill/ --video BasketballDrill.mp4 -o bd --every 5
  splitinfer dataset sfu --annotations BasketballDrill/ --size 832x480 -o bd
  splitinfer dataset frames video.mp4 -o frames/ --every 10 --max 30
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "dataset"
HELP = "make datasets: COCO subsets (local or --download), SFU-HW-Objects labels, video frames"
# output options (argparse dest -> "file" or "dir"), checked and prepared by the CLI before run()
OUTPUTS = {"out": "dir"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from splitinfer.common.cli import options as opt

    sub = p.add_subparsers(dest="dataset_action", metavar="ACTION")

    c = sub.add_parser("coco", help="select a COCO subset; write its JSON, labels and images")
    c.add_argument("--annotations", help="COCO instances JSON (e.g. instances_val2017.json)")
    c.add_argument("--images", help="folder holding the COCO images")
    pick = c.add_mutually_exclusive_group()
    pick.add_argument("--list", help="file of image names (file name, stem or id), one a line")
    pick.add_argument("--first", type=opt.POSITIVE_INT, help="the first N images by file name")
    c.add_argument("--download", action="store_true",
                   help="fetch the annotation archive (without --annotations) and the chosen images")
    c.add_argument("--split", default="val2017", help="COCO split for --download (default val2017)")
    c.add_argument("--base-url", default=None, help="dataset site for --download (default images.cocodataset.org)")
    c.add_argument("-o", "--out", required=True, help="output folder")

    s = sub.add_parser("sfu", help="SFU-HW-Objects annotations -> labels in pixels (+ frames with --video)")
    s.add_argument("--annotations", required=True, help="folder of per-frame 'class_id cx cy w h' files")
    s.add_argument("--video", help="the sequence as a video: checks the frame count, gives the size, "
                                   "and its frames are extracted to OUT/images")
    s.add_argument("--size", help="frame size WxH (default: from --video or the file names, e.g. _832x480_)")
    s.add_argument("--labels", help="label map CSV (`id,name`, the field's coco_labels.csv); default: "
                                    "COCO-80, 0-based")
    s.add_argument("--name", help="frame names are NAME_<frame:06d> (default: the video's stem, else the "
                                  "sequence name of the annotation files, as `detect` names a video's frames)")
    s.add_argument("--every", type=opt.POSITIVE_INT, default=1, help="keep every K-th frame (default 1)")
    s.add_argument("--max", type=opt.POSITIVE_INT, default=None, help="keep at most N frames")
    s.add_argument("-o", "--out", required=True, help="output folder")

    f = sub.add_parser("frames", help="extract frames of a video as PNG images")
    f.add_argument("video")
    f.add_argument("--every", type=opt.POSITIVE_INT, default=1, help="keep every K-th frame (default 1)")
    f.add_argument("--max", type=opt.POSITIVE_INT, default=None, help="keep at most N frames")
    f.add_argument("-o", "--out", required=True, help="output folder: the frames go to OUT/images/")


def run(args: argparse.Namespace) -> int:
    from splitinfer.common.eval import datasets
    from splitinfer.common.core.errors import UserError

    action = getattr(args, "dataset_action", None)
    if action == "coco":
        if args.first is not None and args.first < 1:
            raise UserError(f"--first must be at least 1, got {args.first}")
        res = datasets.make_coco_subset(args.out, annotations=args.annotations, images_dir=args.images,
                                        list_file=args.list, first=args.first, download_missing=args.download,
                                        split=args.split, base_url=args.base_url or datasets.COCO_BASE_URL)
        print(f"{res.num_images} images, {res.num_boxes} boxes (crowd regions only in the JSON)")
        print(f"  annotations: {res.annotations}\n  labels:      {res.labels_dir}\n  images:      {res.images_dir}")
        return 0
    if action == "sfu":
        if args.max is not None and args.max < 1:
            raise UserError(f"--max must be at least 1, got {args.max}")
        from splitinfer.common.core.labels import read_labels_csv

        labels = read_labels_csv(args.labels) if args.labels else None
        size = datasets.parse_size(args.size) if args.size else None
        res = datasets.convert_sfu(args.annotations, args.out, size=size, video=args.video, labels=labels,
                                   every=args.every, max_frames=args.max, name=args.name)
        print(f"{res.num_frames} frames, {res.num_boxes} boxes at {res.size[0]}x{res.size[1]}")
        print(f"  labels: {res.labels_dir}")
        if res.images_dir:
            print(f"  images: {res.images_dir}")
        return 0
    if action == "frames":
        images = Path(args.out) / "images"  # the layout every action writes (see the module docstring)
        paths = datasets.extract_frames(args.video, images, args.every, args.max)
        print(f"{len(paths)} frames written to {images}")
        return 0
    args._parser.print_help()
    return 2
