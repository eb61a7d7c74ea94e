"""The frames a sweep runs on and their fingerprint (what decides whether cached work is still valid).

Defined terms: an *item* is (frame name, content sha256, file, video frame index or None); the data
*fingerprint* hashes every item's name and content, so renaming or editing a photo invalidates rows.
The frames are a *window* of the source: from `start` (0-based: a video's frame index, a folder's image
in name order) at most `count` of them, consecutive and in order, which is what a sequential codec's row
codes as one stream (see tasks.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from splitinfer.common.core.errors import UserError
from splitinfer.common.core.files import file_sha256


def data_items(data, max_images: int | None = None, start: int = 0) -> list[tuple[str, str, Path, int | None]]:
    """(frame name, content sha256, file, video frame index) for the frames `start` .. `start + max_images - 1`
    of what `iter_frames` yields (all from `start` when `max_images` is None)."""
    from splitinfer.common.core.images import (frame_count, frame_names, is_image, is_video, list_images,
                                                video_frame_name)

    data = Path(data)
    start = int(start)
    if start < 0:
        raise UserError(f"first frame must be 0 or more (got {start})")
    if not data.exists():
        raise UserError(f"data not found: {data}")
    if data.is_dir():
        paths = list_images(data)
        if not paths:
            raise UserError(f"{data}: folder holds no images")
        items = [(n, file_sha256(p), p, None) for n, p in zip(frame_names(paths), paths)][start:]
    elif is_video(data):
        sha = file_sha256(data)
        total = frame_count(data) or 0
        end = total if max_images is None else min(total, start + max_images) if total else start + max_images
        items = [(video_frame_name(data.stem, i), f"{sha}:{i}", data, i) for i in range(start, end)]
    elif is_image(data):
        items = [(data.stem, file_sha256(data), data, None)][start:]
    else:
        raise UserError(f"{data}: not an image, a folder of images or a video")
    items = items[:max_images] if max_images is not None else items
    if not items:
        raise UserError(f"{data}: no frames from frame {start} on")
    return items


def fingerprint(items) -> str:
    h = hashlib.sha256()
    for name, sha, _, _ in items:
        h.update(f"{name}\0{sha}\n".encode())
    return h.hexdigest()


def read_frames(items):
    """Yield (name, sha, BGR image) in order. A video is decoded once from its start, skipping the frames
    no item asks for (items may start anywhere and leave gaps: the frames whose activations are cached);
    a video shorter than its items claim is a UserError naming the missing frame."""
    from splitinfer.common.core.images import iter_frames, read_image

    videos = {}  # path -> [frame iterator, index of the next frame it yields]
    for name, sha, path, index in items:
        if index is None:
            yield name, sha, read_image(path)
            continue
        state = videos.get(path)
        if state is None or state[1] > index:
            state = videos[path] = [iter_frames(path), 0]
        frame = None
        while state[1] <= index:
            got = next(state[0], None)
            if got is None:
                raise UserError(f"{path}: video ends before frame {index} ({state[1]} frames decoded)")
            frame, state[1] = got[1], state[1] + 1
        yield name, sha, frame
