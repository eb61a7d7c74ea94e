"""Whole-model detection over a source: the library behind `splitinfer detect` (its CLI parses, calls, prints).

A *source* is an image file, a folder of images or a video (common/core/images.py `iter_frames`; video frames
are named `<video>_<index>`). For each frame the whole model (common/core/whole_model.py) detects, and
`<name>.txt` (`label x1 y1 x2 y2 score`, pixels of the original image) and, unless turned off,
`<name>.overlay.jpg` are written into the output folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DetectRun:
    """What one pass over a source did: frames, detections, seconds of inference, the last frame's detections,
    and (when collecting, for COCO results) every frame's detections by name."""

    frames: int = 0
    detections: int = 0
    infer_s: float = 0.0
    last: list = field(default_factory=list)
    collected: dict | None = None

    @property
    def mean_infer_ms(self) -> float:
        return 1e3 * self.infer_s / max(self.frames, 1)


def detect_source(model, source: Path, out: Path, *, threshold=None, max_frames=None, overlay: bool = True,
                  collect: bool = False) -> DetectRun:
    """Detect every frame of `source` with `model` (a WholeModel with its family); write into `out`."""
    import itertools

    from splitinfer.common.core.detections import write_predictions
    from splitinfer.common.core.images import frame_count, iter_frames, write_image
    from splitinfer.common.core.progress import bar as tqdm
    from splitinfer.common.eval.overlay import draw_detections

    total = frame_count(source)
    if total is not None and max_frames:
        total = min(total, max_frames)
    result = DetectRun(collected={} if collect else None)
    frames_iter = iter_frames(source, max_frames)
    first = next(frames_iter)  # unreadable sources fail here, before any progress bar is drawn
    bar = tqdm(itertools.chain([first], frames_iter), total=total, unit="frame", desc="detect", leave=False)
    try:
        for name, frame in bar:
            dets, seconds = model.detect(frame, threshold)
            result.infer_s += seconds
            write_predictions(out / f"{name}.txt", dets)
            if result.collected is not None:
                result.collected[name] = dets
            if overlay:
                write_image(out / f"{name}.overlay.jpg", draw_detections(frame, dets, title=model.family.name))
            result.frames += 1
            result.detections += len(dets)
            result.last = dets
    finally:
        bar.close()
    return result
