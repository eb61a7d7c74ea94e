"""Whole-model inference: the one implementation `detect`, the UE's anchor (`-no_split` and the agreement
columns) and the demo's reference all run.

The *whole model* (the field's *anchor*) is the unsplit ONNX model in one onnxruntime session; a *family*
(common/families) feeds it (`preprocess(image) -> feeds, meta`) and reads its outputs (`postprocess`).
Core takes the family as an argument, so this layer imports nothing above it.
"""

from __future__ import annotations

import time

from splitinfer.common.core.runtime import keep_feeds, make_session


class WholeModel:
    """The whole model on one device (`cpu`, `gpu`, `auto`); `family` is needed only by `detect`."""

    def __init__(self, model, device: str = "cpu", threads: int | None = None, family=None):
        self.session = make_session(model, device=device, threads=threads)
        self.provider = self.session.provider
        self.family = family

    def run(self, feeds: dict) -> dict:
        """Output name -> array for `feeds` (feeds the model does not take are left out)."""
        return dict(zip(self.session.output_names, self.session.run(keep_feeds(feeds, self.session.input_names))))

    def infer(self, feeds: dict, meta: dict, family=None, score_threshold=None) -> tuple[list, float]:
        """(detections, seconds of the session run alone) for already preprocessed feeds."""
        family = family or self.family
        t0 = time.perf_counter()
        outputs = self.run(feeds)
        seconds = time.perf_counter() - t0
        return family.postprocess(outputs, meta, score_threshold), seconds

    def detect(self, image, score_threshold=None) -> tuple[list, float]:
        """(detections, inference seconds) of one BGR image: preprocess, run, postprocess."""
        feeds, meta = self.family.preprocess(image)
        return self.infer(feeds, meta, score_threshold=score_threshold)
