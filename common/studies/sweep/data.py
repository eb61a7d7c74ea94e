"""The frames a sweep runs on and their fingerprint (what decides whether cached work is still valid).

Defined terms: an *item* is (frame name, content sha256, file, video frame index or None); the data
*fingerprint* hashes every item's name and content, so renaming or editing a photo invalidates rows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from splitinfer.common.core.errors import UserError
from splitinfer.common.core.files import file_sha256


def data_items(data, max_images: int | None = None) -> list[tuple[str, str, Path, int | None]]:
    """(frame name, content sha256, file, video frame index) for every frame `iter_frames` yields."""
    from splitinfer.common.core.images import _frame_names, frame_count, is_image, is_video, list_images

    data = Path(data)
    if not data.exists():
        raise UserError(f"data not found: {data}")
    if data.is_dir():
        paths = list_images(data)
        if not paths:
            raise UserError(f"{data}: folder holds no images")
        items = [(n, file_sha256(p), p, None) for n, p in zip(_frame_names(paths), paths)]
    elif is_video(data):
        sha = file_sha256(data)
        count = frame_count(data) or 0
        if max_images is not None:
            count = min(count, max_images) if count else max_images
        items = [(f"{data.stem}_{i:06d}", f"{sha}:{i}", data, i) for i in range(count)]
    elif is_image(data):
        items = [(data.stem, file_sha256(data), data, None)]
    else:
        raise UserError(f"{data}: not an image, a folder of images or a video")
    return items[:max_images] if max_images is not None else items


def fingerprint(items) -> str:
    h = hashlib.sha256()
    for name, sha, _, _ in items:
        h.update(f"{name}\0{sha}\n".encode())
    return h.hexdigest()


def read_frames(items):
    """Yield (name, sha, BGR image) in order, decoding each video once."""
    from splitinfer.common.core.images import iter_frames, read_image

    video_frames = {}
    for name, sha, path, index in items:
        if index is None:
            yield name, sha, read_image(path)
        else:
            if path not in video_frames:
                video_frames[path] = iter_frames(path)
            _, frame = next(video_frames[path])
            yield name, sha, frame
