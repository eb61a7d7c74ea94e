"""Bring-your-own-data converters: COCO subsets, SFU-HW-Objects annotations, video frames.

Why: the field's studies run on COCO val2017 subsets and SFU-HW-Objects videos. Everything here
ends in one layout the other tools read: `images/` (pictures or frames) and `labels/` (one
`label x1 y1 x2 y2` text file per image, named after it), plus a COCO JSON where one exists.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from splitinfer.common.core.detections import Detection, write_predictions
from splitinfer.common.core.errors import UserError
from splitinfer.common.core.images import open_video
from splitinfer.common.core.labels import COCO80_NAMES, canonical_label

COCO_BASE_URL = "http://images.cocodataset.org"
COCO_ANNOTATIONS_ARCHIVE = "annotations/annotations_trainval2017.zip"
LABELS_DIR = "labels"
IMAGES_DIR = "images"
COCO_SUBSET_JSON = "instances.json"


# --------------------------------------------------------------------------------------------
# COCO


def coco_image_url(file_name: str, split: str = "val2017", base_url: str = COCO_BASE_URL) -> str:
    """Where COCO serves one image: <base>/<split>/<file_name>."""
    return f"{base_url.rstrip('/')}/{split}/{urllib.parse.quote(file_name)}"


def coco_annotations_url(base_url: str = COCO_BASE_URL) -> str:
    return f"{base_url.rstrip('/')}/{COCO_ANNOTATIONS_ARCHIVE}"


def coco_annotations_member(split: str = "val2017") -> str:
    """The instances file inside the annotations archive."""
    return f"annotations/instances_{split}.json"


def download(url: str, dest: Path, desc: str | None = None) -> Path:
    """Fetch `url` into `dest` (atomically, with a progress bar); a clear UserError offline."""
    from splitinfer.common.core.progress import bar as tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, part.open("wb") as fh:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=desc or dest.name, leave=False,
                      disable=total is not None and total < (1 << 20)) as bar:
                while chunk := resp.read(1 << 20):
                    fh.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise UserError(f"cannot download {url}: {reason} (no network? fetch it by hand and pass the local file)") from None
    part.replace(dest)
    return dest


def fetch_coco_annotations(cache_dir: Path, split: str = "val2017", base_url: str = COCO_BASE_URL) -> Path:
    """The instances JSON of `split`, downloading and unpacking the annotation archive once."""
    cache_dir = Path(cache_dir)
    out = cache_dir / f"instances_{split}.json"
    if out.is_file():
        return out
    archive = cache_dir / Path(COCO_ANNOTATIONS_ARCHIVE).name
    if not archive.is_file():
        download(coco_annotations_url(base_url), archive, "COCO annotations")
    member = coco_annotations_member(split)
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, KeyError) as exc:
        out.unlink(missing_ok=True)
        raise UserError(f"{archive}: not the COCO annotation archive ({exc})") from None
    return out


def read_name_list(path: str | Path) -> list[str]:
    """Image names, one a line ('#' comments and blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"list file not found: {path}")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]


def select_coco_images(coco: dict, names: list[str] | None = None, first: int | None = None,
                       source: str = "list") -> list[dict]:
    """The chosen image entries: by file name (or stem, or numeric id), or the first N by file name."""
    images = sorted(coco["images"], key=lambda i: i["file_name"])
    if names is not None:
        by_key: dict[str, dict] = {}
        for img in images:
            by_key[img["file_name"]] = img
            by_key[Path(img["file_name"]).stem] = img
            by_key[str(img["id"])] = img
        chosen, seen = [], set()
        for lineno, name in enumerate(names, start=1):
            img = by_key.get(name) or by_key.get(Path(name).name)
            if img is None:
                raise UserError(f"{source}:{lineno}: image {name!r} is not in the annotation file")
            if img["id"] not in seen:
                seen.add(img["id"])
                chosen.append(img)
        return chosen
    if first is not None:
        if first < 1:
            raise UserError(f"--first must be at least 1, got {first}")
        return images[:first]
    return images


def coco_subset(coco: dict, images: list[dict]) -> dict:
    """A COCO instances dict restricted to `images` (annotations follow, categories kept whole)."""
    ids = {img["id"] for img in images}
    out = {k: v for k, v in coco.items() if k not in ("images", "annotations")}
    out["images"] = list(images)
    out["annotations"] = [a for a in coco["annotations"] if a["image_id"] in ids]
    return out


def coco_ground_truth(coco: dict) -> dict[str, list[Detection]]:
    """Per-image `Detection`s (keyed by file stem) from a COCO dict; crowd regions are left out
    (the text layout cannot say 'ignore this region'; COCO JSON evaluation keeps them)."""
    names = {c["id"]: canonical_label(c["name"]) for c in coco["categories"]}
    by_image: dict[int, list[Detection]] = {img["id"]: [] for img in coco["images"]}
    for a in coco["annotations"]:
        if a.get("iscrowd", 0) or a["image_id"] not in by_image:
            continue
        if a["category_id"] not in names:
            raise UserError(f"annotation {a.get('id')}: category id {a['category_id']} not in the categories list")
        x, y, w, h = (float(v) for v in a["bbox"])
        by_image[a["image_id"]].append(Detection(names[a["category_id"]], x, y, x + w, y + h, 1.0))
    return {Path(img["file_name"]).stem: by_image[img["id"]] for img in coco["images"]}


def write_ground_truth(out_dir: Path, gt: dict[str, list[Detection]]) -> Path:
    """One `label x1 y1 x2 y2` file per image (empty when the image has no object)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for key, dets in gt.items():
        write_predictions(out_dir / f"{key}.txt", dets, with_score=False)
    return out_dir


@dataclass
class CocoSubsetResult:
    out_dir: Path
    annotations: Path
    labels_dir: Path
    images_dir: Path
    num_images: int
    num_boxes: int


def make_coco_subset(out_dir: str | Path, *, annotations: str | Path | None = None, images_dir: str | Path | None = None,
                     list_file: str | Path | None = None, first: int | None = None, download_missing: bool = False,
                     split: str = "val2017", base_url: str = COCO_BASE_URL) -> CocoSubsetResult:
    """Select a COCO subset and write `instances.json`, `labels/` and `images/` under `out_dir`.

    Without `download_missing`, images are copied from `images_dir`; with it, the annotation
    archive (when `annotations` is not given) and the chosen images are fetched from `base_url`.
    """
    from splitinfer.common.core.progress import bar as tqdm

    from splitinfer.common.eval.evaluation import load_coco_json

    out_dir = Path(out_dir)
    if annotations is None:
        if not download_missing:
            raise UserError("give --annotations FILE (or --download to fetch the COCO annotation archive)")
        annotations = fetch_coco_annotations(out_dir / "_download", split, base_url)
    coco = load_coco_json(annotations)
    names = read_name_list(list_file) if list_file else None
    chosen = select_coco_images(coco, names, first, str(list_file))
    if not chosen:
        raise UserError(f"{annotations}: no images selected")
    if not download_missing:
        if images_dir is None:
            raise UserError("give --images DIR (the folder holding the COCO images) or --download")
        images_dir = Path(images_dir)
        if not images_dir.is_dir():
            raise UserError(f"images folder not found: {images_dir}")
        for img in chosen:
            if not (images_dir / img["file_name"]).is_file():
                raise UserError(f"{images_dir}: image {img['file_name']} (id {img['id']}) not found")

    img_out = out_dir / IMAGES_DIR
    img_out.mkdir(parents=True, exist_ok=True)
    for img in tqdm(chosen, desc="images", unit="img", leave=False, disable=len(chosen) < 20):
        dest = img_out / img["file_name"]
        if download_missing:
            if not dest.is_file():
                download(coco_image_url(img["file_name"], split, base_url), dest)
        else:
            shutil.copyfile(images_dir / img["file_name"], dest)

    subset = coco_subset(coco, chosen)
    ann_out = out_dir / COCO_SUBSET_JSON
    ann_out.write_text(json.dumps(subset))
    gt = coco_ground_truth(subset)
    labels = write_ground_truth(out_dir / LABELS_DIR, gt)
    return CocoSubsetResult(out_dir, ann_out, labels, img_out, len(chosen), sum(len(v) for v in gt.values()))


# --------------------------------------------------------------------------------------------
# SFU-HW-Objects: one text file per frame, `class_id cx cy w h` relative to the frame size.

_SIZE_RE = re.compile(r"_(\d{2,5})x(\d{2,5})(?:_|$)")
_INDEX_RE = re.compile(r"(\d+)$")
_SEQ_SUFFIX_RE = re.compile(r"(?:[_-]?seq)?[_-]?\d+$", re.IGNORECASE)


def parse_size(text: str) -> tuple[int, int]:
    """'832x480' -> (832, 480)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise UserError(f"video size {text!r}: expected WIDTHxHEIGHT, e.g. 832x480")
    return int(m.group(1)), int(m.group(2))


def size_from_name(name: str) -> tuple[int, int] | None:
    """SFU/HEVC sequence names carry the size: 'BasketballDrill_832x480_50_seq_000' -> (832, 480)."""
    m = _SIZE_RE.search(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def frame_key(stem: str, index: int) -> str:
    """Name of frame `index` (0-based) of video `stem`: the one rule, `images.video_frame_name`."""
    from splitinfer.common.core.images import video_frame_name

    return video_frame_name(stem, index)


def sequence_name(annotation_stem: str) -> str:
    """'BasketballDrill_832x480_50_seq_012' -> 'BasketballDrill_832x480_50' (the video's usual stem)."""
    return _SEQ_SUFFIX_RE.sub("", annotation_stem) or annotation_stem


def read_sfu_frame(path: Path, width: int, height: int, labels: dict[int, str] | None = None) -> list[Detection]:
    """Boxes of one SFU annotation file in pixels; errors name the file and line."""
    labels = labels if labels is not None else dict(enumerate(COCO80_NAMES))
    dets = []
    for lineno, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 5:
            raise UserError(f"{path}:{lineno}: expected 5 fields 'class_id cx cy w h', got {len(parts)}")
        try:
            cls = int(parts[0])
        except ValueError:
            raise UserError(f"{path}:{lineno}: class id {parts[0]!r} is not an integer") from None
        if cls not in labels:
            lo, hi = min(labels), max(labels)
            raise UserError(f"{path}:{lineno}: class id {cls} outside the label map ({lo}..{hi})")
        try:
            cx, cy, w, h = (float(v) for v in parts[1:])
        except ValueError:
            raise UserError(f"{path}:{lineno}: non-numeric box in {line!r}") from None
        if w < 0 or h < 0 or max(abs(cx), abs(cy), w, h) > 2.0:
            raise UserError(f"{path}:{lineno}: box {line!r} is not relative (cx cy w h in 0..1)")
        dets.append(Detection(labels[cls], (cx - w / 2) * width, (cy - h / 2) * height,
                              (cx + w / 2) * width, (cy + h / 2) * height, 1.0))
    return dets


def sfu_annotation_files(ann_dir: str | Path) -> list[tuple[int, Path]]:
    """(frame index, file) pairs sorted by the index that ends each file's stem (…_seq_012.txt)."""
    ann_dir = Path(ann_dir)
    if not ann_dir.exists():
        raise UserError(f"annotation folder not found: {ann_dir}")
    files = [ann_dir] if ann_dir.is_file() else sorted(p for p in ann_dir.iterdir() if p.suffix == ".txt")
    if not files:
        raise UserError(f"{ann_dir}: no .txt annotation files")
    indexed = []
    for p in files:
        m = _INDEX_RE.search(p.stem)
        if not m:
            raise UserError(f"{p}: annotation file name does not end with a frame number")
        indexed.append((int(m.group(1)), p))
    indexed.sort()
    for (i, p), (j, q) in zip(indexed, indexed[1:]):
        if i == j:
            raise UserError(f"{q}: frame {j} is annotated twice (also in {p.name})")
    first = indexed[0][0]
    for n, (i, p) in enumerate(indexed):
        if i != first + n:
            raise UserError(f"{ann_dir}: annotation for frame {first + n} missing (next file is {p.name})")
    return indexed


def _raw(video) -> bool:
    """A raw .yuv/.y4m video (read by core/images.py, not OpenCV)."""
    from splitinfer.common.core.images import RAW_VIDEO_SUFFIXES

    return Path(video).suffix.lower() in RAW_VIDEO_SUFFIXES


def count_video_frames(video: str | Path) -> int:
    """Frames really decodable (the container's frame-count field is often wrong)."""
    if _raw(video):
        from splitinfer.common.core.images import raw_video_count

        return raw_video_count(Path(video))
    cap = open_video(video)
    n = 0
    try:
        while cap.grab():
            n += 1
    finally:
        cap.release()
    return n


def video_size(video: str | Path) -> tuple[int, int]:
    if _raw(video):
        from splitinfer.common.core.images import iter_frames

        frame = next(iter_frames(video, 1))[1]
        return frame.shape[1], frame.shape[0]
    cap = open_video(video)
    try:
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok:
        raise UserError(f"{video}: no frame could be decoded")
    return frame.shape[1], frame.shape[0]


def extract_frames(video: str | Path, out_dir: str | Path, every: int = 1, max_frames: int | None = None,
                   ext: str = ".png") -> list[Path]:
    """Write every K-th frame (at most N) as lossless images named by their frame index."""
    from splitinfer.common.core.progress import bar as tqdm

    from splitinfer.common.core.images import write_image

    if every < 1:
        raise UserError(f"--every must be at least 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise UserError(f"--max must be at least 1, got {max_frames}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(video).stem
    if _raw(video):
        from splitinfer.common.core.images import iter_frames

        frames = (f for i, f in enumerate(iter_frames(video)) if i % every == 0)
        return [write_image(out_dir / f"{name}{ext}", frame)
                for _, (name, frame) in zip(range(max_frames or 1 << 62), frames)]
    cap = open_video(video)
    written: list[Path] = []
    index = 0
    try:
        with tqdm(desc="frames", unit="frame", leave=False) as bar:
            while max_frames is None or len(written) < max_frames:
                if index % every == 0:
                    ok, frame = cap.read()
                    if not ok:
                        break
                    written.append(write_image(out_dir / f"{frame_key(stem, index)}{ext}", frame))
                    bar.update(1)
                elif not cap.grab():
                    break
                index += 1
    finally:
        cap.release()
    if not written:
        raise UserError(f"{video}: no frame could be decoded")
    return written


@dataclass
class SfuResult:
    labels_dir: Path
    images_dir: Path | None
    size: tuple[int, int]
    num_frames: int
    num_boxes: int


def convert_sfu(annotations: str | Path, out_dir: str | Path, *, size: tuple[int, int] | None = None,
                video: str | Path | None = None, labels: dict[int, str] | None = None, every: int = 1,
                max_frames: int | None = None, extract: bool = True, name: str | None = None) -> SfuResult:
    """SFU-HW-Objects annotations -> `labels/<name>_<frame:06d>.txt` in pixels (and, with a video,
    the matching frames in `images/`). The video must have one frame per annotation file.

    `name` defaults to the video's stem, else the sequence name of the annotation files."""
    if every < 1:
        raise UserError(f"--every must be at least 1, got {every}")
    out_dir = Path(out_dir)
    files = sfu_annotation_files(annotations)
    if video is not None:
        n_video = count_video_frames(video)
        if n_video != len(files):
            raise UserError(f"{video}: {n_video} frames, but {annotations} has {len(files)} annotation files "
                            f"(frames {files[0][0]}..{files[-1][0]})")
        vsize = video_size(video)
        if size is not None and tuple(size) != vsize:
            raise UserError(f"{video}: frames are {vsize[0]}x{vsize[1]}, not the given {size[0]}x{size[1]}")
        size = vsize
    if size is None:
        size = size_from_name(files[0][1].stem) or size_from_name(Path(annotations).name)
        if size is None:
            raise UserError(f"{annotations}: frame size unknown; give --size WxH or --video")
    width, height = size
    if name is None:
        name = Path(video).stem if video is not None else sequence_name(files[0][1].stem)
    gt: dict[str, list[Detection]] = {}
    for pos, (_index, path) in enumerate(files):
        if pos % every or (max_frames is not None and len(gt) >= max_frames):
            continue
        gt[frame_key(name, pos)] = read_sfu_frame(path, width, height, labels)
    labels_dir = write_ground_truth(out_dir / LABELS_DIR, gt)
    images_dir = None
    if video is not None and extract:
        images_dir = out_dir / IMAGES_DIR
        extract_frames(video, images_dir, every, max_frames)
    return SfuResult(labels_dir, images_dir, (width, height), len(gt), sum(len(v) for v in gt.values()))
