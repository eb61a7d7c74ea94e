"""Run the whole system once: network process + UE on the bundled photos, a few splits x codecs, one table.

Starts the network process (`splitinfer serve`) as a separate OS process on a free port, runs the UE
(this process: Part I, encode, gRPC stream) with the bundled NanoDet on the bundled images at several
split points (by default: rank 9, one 5.5 MB activation sent in chunks; rank 60, four crossing tensors; rank
120, where Part I already yields two of the model's outputs) and codecs, and the sequential codecs (frames
coded in order, each predicted from the one before) on a slow pan over one photo at rank 60; compares every
frame's detections with the whole model run locally (the anchor), prints the table and stops the server.
"""

NAME = "demo"
HELP = "start the network process and run the UE on the bundled photos at a few splits and codecs"

# Rank 9, not 10: rank 10's tensor is the -inf padding before a MaxPool, which NNC cannot code
# (the codec then sends it raw), so it would show nothing about compression.
DEFAULT_SPLITS = "9,60,120"
DEFAULT_CODECS = "none,float16,zstd,fq:6,fq:-22,nnc:-38"  # fq at points of about NNC -38's agreement
DEFAULT_SEQUENCE_CODECS = "dzstd,fqi:-14:h,video:30"  # sequential: rows on a slow pan over a photo, frames in order
SEQUENCE_SPLIT = "60"


def add_arguments(p):
    from splitinfer.common.cli import options as opt
    from splitinfer.common.cli.options import add_list_option

    add_list_option(p, "--splits", default=DEFAULT_SPLITS, metavar="SPLIT",
                    help=f"split ranks or node names, comma- or space-separated (default {DEFAULT_SPLITS})")
    add_list_option(p, "--codecs", default=DEFAULT_CODECS, metavar="CODEC",
                    help=f"codec specs, comma- or space-separated (default {DEFAULT_CODECS})")
    add_list_option(p, "--sequence-codecs", default=DEFAULT_SEQUENCE_CODECS, metavar="CODEC", allow_empty=True,
                    help=f"sequential codec specs, run at split {SEQUENCE_SPLIT} on a slow pan over the first photo "
                         f"(frames coded in order; default {DEFAULT_SEQUENCE_CODECS}; '' for none)")
    p.add_argument("--pan-frames", type=opt.COUNT, default=12,
                   help="frames of the pan the sequential codecs run on (default 12; 0: no sequential rows)")
    p.add_argument("--images", type=opt.COUNT, default=0, help="use only the first N bundled images (0: all)")
    p.add_argument("--threads", type=opt.THREADS, default=1,
                   help="intra-op threads of each process's sessions (default 1: the two processes share the cores)")
    p.add_argument("--in-flight", type=opt.POSITIVE_INT, default=1, help="frames in flight on the stream (default 1)")
    p.add_argument("--max-message-mb", type=opt.MESSAGE_MB, default=4.0,
                   help="gRPC message limit in MiB (default 4)")


def run(args) -> int:
    from splitinfer.common.core.allocator import tune_allocator
    from splitinfer.common.transport import wire
    from splitinfer.common.assets import DEFAULT_MODEL_ID, MODELS_DIR, default_model_path
    from splitinfer.common.codecs import get_codec
    from splitinfer.common.families import get_family
    from splitinfer.device.client import UEClient
    from splitinfer.common.core.whole_model import WholeModel
    from splitinfer.device.part1 import Part1, parse_split
    from splitinfer.experiments.server_process import ServerProcess

    splits = [parse_split(s) for s in args.splits]
    codecs = [get_codec(s) for s in args.codecs]
    seq_codecs = [get_codec(s) for s in args.sequence_codecs]
    tune_allocator()
    images = bundled_frames(args.images)
    pan = pan_frames(images[0][2], args.pan_frames) if seq_codecs and args.pan_frames else []
    family = get_family("nanodet")
    model_path = default_model_path()
    anchor = WholeModel(model_path, "cpu", threads=args.threads, family=family)
    reference = {(name, index): anchor.detect(img)[0] for name, index, img in images + pan}

    print(f"starting the network process (bundled model repository {MODELS_DIR}) ...", flush=True)
    rows, failures = [], []
    with ServerProcess(MODELS_DIR, device="auto", threads=args.threads, max_message_mb=args.max_message_mb) as server:
        print(f"network process pid {server.proc.pid} listening on {server.address}, "
              f"metrics on :{server.metrics_port}", flush=True)
        client = UEClient(server.address, int(args.max_message_mb * wire.MIB))
        client.wait_ready()
        runs = [(split, codec, images) for split in splits for codec in codecs]
        runs += [(parse_split(SEQUENCE_SPLIT), codec, pan) for codec in seq_codecs if pan]
        try:
            for (rank, node), codec, frames in runs:
                part1 = Part1(model_path, rank=rank, name=node, threads=args.threads)
                row, failure = demo_row(client, part1, family, codec, frames, reference, args.in_flight,
                                        DEFAULT_MODEL_ID)
                rows.append(row)
                failures += [failure] if failure else []
                print(f"  split {row[0]:3d} {row[10]} done ({len(frames)} frames, "
                      f"end-to-end {row[9]:.1f} ms median)", flush=True)
        finally:
            client.close()
        code = server.stop()
    print()
    print_table(rows)
    seq = (f" ({len(pan)} frames of a slow pan over {images[0][0]} for the sequential codecs, marked "
           f"'seq: keyframes/frames')") if pan else ""
    print(f"\n{len(images)} images per row{seq}; branches = crossing tensors (+N out: model outputs Part I already "
          f"made, sent too); times are medians in ms (enc+dec: codec time on both sides); Part II ran on "
          f"{rows[0][12] if rows else '?'}; network process stopped (exit code {code}).")
    for f in failures:
        print(f"FAILED: {f}")
    return 1 if failures else 0


def bundled_frames(limit: int) -> list:
    """(name, 0, image) of the bundled photos (the first `limit`, 0: all)."""
    import cv2

    from splitinfer.common.assets import bundled_images
    from splitinfer.common.core.errors import UserError

    paths = bundled_images()
    if limit:
        paths = paths[:limit]
    frames = []
    for p in paths:
        img = cv2.imread(str(p))
        if img is None:
            raise UserError(f"cannot read image {p}")
        frames.append((p.name, 0, img))
    return frames


def pan_frames(image, count: int, step: int = 4) -> list:
    """A short video made from one photo: a window of 7/8 of its size moving right by `step` pixels a frame
    (a slow camera pan), so consecutive frames are alike, as in a video, without bundling one."""
    h, w = image.shape[:2]
    wh, ww = h * 7 // 8, w * 7 // 8
    count = min(count, (w - ww) // step + 1)
    return [("pan", k, image[(h - wh) // 2:(h - wh) // 2 + wh, k * step:k * step + ww].copy()) for k in range(count)]


def demo_row(client, part1, family, codec, frames, reference, in_flight, model_id) -> tuple:
    """Run `frames` through one pipeline (one stream: a sequential codec codes them in order); the table row
    and a failure text where a lossless codec's detections differ from the anchor's."""
    import numpy as np

    from splitinfer.device.agreement import compare_detections, verdict
    from splitinfer.device.pipeline import FramePipeline

    pipeline = FramePipeline(client, part1, family, codec, model_id, in_flight=in_flight)
    try:
        records = list(pipeline.run(frames))
    finally:
        pipeline.close()
    agree = [compare_detections(reference[r.source, r.index], r.detections) for r in records]
    ms = lambda xs: float(np.median([x * 1e3 for x in xs]))  # noqa: E731
    raw = int(np.mean([r.raw_bytes for r in records]))
    enc = int(np.mean([r.encoded_bytes for r in records]))
    rank = part1.plan.rank
    label = str(codec.spec)
    if codec.sequential:
        label += f" (seq: {sum(r.keyframe for r in records)}/{len(records)} key)"
    branches = f"{len(part1.plan.crossing)}" + (
        f"+{len(part1.plan.part1_final_outputs)}out" if part1.plan.part1_final_outputs else "")
    row = (rank, branches, raw, enc, raw / max(enc, 1), ms(r.part1_s for r in records),
           ms(r.encode_s + r.server["decode"] for r in records), ms(r.transfer_s for r in records),
           ms(r.server["part2"] for r in records), ms(r.end_to_end_s for r in records),
           label, verdict(agree).describe(), records[0].server_provider)
    failure = None
    if codec.lossless and not all(a.rounding for a in agree):
        failure = f"split {rank} codec {label}: lossless but detections differ from the anchor"
    return row, failure


_COLUMNS = ("split", "branches", "codec", "raw B", "encoded B", "ratio", "Part I", "enc+dec", "transfer", "Part II",
            "e2e ms")


def table_lines(rows) -> list[str]:
    """The table as lines, each column as wide as its widest cell (chained specs such as float16+zstd:3 fit)."""
    cells = []
    for rank, branches, raw, enc, ratio, p1, codec_ms, tr, p2, e2e, label, agree, _ in rows:
        cells.append((str(rank), branches, label, str(raw), str(enc), f"{ratio:.2f}", f"{p1:.1f}", f"{codec_ms:.1f}",
                      f"{tr:.2f}", f"{p2:.1f}", f"{e2e:.1f}", agree))
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(_COLUMNS)]
    head = " ".join(h.rjust(w) for h, w in zip(_COLUMNS, widths)) + "  equal-to-anchor"
    lines = [head, "-" * len(head)]
    lines += [" ".join(v.rjust(w) for v, w in zip(c, widths)) + "  " + c[-1] for c in cells]
    return lines


def print_table(rows) -> None:
    for line in table_lines(rows):
        print(line)
