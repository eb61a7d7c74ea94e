"""kB of every frame of a study's stream: where temporal prediction pays and where it does not.

Why: a temporal codec's mean rate hides its shape: a keyframe costs several predicted frames, a scene
cut or fast camera motion makes a predicted frame cost nearly a keyframe. This plot draws, per split, the
encoded kB of each frame (in frame order) for each family at its *chosen point*: the point of highest
compression ratio that keeps >= 99 % relative mAP (ratestudy.best_ratios), else the family's point of
highest quality, so families are compared at about the same accuracy. Per-frame codecs draw flat lines
(every frame a keyframe); a sequential codec's keyframes are marked (SweepRow.key_indices).
"""

from __future__ import annotations

import math
from pathlib import Path


def chosen_rows(result) -> list[tuple[int, str, object]]:
    """(split, family, row) of each family's chosen point at each split."""
    from splitinfer.common.studies.ratestudy import best_ratios, curve

    out = []
    best = {(rank, fam): r for rank, fam, r in best_ratios(result)}
    for s in result.sweep.splits:
        for fam in result.families():
            row = best.get((s["rank"], fam))
            if row is None:
                rows = [r for r in curve(result.sweep.rows, s["rank"], fam) if r.frame_bytes]
                q = result.quality
                rows = [r for r in rows if math.isfinite(getattr(r, q))]
                row = max(rows, key=lambda r: getattr(r, q)) if rows else None
            if row is not None and row.frame_bytes:
                out.append((s["rank"], fam, row))
    return out


def has_streams(result) -> bool:
    """Whether some row coded predicted frames (else the plot would only repeat the mean rate)."""
    return any(math.isfinite(r.predicted_bytes) for r in result.sweep.rows)


def plot_frame_kb(result, path) -> Path:
    """One panel per split: kB per frame against frame index, one line per family at its chosen point."""
    from splitinfer.common.studies.ratestudy import _plt

    plt = _plt()
    picked = chosen_rows(result)
    splits = [s["rank"] for s in result.sweep.splits]
    fig, axes = plt.subplots(len(splits), 1, figsize=(11, 3.2 * len(splits)), squeeze=False, sharex=True)
    cmap = plt.get_cmap("tab10")
    fams = result.families()
    for ax, rank in zip(axes[:, 0], splits):
        for fam_rank, fam, row in picked:
            if fam_rank != rank:
                continue
            kb = [b / 1e3 for b in row.frame_bytes]
            color = cmap(fams.index(fam) % 10)
            ax.plot(range(len(kb)), kb, "-", color=color, lw=1.2,
                    label=f"{row.codec} ({100 * row.rel_map:.1f} % rel. mAP, {row.ratio:.1f}x)"
                    if math.isfinite(row.rel_map) else row.codec)
            if row.key_indices:
                ax.plot(row.key_indices, [kb[i] for i in row.key_indices], "v", color=color, ms=6)
        ax.set_yscale("log")
        ax.set_ylabel(f"split {rank}: kB per frame (log)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small", loc="upper right")
    axes[-1, 0].set_xlabel("frame (in stream order); v = a temporal codec's keyframes")
    fig.suptitle("kB of each frame, each family at its highest ratio keeping >= 99 % relative mAP")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
