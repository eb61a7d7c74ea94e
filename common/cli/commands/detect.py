"""Run a whole detector locally (the "anchor") on an image, a video or a folder of images.

Writes, per image or video frame, a predictions file `<name>.txt` (`label x1 y1 x2 y2 score` lines, pixels
of the original image) and an overlay `<name>.overlay.jpg` into the output folder. Video frames are named
`<video>_<index>`. This is the reference every split configuration is compared against.
`--coco-results FILE.json` also writes all the detections as COCO results JSON (image ids from `--gt`'s
COCO JSON when given, else numbered, with each image's name in `file_name`).

The default threshold is the family's display threshold: right for pictures, too high for COCO AP, which
counts low-score detections too (`map` scores such predictions well below `sweep`'s numbers); write
predictions for `map` with `--threshold 0.05`.

  splitinfer detect dog.jpg
  splitinfer detect --model ssd.onnx --family ssd_resnet clip.mp4 -o out/
  splitinfer detect coco50/images --threshold 0.05 --coco-results dets.json --gt coco50/instances.json
"""

from __future__ import annotations

from splitinfer.common.cli.options import add_family_option

NAME = "detect"
HELP = "run a whole model on an image, video or folder; write predictions and overlays"
# output options (argparse dest -> "file" or "dir"), checked and prepared by the CLI before run()
OUTPUTS = {"output": "dir", "coco_results": "file"}


def add_arguments(p) -> None:
    from splitinfer.common.cli import options as opt

    p.add_argument("source", help="image file, folder of images, or video file")
    p.add_argument("--model", default="nanodet",
                   help="bundled model id (common/assets/models/<id>), model folder, or .onnx file (default: nanodet)")
    add_family_option(p, "model family of an .onnx file without recorded family")
    p.add_argument("-o", "--output", default="detections", help="output folder (default: ./detections)")
    p.add_argument("--threshold", type=opt.SCORE, help="minimum score (default: the family's)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"), help="processing unit")
    p.add_argument("--threads", type=opt.THREADS, help="onnxruntime intra-op threads")
    p.add_argument("--max-frames", type=opt.POSITIVE_INT, help="stop after this many frames")
    p.add_argument("--no-overlay", action="store_true", help="write predictions files only")
    p.add_argument("--coco-results", metavar="JSON", help="also write every detection as COCO results JSON")
    p.add_argument("--gt", metavar="COCO_JSON", help="with --coco-results: take image ids from this COCO "
                                                     "instances file (images matched by file name)")


def warn_random_weights(model_path, folder) -> None:
    """A model exported with random weights: one line on stderr and WARNING.md beside the predictions."""
    import sys
    from pathlib import Path

    from splitinfer.common.core.models import random_weights_warning

    warning = random_weights_warning(model_path)
    if warning:
        print(f"splitinfer detect: {warning}", file=sys.stderr, flush=True)
        (Path(folder) / "WARNING.md").write_text(warning + "\n")


def run(args) -> int:
    from pathlib import Path

    from splitinfer.common.core.errors import UserError
    from splitinfer.common.core.whole_model import WholeModel
    from splitinfer.common.eval.detect_source import detect_source
    from splitinfer.common.families import resolve_model

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold must be within 0..1, got {args.threshold}")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames must be at least 1, got {args.max_frames}")
    source = Path(args.source)
    if not source.exists():
        raise UserError(f"source not found: {source}")
    model_path, family = resolve_model(args.model, args.family)
    model = WholeModel(model_path, device=args.device, threads=args.threads, family=family)
    sess = model.session
    missing = [n for n in family.input_names if n not in sess.input_names]
    if missing:
        raise UserError(f"{model_path}: inputs {sess.input_names} do not match family {family.name} "
                        f"(expects {list(family.input_names)})")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"output exists and is not a folder: {out}")
    if args.gt and not args.coco_results:
        raise UserError("--gt only names image ids for --coco-results FILE.json")
    if args.coco_results and Path(args.coco_results).suffix.lower() != ".json":
        raise UserError(f"{args.coco_results}: a COCO results file must end in .json")
    coco_gt = None
    if args.gt:
        from splitinfer.common.eval.evaluation import load_coco_json

        coco_gt = load_coco_json(args.gt)
    out.mkdir(parents=True, exist_ok=True)
    warn_random_weights(model_path, out)
    done = detect_source(model, source, out, threshold=args.threshold, max_frames=args.max_frames,
                         overlay=not args.no_overlay, collect=bool(args.coco_results))
    _report(args, done, family, model_path, sess.provider, out, coco_gt)
    return 0


def _report(args, done, family, model_path, provider, out, coco_gt) -> None:
    if done.frames == 1:
        for d in done.last:
            print(f"  {d.line()}")
    print(f"{done.frames} frame(s), {done.detections} detections; {family.name} model {model_path} on {provider}, "
          f"mean inference {done.mean_infer_ms:.1f} ms; wrote {out}/")
    if done.collected is not None:
        from splitinfer.common.eval.coco_results import to_results, write_results

        entries = to_results(done.collected, coco_gt)
        print(f"COCO results: {write_results(args.coco_results, entries)} ({len(entries)} detections)")
    if args.threshold is None:
        from splitinfer.common.eval.coco_results import COCO_SCORE_THRESHOLD

        print(f"note: detections at {family.name}'s display threshold {family.score_threshold}; for mAP "
              f"(`splitinfer map`) write them with --threshold {COCO_SCORE_THRESHOLD}")
