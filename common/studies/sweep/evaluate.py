"""From stored rows to `SweepRow`s: per-image means of bytes and times, relative and absolute mAP.

mAP is recomputed from stored detections on every run (never cached), so a new ground truth or
anchor threshold changes the numbers without recomputing any row.
"""

from __future__ import annotations

import math

from splitinfer.common.studies.sweep.config import SweepRow
from splitinfer.common.studies.sweep.fidelity import summarize


def _dets(records: dict) -> dict:
    from splitinfer.common.core.detections import Detection

    return {name: [Detection(d[0], *d[1:]) for d in rec["dets"]] for name, rec in records.items()}


def _abs_map(preds, gt):
    """AP against ground truth on the images that have some (NaN when none has)."""
    from splitinfer.common.eval.evaluation import evaluate_against

    keys = gt.keys
    sub = {k: v for k, v in preds.items() if k in keys}
    if not sub:
        return None
    return evaluate_against(sub, gt, subset=True)


def anchor_metrics(anchor_preds, gt, anchor_threshold) -> dict:
    """The anchor's own numbers: predictions, boxes that are relative ground truth (counted by the one rule,
    `relative_ground_truth`), and its absolute mAP when `gt` is given."""
    from splitinfer.common.eval.evaluation import relative_ground_truth

    truth = relative_ground_truth(anchor_preds, anchor_threshold)
    d = {"predictions": sum(len(v) for v in anchor_preds.values()),
         "relative_gt_boxes": sum(len(v) for v in truth.values()),
         "map": math.nan, "map50": math.nan, "map75": math.nan, "gt_images": 0}
    if gt is not None:
        res = _abs_map(anchor_preds, gt)
        if res is not None:
            d.update(map=res.ap, map50=res.ap50, map75=res.ap75, gt_images=res.num_images)
    return d


def evaluate_rows(ranks, codecs, graph, plans, stored, computed, anchor_preds, gt, anchor_threshold, progress,
                  detections: bool = True):
    """One `SweepRow` per stored (rank, codec): means per image, fidelity, and (for detectors, `detections`)
    relative mAP against the anchor and absolute mAP against `gt`."""
    from splitinfer.common.eval.evaluation import evaluate_relative

    pairs = [(r, c) for r in ranks for c in codecs if (r, c.spec) in stored]
    it = pairs
    if progress and len(pairs) > 4:
        from splitinfer.common.core.progress import bar

        it = bar(pairs, desc="mAP", unit="row", leave=False)
    rows = []
    for r, c in it:
        recs = stored[(r, c.spec)]["images"]
        preds = _dets(recs)
        n = len(recs)
        raw = sum(x["raw"] for x in recs.values())
        enc = sum(x["enc"] for x in recs.values())
        row = SweepRow(
            rank=r, node=graph.node_names[r] if r < graph.num_nodes else "(end)",
            op_type=graph.nodes[r].op_type if r < graph.num_nodes else "end",
            branches=len(plans[r].crossing), codec=c.spec, codec_id=c.codec_id, images=n,
            raw_bytes=raw / n, encoded_bytes=enc / n, ratio=raw / enc if enc else math.nan,
            encode_ms=1e3 * sum(x["encode_s"] for x in recs.values()) / n,
            decode_ms=1e3 * sum(x["decode_s"] for x in recs.values()) / n,
            part2_ms=1e3 * sum(x["part2_s"] for x in recs.values()) / n,
            max_abs_err=max(x["max_abs_err"] for x in recs.values()),
            predictions=sum(len(v) for v in preds.values()), cached=(r, c.spec) not in computed)
        add_rate_and_fidelity(row, recs)
        if not detections:
            rows.append(row)
            continue
        rel = evaluate_relative(preds, anchor_preds, anchor_threshold)
        row.rel_map, row.rel_map50, row.rel_map75 = rel.ap, rel.ap50, rel.ap75
        if gt is not None:
            res = _abs_map(preds, gt)
            if res is not None:
                row.map, row.map50, row.map75, row.gt_images = res.ap, res.ap50, res.ap75, res.num_images
        rows.append(row)
    return rows


def add_rate_and_fidelity(row: SweepRow, recs: dict) -> None:
    """Elements and bits per element, codec throughput (MB/s of raw data), keyframes and the mean bytes of a
    keyframe and of a predicted frame, and output fidelity."""
    vals = list(recs.values())
    elems = sum(x["elems"] for x in vals)
    raw = sum(x["raw"] for x in vals)
    enc_s, dec_s = sum(x["encode_s"] for x in vals), sum(x["decode_s"] for x in vals)
    row.elements = elems / len(vals)
    row.bits_per_element = 8.0 * sum(x["enc"] for x in vals) / elems if elems else math.nan
    row.encode_mbps = raw / 1e6 / enc_s if enc_s > 0 else math.nan
    row.decode_mbps = raw / 1e6 / dec_s if dec_s > 0 else math.nan
    key = [x["enc"] for x in vals if x.get("key", True)]  # a per-frame codec's record has no "key": all are
    pred = [x["enc"] for x in vals if not x.get("key", True)]
    names = sorted(recs)
    row.frame_bytes = [recs[n]["enc"] for n in names]
    row.key_indices = [i for i, n in enumerate(names) if recs[n].get("key") is True]
    row.keyframes = len(key)
    row.key_bytes = sum(key) / len(key) if key else math.nan
    row.predicted_bytes = sum(pred) / len(pred) if pred else math.nan
    fid = summarize([x["fid"] for x in vals])
    row.nmse, row.psnr_db, row.cosine, row.top1, row.top5 = (fid[k] for k in ("nmse", "psnr_db", "cosine", "top1",
                                                                                "top5"))
