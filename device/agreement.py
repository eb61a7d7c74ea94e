"""Whether the split's detections agree with a reference: the ONE place that decides it.

The reference is the anchor (the whole model run locally) or, with `-ref_split LABEL`, the same split run
locally without codec or network. The demo's table, the results CSV (`Equal_to_anchor`,
`Anchor_agreement`, `Equal_to_ref_split`) and `-ref_split` all use `verdict()`. Terms:
- equal: the same detections bit for bit.
- rounding: same labels in the same order, boxes within ROUNDING_BOX_PX pixels and scores within
  ROUNDING_SCORE. onnxruntime optimises the whole model and the two parts separately (ORT_ENABLE_ALL's
  NCHWc layout changes convolution arithmetic near the cut), so a lossless split can differ from the
  whole model in the last bits of a float32 (measured on NanoDet: up to 1.5e-6 in raw outputs, 6e-8 in
  scores).
- matched: reference detections paired one-to-one, greedily best-first, with a split detection of the
  same label at IoU >= 0.5; close: every detection on both sides matched (the same objects found).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splitinfer.common.core.detections import Detection

ROUNDING_BOX_PX = 1e-3
ROUNDING_SCORE = 1e-5
MATCH_IOU = 0.5

# The verdict words, strongest first.
WORDS = ("yes", "rounding", "close", "no")


@dataclass
class Agreement:
    """How one frame's split detections compare with the reference's."""

    equal: bool  # bit for bit
    rounding: bool  # same labels in the same order, boxes and scores within float rounding
    matched: int
    anchor_count: int
    split_count: int
    max_score_diff: float
    min_iou: float

    @property
    def close(self) -> bool:
        """Same objects found: every detection matched one-to-one (same label, IoU >= 0.5)."""
        return self.matched == self.anchor_count == self.split_count


def _within_rounding(anchor: list[Detection], split: list[Detection]) -> bool:
    if len(anchor) != len(split):
        return False
    for a, s in zip(anchor, split):
        if a.label != s.label or abs(a.score - s.score) > ROUNDING_SCORE:
            return False
        if max(abs(x - y) for x, y in zip(a.box, s.box)) > ROUNDING_BOX_PX:
            return False
    return True


def compare_detections(anchor: list[Detection], split: list[Detection], iou_threshold: float = MATCH_IOU) -> Agreement:
    """One frame: the split's detections against the reference's (`anchor`)."""
    from splitinfer.common.core.detections import box_iou

    equal = anchor == split
    rounding = equal or _within_rounding(anchor, split)
    if not anchor or not split:
        return Agreement(equal, rounding, 0, len(anchor), len(split), 0.0, 1.0 if equal else 0.0)
    ious = box_iou(np.array([d.box for d in anchor]), np.array([d.box for d in split]))
    used, matched, score_diff, min_iou = set(), 0, 0.0, 1.0
    for i, a in enumerate(anchor):  # greedy: reference detections are best-first
        best, best_iou = None, iou_threshold
        for j, s in enumerate(split):
            if j not in used and s.label == a.label and ious[i, j] >= best_iou:
                best, best_iou = j, ious[i, j]
        if best is not None:
            used.add(best)
            matched += 1
            score_diff = max(score_diff, abs(a.score - split[best].score))
            min_iou = min(min_iou, float(best_iou))
    return Agreement(equal, rounding, matched, len(anchor), len(split), score_diff, min_iou if matched else 0.0)


@dataclass
class Verdict:
    """Many frames summed up: the weakest frame's word, and boxes matched out of boxes seen."""

    word: str  # one of WORDS
    matched: int
    total: int  # per frame the larger of the two detection counts, summed

    @property
    def boxes(self) -> str:
        return f"{self.matched}/{self.total}"

    def describe(self) -> str:
        """For people: 'yes', 'yes, to float rounding', 'close (m/t boxes match)', 'no (m/t boxes match)'."""
        if self.word == "yes":
            return "yes"
        if self.word == "rounding":
            return "yes, to float rounding"
        return f"{self.word} ({self.boxes} boxes match)"


def verdict(agreements) -> Verdict:
    """The verdict of many frames' agreements (an empty list counts as equal)."""
    agreements = list(agreements)
    word = ("yes" if all(a.equal for a in agreements) else
            "rounding" if all(a.rounding for a in agreements) else
            "close" if all(a.close for a in agreements) else "no")
    return Verdict(word, sum(a.matched for a in agreements),
                   sum(max(a.anchor_count, a.split_count) for a in agreements))
