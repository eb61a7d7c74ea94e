"""A sweep's outputs: results.csv, results.json, plots (mAP per split, against size and ratio), report.md/.html.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from splitinfer.common.core.files import make_output_dir
from splitinfer.common.studies.sweep.config import SweepResult
from splitinfer.common.families.raw import NAME as RAW_FAMILY  # fidelity metrics, no detections


CSV_COLUMNS = ("rank", "node", "op_type", "branches", "codec", "codec_id", "images", "raw_bytes", "encoded_bytes",
               "ratio", "encode_ms", "decode_ms", "part2_ms", "max_abs_err", "map", "map50", "map75", "gt_images",
               "rel_map", "rel_map50", "rel_map75", "predictions", "elements", "bits_per_element", "encode_mbps",
               "decode_mbps", "nmse", "psnr_db", "cosine", "top1", "top5", "keyframes", "key_bytes",
               "predicted_bytes")


def write_csv(result: SweepResult, path) -> Path:
    import csv

    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in result.rows:
            vals = []
            for k in CSV_COLUMNS:
                v = getattr(r, k)
                if isinstance(v, float):
                    v = "" if math.isnan(v) else f"{v:.6g}"  # infinities as inf / -inf
                vals.append(v)
            w.writerow(vals)
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _pct(v) -> float:
    return math.nan if v is None or (isinstance(v, float) and math.isnan(v)) else 100.0 * v


PERCENT_METRICS = ("rel_map", "map", "top1", "top5")


def _metrics(result: SweepResult) -> list[tuple[str, str]]:
    """(row attribute, axis label) of the metrics to plot: for detectors relative mAP always and absolute
    mAP when measured; for a raw model (no detections) PSNR of the outputs and top-1 agreement when measured."""
    if result.family == RAW_FAMILY:
        out = [("psnr_db", "PSNR of the model outputs (dB)")]
        if any(not math.isnan(r.top1) for r in result.rows):
            out.append(("top1", "top-1 agreement with the whole model (%)"))
        return out
    out = [("rel_map", "relative mAP@[.5:.95] (%)")]
    if any(not math.isnan(r.map) for r in result.rows):
        out.append(("map", "mAP@[.5:.95] vs ground truth (%)"))
    return out


def _plotted(attr: str, values: list[float]) -> list[float]:
    """Values on the plot's scale: percent for mAP/agreement; infinite PSNR (lossless) drawn 10 % above the
    largest finite one (NaN when there is none)."""
    if attr in PERCENT_METRICS:
        return [_pct(v) for v in values]
    finite = [v for v in values if math.isfinite(v)]
    cap = 1.1 * max(finite) if finite else math.nan
    return [cap if v == math.inf else v for v in values]


def _limit(ax, attr: str) -> None:
    if attr in PERCENT_METRICS:
        ax.set_ylim(0, 105)


def _split_label(s: dict) -> str:
    return f"r{s['rank']} {s['op_type']} ({s['branches']} br.)"


def plot_map_by_split(result: SweepResult, path) -> Path:
    """Grouped bars: one group per split, one bar per codec."""
    plt = _plt()
    metrics = _metrics(result)
    ranks = [s["rank"] for s in result.splits]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(8, 1.3 * len(ranks) + 3), 3.6 * len(metrics)),
                             squeeze=False)
    cmap = plt.get_cmap("viridis")
    width = 0.8 / max(1, len(result.codecs))
    for ax, (attr, label) in zip(axes[:, 0], metrics):
        every = _plotted(attr, [getattr(x, attr) for x in result.rows])
        value = {(x.rank, x.codec): v for x, v in zip(result.rows, every)}
        for j, codec in enumerate(result.codecs):
            ys = [value.get((r, codec), math.nan) for r in ranks]
            xs = [i - 0.4 + width * (j + 0.5) for i in range(len(ranks))]
            ax.bar(xs, np.nan_to_num(ys), width=width, color=cmap(j / max(1, len(result.codecs) - 1)), label=codec)
        if attr == "map" and not math.isnan(result.anchor.get("map", math.nan)):
            ax.axhline(_pct(result.anchor["map"]), color="red", ls="--", lw=1, label="whole model")
        ax.set_xticks(range(len(ranks)), [_split_label(s) for s in result.splits], rotation=20, ha="right",
                      fontsize=8)
        ax.set_ylabel(label)
        _limit(ax, attr)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", title="codec")
    what = "PSNR" if result.family == RAW_FAMILY else "mAP"
    axes[0, 0].set_title(f"{Path(result.model).parent.name or result.model}: {what} per split and codec "
                         f"({len(result.images)} images)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _plot_curves(result: SweepResult, path, xattr: str, xlabel: str, title: str) -> Path:
    plt = _plt()
    metrics = _metrics(result)
    fig, axes = plt.subplots(1, len(metrics), figsize=(7.5 * len(metrics), 5), squeeze=False)
    cmap = plt.get_cmap("tab10")
    labels = {ax: [] for ax in axes[0]}
    for ax, (attr, label) in zip(axes[0], metrics):
        value = dict(zip([(x.rank, x.codec) for x in result.rows], _plotted(attr, [getattr(x, attr)
                                                                                    for x in result.rows])))
        for i, s in enumerate(result.splits):
            rows = sorted((r for r in result.rows if r.rank == s["rank"]), key=lambda r: getattr(r, xattr))
            xs = [getattr(r, xattr) for r in rows]
            ys = [value[(r.rank, r.codec)] for r in rows]
            ax.plot(xs, ys, "o-", color=cmap(i % 10), ms=4, label=_split_label(s))
            labels[ax] += [(x, y, _codec_short(r.codec), cmap(i % 10)) for r, x, y in zip(rows, xs, ys)]
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        _limit(ax, attr)
        ax.grid(alpha=0.3, which="both")
    axes[0, -1].legend(fontsize="small", title="split")
    fig.suptitle(title)
    fig.tight_layout()
    for ax, points in labels.items():  # after the layout: labels are placed in final screen positions
        _label_apart(ax, points)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _codec_short(codec: str) -> str:
    """Point label: the QP of an NNC codec (e.g. -26), f16, or the codec name."""
    return codec.split(":")[-1] if codec.startswith("nnc:") else codec.replace("float16", "f16")


def _label_apart(ax, points) -> int:
    """Annotate (x, y, text, colour) points in order, dropping a label whose box would overlap one already
    drawn: where a curve is dense (many QPs at one mAP, the lossless codecs at the top) a readable subset
    stays instead of a smear. Returns the number of labels drawn."""
    renderer = ax.figure.canvas.get_renderer()
    placed = []
    for x, y, text, colour in points:
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        ann = ax.annotate(text, (x, y), fontsize=6, xytext=(2, -8), textcoords="offset points", color=colour)
        box = ann.get_window_extent(renderer).expanded(1.15, 1.2)
        if any(box.overlaps(b) for b in placed):
            ann.remove()
            continue
        placed.append(box)
    return len(placed)


def plot_map_vs_size(result: SweepResult, path) -> Path:
    return _plot_curves(result, path, "encoded_bytes", "compressed bytes per image (log)",
                        "mAP against compressed size, one curve per split")


def plot_map_vs_ratio(result: SweepResult, path) -> Path:
    return _plot_curves(result, path, "ratio", "compression ratio raw/encoded (log)",
                        "mAP against compression ratio, one curve per split")


PLOTS = (("map_by_split.png", plot_map_by_split, "mAP per split and codec"),
         ("map_vs_size.png", plot_map_vs_size, "mAP against compressed size (one curve per split)"),
         ("map_vs_ratio.png", plot_map_vs_ratio, "mAP against compression ratio (one curve per split)"))

_TABLE = (("rank", "rank", "{}"), ("node", "node", "{}"), ("branches", "br.", "{}"), ("codec", "codec", "{}"),
          ("raw_bytes", "raw kB", "kB"), ("encoded_bytes", "sent kB", "kB"), ("ratio", "ratio", "{:.2f}"),
          ("encode_ms", "enc ms", "{:.1f}"), ("decode_ms", "dec ms", "{:.1f}"), ("part2_ms", "Part II ms", "{:.1f}"),
          ("map", "mAP", "pct"), ("map50", "AP50", "pct"), ("rel_map", "rel mAP", "pct"),
          ("rel_map50", "rel AP50", "pct"), ("bits_per_element", "bits/el", "{:.3f}"), ("nmse", "NMSE", "{:.2e}"),
          ("psnr_db", "PSNR dB", "{:.1f}"))


def _cell(row, attr, fmt) -> str:
    v = getattr(row, attr)
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    if fmt == "kB":
        return f"{v / 1e3:,.1f}"
    if fmt == "pct":
        return f"{100 * v:.1f}"
    return fmt.format(v)


def _table_rows(result: SweepResult) -> list[list[str]]:
    return [[_cell(r, a, f) for a, _, f in _TABLE] for r in result.rows]


def summary_lines(result: SweepResult) -> list[str]:
    s, a = result.stats, result.anchor
    gt = (f"{result.gt} ({a['gt_images']} image(s) with ground truth; whole model mAP {_fmt_pct(a['map'])}, "
          f"AP50 {_fmt_pct(a['map50'])})") if result.gt else "none (relative mAP only)"
    accuracy = [f"ground truth: {gt}",
                f"relative mAP: the whole model's own detections scored >= {result.anchor_threshold} are the "
                f"ground truth ({a['relative_gt_boxes']} boxes); predictions kept from score {result.score_threshold}"]
    if result.family == RAW_FAMILY:
        accuracy = ["no detections (family raw): rows report the fidelity of the model outputs against the whole "
                    "model's (NMSE, PSNR, cosine, top-1/top-5 agreement)"]
    return [
        f"model: {result.model} (family {result.family}, {result.num_nodes} nodes, "
        f"sha256 {result.model_sha256[:16]}...)",
        f"data: {result.data} ({len(result.images)} images, fingerprint {result.data_fingerprint[:16]}...)",
        *accuracy,
        f"splits: {', '.join(str(x['rank']) for x in result.splits)}; codecs: {', '.join(result.codecs)}",
        f"runner: {result.runner} on {s.get('cpus')} CPUs; rows: {s['rows_computed']} computed, "
        f"{s['rows_cached']} from cache; "
        f"activations: {s['activations_computed']} images computed, {s['activations_cached']} cached",
        f"time: total {s['total_s']:.1f} s (activations {s['activations_s']:.1f} s, tasks {s['tasks_s']:.1f} s, "
        f"mAP {s['evaluate_s']:.1f} s)",
    ]


def _fmt_pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def write_report(result: SweepResult, out_dir, plots: list[tuple[str, str]]) -> tuple[Path, Path]:
    """report.md and report.html: summary, the table, the plots."""
    import html

    out_dir = Path(out_dir)
    head = [h for _, h, _ in _TABLE]
    body = _table_rows(result)
    notes = ("Sizes are per image (mean over images) of every tensor Part I sends (crossing tensors plus "
             "model outputs Part I already made); ratio = raw / sent bytes. Times are ms per image on the "
             "sweep machine (one core per pool/Ray worker). mAP = COCO AP@[.5:.95] (pycocotools), AP50 at "
             "IoU 0.5; 'rel' = against the whole model's own detections.")
    md = ["# Split x codec sweep", ""] + [f"- {line}" for line in summary_lines(result)] + ["", notes, ""]
    md += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    md += [""]
    for fname, title in plots:
        md += [f"## {title}", "", f"![{title}]({fname})", ""]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(md))

    e = html.escape
    h = ["<!doctype html><html><head><meta charset='utf-8'><title>Split x codec sweep</title>",
         "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
         "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
         "td:nth-child(2),td:nth-child(4){text-align:left}img{max-width:100%}</style></head><body>",
         "<h1>Split x codec sweep</h1><ul>"]
    h += [f"<li>{e(line)}</li>" for line in summary_lines(result)]
    h += [f"</ul><p>{e(notes)}</p><table><tr>" + "".join(f"<th>{e(x)}</th>" for x in head) + "</tr>"]
    h += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in body]
    h += ["</table>"]
    for fname, title in plots:
        h += [f"<h2>{e(title)}</h2><img src='{e(fname)}' alt='{e(title)}'>"]
    h += ["</body></html>"]
    html_path = out_dir / "report.html"
    html_path.write_text("\n".join(h))
    return md_path, html_path


def write_outputs(result: SweepResult, out_dir, plots: bool = True) -> dict[str, Path]:
    """results.csv, results.json, the three plots and report.md/.html in `out_dir`."""
    out_dir = make_output_dir(out_dir)
    paths = {"csv": write_csv(result, out_dir / "results.csv")}
    paths["json"] = out_dir / "results.json"
    paths["json"].write_text(json.dumps(result.to_dict(), indent=1))
    made = []
    if plots and result.rows:
        for fname, fn, title in PLOTS:
            paths[fname] = fn(result, out_dir / fname)
            made.append((fname, title))
    paths["md"], paths["html"] = write_report(result, out_dir, made)
    return paths


def print_table(result: SweepResult, log=print) -> None:
    head = [h for _, h, _ in _TABLE]
    body = _table_rows(result)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)]
    widths[1] = min(widths[1], 28)
    log("  ".join(h.rjust(w) if i not in (1, 3) else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths))))
    for r in body:
        cells = [c[:widths[i]] for i, c in enumerate(r)]
        log("  ".join(c.rjust(w) if i not in (1, 3) else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))))
