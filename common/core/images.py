"""Frames from an image file, a folder of images or a video, with errors that name the file.

Every tool that takes "SOURCE" (detect, the device streamer, evaluation) reads it through
`iter_frames`, so they all accept the same inputs and fail the same way. OpenCV returns None instead of
raising on unreadable files; here that becomes a `UserError`. Paths are read as bytes and decoded with
`cv2.imdecode`, so non-ASCII file names work too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from splitinfer.common.assets import IMAGE_SUFFIXES
from splitinfer.common.core.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
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


def _frame_names(paths: list[Path]) -> list[str]:
    """File stems, made unique when two files differ only by suffix (a.jpg, a.png -> a_jpg, a_png)."""
    stems = [p.stem for p in paths]
    return [p.stem if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}" for p in paths]


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
    if source.is_file() and is_video(source):
        cap = open_video(source)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        return n if n > 0 else None
    return 1 if source.is_file() else None


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
        items = zip(_frame_names(paths), paths)
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
    cap = open_video(path)
    try:
        index = 0
        while max_frames is None or index < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            yield f"{path.stem}_{index:06d}", frame
            index += 1
        if index == 0:
            raise UserError(f"{path}: video has no decodable frames")
    finally:
        cap.release()
