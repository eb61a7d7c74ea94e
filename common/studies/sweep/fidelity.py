"""Fidelity of Part II's outputs against the whole model's: what a codec costs on any model, family or not.

Why: mAP needs a detector family and ground truth (or the anchor's boxes); these numbers need neither,
so a user can study codecs on their own ONNX model (a classifier, a segmenter, a detector's raw heads).
Each frame contributes sums, so a row aggregates exactly over all its frames and batches.

Defined terms (reference `a` = the whole model's output, test `b` = the output after Part I -> codec ->
Part II; every floating-point model output, flattened and concatenated per frame):
- NMSE (normalised mean squared error, as the TR's RetinaNet script compares split and unsplit
  inference): sum (a - b)^2 / sum a^2 over all frames;
- PSNR (dB): 10 log10(peak^2 / MSE), peak = the largest |a| over all frames, MSE = sum (a - b)^2 / count;
  infinite when the outputs are equal;
- cosine similarity: mean over frames of a.b / (|a| |b|);
- top-1 agreement: over every class vector (an output of shape [N, C], C >= 2, one vector per row), the
  fraction whose arg-max equals the reference's; top-5 agreement: the fraction whose reference arg-max is
  among the test's 5 highest scores (C >= 5). NaN when the model has no such output.
"""

from __future__ import annotations

import math

import numpy as np

FIELDS = ("sse", "ref", "count", "peak", "cos_sum", "frames", "top1", "top5", "vectors", "vectors5")


def frame_stats(reference: dict, test: dict) -> dict:
    """Sums for one frame over the floating-point outputs present in both (name -> array)."""
    names = [n for n in reference if n in test and np.asarray(reference[n]).dtype.kind == "f"]
    st = dict.fromkeys(FIELDS, 0.0)
    if not names:
        return st
    a = np.concatenate([np.asarray(reference[n], dtype=np.float64).ravel() for n in names])
    b = np.concatenate([np.asarray(test[n], dtype=np.float64).ravel() for n in names])
    finite = np.isfinite(a) & np.isfinite(b)
    a, b = a[finite], b[finite]
    st.update(sse=float(np.sum((a - b) ** 2)), ref=float(np.sum(a * a)), count=float(a.size),
              peak=float(np.max(np.abs(a))) if a.size else 0.0, frames=1.0)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    st["cos_sum"] = float(np.dot(a, b)) / (na * nb) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0)
    for n in names:
        _add_topk(st, np.asarray(reference[n]), np.asarray(test[n]))
    return st


def _add_topk(st: dict, ref: np.ndarray, test: np.ndarray) -> None:
    if ref.ndim != 2 or ref.shape[1] < 2 or ref.shape != test.shape:
        return
    want = np.argmax(ref, axis=1)
    st["top1"] += float(np.sum(np.argmax(test, axis=1) == want))
    st["vectors"] += float(ref.shape[0])
    if ref.shape[1] >= 5:
        top5 = np.argpartition(-test, 4, axis=1)[:, :5]
        st["top5"] += float(np.sum(np.any(top5 == want[:, None], axis=1)))
        st["vectors5"] += float(ref.shape[0])


def summarize(frames: list[dict]) -> dict:
    """{nmse, psnr_db, cosine, top1, top5} from frame sums (NaN where undefined)."""
    tot = {k: sum(f.get(k, 0.0) for f in frames) for k in FIELDS}
    peak = max((f.get("peak", 0.0) for f in frames), default=0.0)
    out = dict.fromkeys(("nmse", "psnr_db", "cosine", "top1", "top5"), math.nan)
    if tot["count"] > 0:
        mse = tot["sse"] / tot["count"]
        out["nmse"] = tot["sse"] / tot["ref"] if tot["ref"] > 0 else (0.0 if tot["sse"] == 0 else math.inf)
        out["psnr_db"] = math.inf if mse == 0 else (10 * math.log10(peak * peak / mse) if peak > 0 else -math.inf)
    if tot["frames"] > 0:
        out["cosine"] = tot["cos_sum"] / tot["frames"]
    if tot["vectors"] > 0:
        out["top1"] = tot["top1"] / tot["vectors"]
    if tot["vectors5"] > 0:
        out["top5"] = tot["top5"] / tot["vectors5"]
    return out
