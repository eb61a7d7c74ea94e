"""The size analysis written out: CSV, JSON, plots over the split ranks and a few summary lines.

Defined terms: *branches* (`BRANCHES_NOTE`), *rank 0* (the model input as the model takes it, `rank0_note`);
MB = 10^6 bytes; a plotted size is the measured one where measured, else the static total.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from splitinfer.common.studies.analysis import Analysis, RankRow

BRANCHES_NOTE = ("branches are the tensors that really cross a cut: constants (initializers, Constant nodes) and "
                 "shape tensors are not sent, as Part II holds or recomputes them, so a count can be lower than "
                 "the TR's split_onnx_multi.py, which lists every Part I tensor that Part II reads")


def rank0_note(analysis: Analysis) -> str:
    """What rank 0's bytes are: the input tensor as the model takes it, and the 8-bit image beside it."""
    sent = analysis.rows[0].sent_bytes if analysis.rows else None
    return (f"rank 0 = the model input as the model takes it ({_fmt_bytes(sent)}, {_rank0_dtype(analysis)}); as an "
            f"8-bit image (the TR's anchor row) {_fmt_bytes(analysis.input_8bit_bytes)}")


def _rank0_dtype(analysis: Analysis) -> str:
    dtypes = {analysis.tensors[n].dtype for n in analysis.rows[0].tensors if n in analysis.tensors} if analysis.rows \
        else set()
    return "/".join(sorted(d for d in dtypes if d)) or "dtype unknown"


def _mb(nbytes):
    return "" if nbytes is None else f"{nbytes / 1e6:.6f}"


def csv_columns(analysis: Analysis) -> list[str]:
    return (["rank", "node", "op_type", "branches", "static_bytes", "static_MB", "unknown_tensors",
             "measured_bytes", "measured_MB", "agree", "part1_outputs", "sent_bytes", "sent_MB"]
            + [f"t_{lab}_ms" for lab in analysis.bandwidths] + ["tensors", "note"])


def write_csv(analysis: Analysis, path) -> Path:
    """One row per rank; empty cells where unknown; agree is yes/no/unknown; MB = 10^6 bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(csv_columns(analysis))
        for r in analysis.rows:
            w.writerow([r.rank, r.node, r.op_type, r.branches,
                        "" if r.static_bytes is None else r.static_bytes, _mb(r.static_bytes),
                        " ".join(r.unknown),
                        "" if r.measured_bytes is None else r.measured_bytes, _mb(r.measured_bytes),
                        {True: "yes", False: "no", None: "unknown"}[r.agree], len(r.part1_outputs),
                        "" if r.sent_bytes is None else r.sent_bytes, _mb(r.sent_bytes)]
                       + ["" if r.transfer_s[lab] is None else f"{r.transfer_s[lab] * 1e3:.6f}"
                          for lab in analysis.bandwidths]
                       + [" ".join(r.tensors), rank0_note(analysis) if r.rank == 0 else
                          (BRANCHES_NOTE if r.rank == 1 else "")])
    return path


def write_json(analysis: Analysis, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(analysis.to_dict(), indent=1))
    return path


def _row_mb(r: RankRow) -> float:
    """MB at a rank for plotting: measured when available, else the static total (NaN if unknown)."""
    b = r.measured_bytes if r.measured_bytes is not None else r.static_bytes
    return float("nan") if b is None else b / 1e6


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_per_node(analysis: Analysis, path) -> Path:
    """Two panels over the split ranks: crossing size (MB) and number of crossing tensors (branches)."""
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ranks = [r.rank for r in analysis.rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True,
                                   gridspec_kw={"height_ratios": [2, 1]})
    measured = [float("nan") if r.measured_bytes is None else r.measured_bytes / 1e6 for r in analysis.rows]
    static = [float("nan") if r.static_bytes is None else r.static_bytes / 1e6 for r in analysis.rows]
    if any(not math.isnan(v) for v in measured):
        ax1.plot(ranks, measured, drawstyle="steps-post", lw=1.2, label="measured (inference)")
    ax1.plot(ranks, static, drawstyle="steps-post", lw=1.0, ls="--", label="static (shape inference)")
    unknown = [r.rank for r in analysis.rows if r.static_bytes is None]
    if unknown:
        ax1.plot(unknown, [0] * len(unknown), "|", color="tab:red", ms=6,
                 label=f"static size unknown ({len(unknown)} ranks)")
    anchor = analysis.rows[0]
    sent = [float("nan") if r.sent_bytes is None else r.sent_bytes / 1e6 for r in analysis.rows]
    if any(r.part1_outputs for r in analysis.rows[:-1]):
        ax1.plot(ranks, sent, drawstyle="steps-post", lw=0.8, ls="-.", color="tab:purple", zorder=1,
                 label="sent (crossing + outputs Part I already made)")
    ax1.axhline(_row_mb(anchor), color="gray", lw=0.8, ls=":", label="raw input (whole model)")
    ax1.set_ylabel("crossing size (MB)")
    ax1.legend(loc="upper right", fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.step(ranks, [r.branches for r in analysis.rows], where="post", color="tab:green", lw=1.0)
    ax2.set_ylabel("branches")
    ax2.yaxis.get_major_locator().set_params(integer=True)
    ax2.set_xlabel("split rank (node index; 0 = raw input)")
    ax2.grid(alpha=0.3)
    fig.suptitle(f"{Path(analysis.model).name if analysis.model else ''}: data crossing each split point "
                 f"(input {analysis.size_label})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bar_ranks(analysis: Analysis, max_bars: int = 24) -> list[int]:
    """Ranks shown as bars: rank 0 and evenly spaced cuts before live, non-constant nodes."""
    rows = analysis.rows[:-1] if len(analysis.rows) > 1 else analysis.rows
    candidates = [r.rank for r in rows if not r.redundant]
    if len(candidates) <= max_bars:
        return candidates
    picks = np.linspace(0, len(candidates) - 1, max_bars).round().astype(int)
    return sorted({candidates[i] for i in picks})


def plot_sizes_by_input(analyses: list[Analysis], lines_path, bars_path, max_bars: int = 24) -> tuple[Path, Path]:
    """Crossing size per node for several input sizes of one dynamic-input model: lines and bars."""
    plt = _plt()
    lines_path, bars_path = Path(lines_path), Path(bars_path)
    lines_path.parent.mkdir(parents=True, exist_ok=True)
    name = Path(analyses[0].model).name
    fig, ax = plt.subplots(figsize=(12, 5))
    for a in analyses:
        ax.plot([r.rank for r in a.rows], [_row_mb(r) for r in a.rows], drawstyle="steps-post", lw=1.0,
                label=a.size_label)
    ax.set_xlabel("split rank (node index; 0 = raw input)")
    ax.set_ylabel("crossing size (MB)")
    ax.set_title(f"{name}: crossing size per node for several input sizes")
    ax.legend(title="input HxW", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(lines_path, dpi=110)
    plt.close(fig)

    ranks = bar_ranks(analyses[0], max_bars)
    by_rank = [{r.rank: r for r in a.rows} for a in analyses]
    fig, ax = plt.subplots(figsize=(min(16, max(10, 0.5 * len(ranks))), 5.5))
    width = 0.8 / len(analyses)
    x = np.arange(len(ranks))
    for i, (a, rows) in enumerate(zip(analyses, by_rank)):
        ax.bar(x + (i - (len(analyses) - 1) / 2) * width, [_row_mb(rows[k]) for k in ranks], width,
               label=a.size_label)
    names = [by_rank[0][k].node if k else "raw input" for k in ranks]
    ax.set_xticks(x, [f"{k}: {'...' + n[-22:] if len(n) > 25 else n}" for k, n in zip(ranks, names)],
                  rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("crossing size (MB)")
    ax.set_title(f"{name}: crossing size at selected split points for several input sizes")
    ax.legend(title="input HxW", fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(bars_path, dpi=110)
    plt.close(fig)
    return lines_path, bars_path


def summary_lines(analysis: Analysis, top: int = 5) -> list[str]:
    """A few lines for the terminal: anchor, timings, agreement and the smallest interior cuts."""
    rows = analysis.rows
    anchor = rows[0]
    interior = [r for r in rows[1:-1] if r.branches > 0 and not r.redundant]
    n_unknown = sum(1 for r in rows if r.static_bytes is None)
    checked = [r for r in rows if r.agree is not None]
    disagree = [r for r in rows if r.agree is False]
    lines = [
        f"{analysis.model}: {analysis.num_nodes} nodes, {len(rows)} split ranks, input "
        f"{analysis.size_label} ({analysis.feeds_from or 'no inference'}), image {analysis.image or '-'}",
        f"  raw input (rank 0): {_fmt_bytes(anchor.sent_bytes)} {_rank0_dtype(analysis)} input tensor"
        + "".join(f", {lab}bit/s {_fmt_s(anchor.transfer_s[lab])}" for lab in analysis.bandwidths)
        + f"; as an 8-bit image (the TR's anchor row): {_fmt_bytes(analysis.input_8bit_bytes)}",
        f"  note: {BRANCHES_NOTE}",
        f"  static size unknown at {n_unknown} ranks; static == measured at {len(checked) - len(disagree)} of "
        f"{len(checked)} fully known ranks" + (f"; DISAGREE at {len(disagree)}" if disagree else ""),
        "  time: " + ", ".join(f"{k} {v:.2f} s" for k, v in analysis.seconds.items())
        + f" ({analysis.measure_runs} inference run{'s' if analysis.measure_runs != 1 else ''})",
    ]
    key = sorted((r for r in interior if r.sent_bytes is not None), key=lambda r: (r.sent_bytes, r.rank))
    if key:
        first = next(iter(analysis.bandwidths))
        lines.append("  smallest interior cuts (bytes sent = crossing tensors + outputs Part I already made):")
        for r in key[:top]:
            lines.append(f"    rank {r.rank:>5} {r.node[:40]:<40} {r.op_type:<12} branches {r.branches:>2} "
                         f"sent {_fmt_bytes(r.sent_bytes)} ({first}bit/s {_fmt_s(r.transfer_s[first])})")
    return lines


def _fmt_bytes(b):
    return "unknown" if b is None else f"{b / 1e6:.3f} MB"


def _fmt_s(s):
    return "-" if s is None else f"{s * 1e3:.3f} ms"
