"""Frames from an image file, a folder of images or a video, with errors that name the file.

Every tool that takes "SOURCE" (detect, the device streamer, evaluation) reads it through
`iter_frames`, so they all accept the same inputs and fail the same way. OpenCV returns None instead of
raising on unreadable files; here that becomes a `UserError`. Paths are read as bytes and decoded with
`cv2.imdecode`, so non-ASCII file names work too.

Raw video, as SFU-HW-Objects and the MPEG test sequences ship it, is read here too (OpenCV cannot):
*raw YUV* (`.yuv`: planes only; the frame size and pixel format come from the file name, e.g.
`BasketballDrill_832x480_50.yuv`, `Foo_1920x1080_60_10bit.yuv`, `Bar_416x240_yuv444p.yuv`, else from
$SPLITINFER_YUV, e.g. `1920x1080:yuv420p10le`; default pixel format yuv420p) and *Y4M* (`.y4m`: a
YUV4MPEG2 header says size and colour space). Supported pixel formats: yuv420p, yuv422p, yuv444p, gray,
each 8-bit or 10-bit little-endian (`...p10le`, shifted to 8 bits); colours converted with BT.601.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from splitinfer.common.assets import IMAGE_SUFFIXES
from splitinfer.common.core.errors import UserError

RAW_VIDEO_SUFFIXES = (".yuv", ".y4m")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv") + RAW_VIDEO_SUFFIXES
IMAGE_READ_SUFFIXES = tuple(sorted(set(IMAGE_SUFFIXES) | {".tif", ".tiff", ".webp"}))


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_READ_SUFFIXES


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def read_image(path: str | Path) -> np.ndarray:
    """An image file as an HxWx3 uint8 BGR array (gray and alpha images converted)."""
    import cv2

    path = Path(path)
    if not path.exists():
        raise UserError(f"image not found: {path}")
    if not path.is_file():
        raise UserError(f"image path is not a file: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise UserError(f"{path}: not a readable image (empty, truncated or unsupported format)")
    return img


def write_image(path: str | Path, image: np.ndarray, jpeg_quality: int = 90) -> Path:
    """Write an image (format from the suffix), creating folders; errors name the file."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if path.suffix.lower() in (".jpg", ".jpeg") else []
    try:
        ok, buf = cv2.imencode(path.suffix or ".png", image, params)
    except cv2.error as exc:
        raise UserError(f"{path}: cannot encode image ({exc.msg.strip() if hasattr(exc, 'msg') else exc})") from None
    if not ok:
        raise UserError(f"{path}: cannot encode image as {path.suffix or '.png'}")
    buf.tofile(str(path))
    return path


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside a folder, sorted by name."""
    folder = Path(folder)
    return sorted((p for p in folder.iterdir() if p.is_file() and is_image(p)), key=lambda p: p.name)


def frame_names(paths: list[Path]) -> list[str]:
    """The frame names of a folder's images: file stems, made unique when two files differ only by suffix
    (a.jpg, a.png -> a_jpg, a_png)."""
    stems = [p.stem for p in paths]
    return [p.stem if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}" for p in paths]


def video_frame_name(stem: str, index: int) -> str:
    """The name of frame `index` (0-based) of the video whose file stem is `stem`: `<stem>_<index:06d>`, so
    extracted frames, labels, sweeps and the predictions of `detect`/`device` on the video line up."""
    return f"{stem}_{index:06d}"


def open_video(path: str | Path):
    """An opened `cv2.VideoCapture` (caller releases it); UserError naming the file when it cannot be."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise UserError(f"video not found: {path}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise UserError(f"{path}: cannot open video (unsupported codec or not a video)")
    return cap


def frame_count(source: str | Path) -> int | None:
    """Number of frames `iter_frames(source)` will yield (a video's count is the container's estimate)."""
    import cv2

    source = Path(source)
    if source.is_dir():
        return len(list_images(source))
    if source.is_file() and source.suffix.lower() in RAW_VIDEO_SUFFIXES:
        return raw_video_count(source)
    if source.is_file() and is_video(source):
        cap = open_video(source)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        return n if n > 0 else None
    return 1 if source.is_file() else None


def frame_rate(source: str | Path) -> float | None:
    """Frames per second of a video (its container's; a .y4m header's F; a raw .yuv name's number after the
    size, e.g. `BasketballDrill_832x480_50.yuv`), None for images, folders and videos that do not say."""
    import cv2

    source = Path(source)
    if not source.is_file() or not is_video(source):
        return None
    suffix = source.suffix.lower()
    if suffix == ".y4m":
        num, _, den = _y4m_fields(source)[0].get("F", "").partition(":")
        fps = int(num) / int(den) if num.isdigit() and den.isdigit() and int(den) else 0.0
    elif suffix == ".yuv":
        m = re.search(r"\d{2,5}x\d{2,5}_(\d{1,3}(?:\.\d+)?)(?:fps|hz)?(?:[_.\-]|$)", source.name.lower())
        fps = float(m.group(1)) if m else 0.0
    else:
        cap = open_video(source)
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        cap.release()
    return fps if 0 < fps <= 1000 else None


def iter_frames(source: str | Path, max_frames: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (name, BGR frame) from an image file, a folder of images, or a video.

    Names identify the frame in output files: the image's stem, or `<video stem>_<index:06d>`.
    """
    source = Path(source)
    if not source.exists():
        raise UserError(f"source not found: {source}")
    if source.is_dir():
        paths = list_images(source)
        if not paths:
            raise UserError(f"{source}: folder holds no images ({', '.join(IMAGE_READ_SUFFIXES)})")
        items = zip(frame_names(paths), paths)
        for i, (name, path) in enumerate(items):
            if max_frames is not None and i >= max_frames:
                return
            yield name, read_image(path)
    elif is_video(source):
        yield from _iter_video(source, max_frames)
    elif is_image(source):
        yield source.stem, read_image(source)
    else:
        raise UserError(f"{source}: unsupported file type {source.suffix or '(no suffix)'!r} "
                        f"(images: {', '.join(IMAGE_READ_SUFFIXES)}; videos: {', '.join(VIDEO_SUFFIXES)})")


def _iter_video(path: Path, max_frames: int | None) -> Iterator[tuple[str, np.ndarray]]:
    if path.suffix.lower() in RAW_VIDEO_SUFFIXES:
        yield from _iter_raw_video(path, max_frames)
        return
    cap = open_video(path)
    try:
        index = 0
        while max_frames is None or index < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            yield video_frame_name(path.stem, index), frame
            index += 1
        if index == 0:
            raise UserError(f"{path}: video has no decodable frames")
    finally:
        cap.release()


# ---------------------------------------------------------------------------------------------- raw video

# pixel format -> (chroma width divisor, chroma height divisor or 0 for no chroma, bytes per sample)
PIX_FMTS = {"yuv420p": (2, 2, 1), "yuv422p": (2, 1, 1), "yuv444p": (1, 1, 1), "gray": (1, 0, 1),
            "yuv420p10le": (2, 2, 2), "yuv422p10le": (2, 1, 2), "yuv444p10le": (1, 1, 2), "gray10le": (1, 0, 2)}
Y4M_COLORSPACES = {"420": "yuv420p", "420jpeg": "yuv420p", "420paldv": "yuv420p", "420mpeg2": "yuv420p",
                   "422": "yuv422p", "444": "yuv444p", "mono": "gray", "420p10": "yuv420p10le",
                   "422p10": "yuv422p10le", "444p10": "yuv444p10le", "mono10": "gray10le"}
MAX_RAW_SIDE = 16384


def _pix_fmt_of(text: str) -> str | None:
    """A pixel format named in a file name or option: `yuv420p10le`, `420p10`, `_444_`, `10bit`..."""
    low = text.lower()
    for name in sorted(PIX_FMTS, key=len, reverse=True):
        if name in low:
            return name
    bits10 = bool(re.search(r"(^|[_.\-])(10bit|10b|p10|10le)([_.\-]|$)", low))
    sub = next((k for k in ("444", "422", "420") if re.search(rf"(^|[_.\-]){k}(p|p10)?([_.\-]|$)", low)), "420")
    return f"yuv{sub}p" + ("10le" if bits10 else "")


def yuv_format(path: Path) -> tuple[int, int, str]:
    """(width, height, pixel format) of a raw .yuv file: from its name, else from $SPLITINFER_YUV."""
    env = os.environ.get("SPLITINFER_YUV", "").strip()
    for text, where in ((path.name, "its name"), (env, "$SPLITINFER_YUV")):
        m = re.search(r"(?:^|[^0-9])(\d{2,5})x(\d{2,5})(?:[^0-9]|$)", text)
        if m:
            w, h = int(m.group(1)), int(m.group(2))
            fmt = _pix_fmt_of(text.replace(m.group(0), "_"))
            if not (2 <= w <= MAX_RAW_SIDE and 2 <= h <= MAX_RAW_SIDE) or w % 2 or h % 2:
                raise UserError(f"{path}: frame size {w}x{h} from {where} is not even and within 2..{MAX_RAW_SIDE}")
            return w, h, fmt
    raise UserError(f"{path}: raw YUV needs its frame size: name it like Foo_1920x1080_60.yuv (pixel format "
                    f"yuv420p unless named, e.g. _10bit, _444) or set SPLITINFER_YUV=1920x1080[:yuv420p10le]")


def _frame_bytes(w: int, h: int, fmt: str) -> int:
    cw, ch, b = PIX_FMTS[fmt]
    chroma = 0 if ch == 0 else 2 * (w // cw) * (h // ch)
    return (w * h + chroma) * b


def _y4m_fields(path: Path) -> tuple[dict[str, str], bytes]:
    """({tag letter: value} of a .y4m file's header line, the line)."""
    with open(path, "rb") as fh:
        line = fh.readline(4096)
    if not line.startswith(b"YUV4MPEG2 ") or not line.endswith(b"\n"):
        raise UserError(f"{path}: not a YUV4MPEG2 (.y4m) file (no header line)")
    return {t[:1]: t[1:] for t in line.decode("ascii", "replace").split()[1:]}, line


def _y4m_header(path: Path) -> tuple[int, int, str, int]:
    """(width, height, pixel format, bytes before the first frame) of a .y4m file."""
    fields, line = _y4m_fields(path)
    try:
        w, h = int(fields["W"]), int(fields["H"])
    except (KeyError, ValueError):
        raise UserError(f"{path}: .y4m header without W/H: {line[:80]!r}") from None
    fmt = Y4M_COLORSPACES.get(fields.get("C", "420jpeg"))
    if fmt is None:
        raise UserError(f"{path}: .y4m colour space C{fields.get('C')} not supported "
                        f"(supported: {', '.join(sorted(Y4M_COLORSPACES))})")
    if not (2 <= w <= MAX_RAW_SIDE and 2 <= h <= MAX_RAW_SIDE):
        raise UserError(f"{path}: .y4m frame size {w}x{h} outside 2..{MAX_RAW_SIDE}")
    return w, h, fmt, len(line)


def raw_video_count(path: Path) -> int:
    """Frames in a .yuv (exact; a size that is no whole number of frames is a UserError) or .y4m file."""
    size = path.stat().st_size
    if path.suffix.lower() == ".y4m":
        w, h, fmt, start = _y4m_header(path)
        return (size - start) // (_frame_bytes(w, h, fmt) + len(b"FRAME\n"))
    w, h, fmt = yuv_format(path)
    frame = _frame_bytes(w, h, fmt)
    if size % frame:
        raise UserError(f"{path}: {size} bytes is not a whole number of {w}x{h} {fmt} frames ({frame} bytes "
                        f"each): wrong size or pixel format in the name?")
    return size // frame


def yuv_to_bgr(data: bytes, w: int, h: int, fmt: str) -> np.ndarray:
    """One planar frame as an HxWx3 uint8 BGR image (10-bit samples shifted to 8 bits; BT.601)."""
    import cv2

    cw, ch, b = PIX_FMTS[fmt]
    a = np.frombuffer(data, dtype="<u2" if b == 2 else np.uint8)
    if b == 2:
        a = (np.minimum(a, 1023) >> 2).astype(np.uint8)
    y = a[:w * h].reshape(h, w)
    if ch == 0:
        return cv2.cvtColor(y, cv2.COLOR_GRAY2BGR)
    n = (w // cw) * (h // ch)
    if (cw, ch) == (2, 2):
        return cv2.cvtColor(a[:w * h + 2 * n].reshape(h * 3 // 2, w), cv2.COLOR_YUV2BGR_I420)
    u, v = (a[w * h + i * n: w * h + (i + 1) * n].reshape(h // ch, w // cw) for i in (0, 1))
    if cw != 1:
        u, v = (cv2.resize(p, (w, h), interpolation=cv2.INTER_NEAREST) for p in (u, v))
    return cv2.cvtColor(np.dstack([y, u, v]), cv2.COLOR_YUV2BGR)


def _iter_raw_video(path: Path, max_frames: int | None) -> Iterator[tuple[str, np.ndarray]]:
    """Frames of a .yuv or .y4m file, read one frame at a time (never the whole file)."""
    y4m = path.suffix.lower() == ".y4m"
    if y4m:
        w, h, fmt, start = _y4m_header(path)
    else:
        (w, h, fmt), start = yuv_format(path), 0
        raw_video_count(path)  # a size that is no whole number of frames is refused before any frame
    frame = _frame_bytes(w, h, fmt)
    index = 0
    with open(path, "rb") as fh:
        fh.seek(start)
        while max_frames is None or index < max_frames:
            if y4m:
                marker = fh.readline(1024)
                if not marker:
                    break
                if not marker.startswith(b"FRAME"):
                    raise UserError(f"{path}: frame {index}: expected a FRAME marker, got {marker[:20]!r}")
            data = fh.read(frame)
            if len(data) < frame:
                if data or y4m:
                    raise UserError(f"{path}: frame {index} is truncated ({len(data)} of {frame} bytes)")
                break
            yield video_frame_name(path.stem, index), yuv_to_bgr(data, w, h, fmt)
            index += 1
    if index == 0:
        raise UserError(f"{path}: video has no frames")
