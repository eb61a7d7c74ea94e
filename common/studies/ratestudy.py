"""Rate-accuracy study: what each codec family buys in accuracy per bit, at each split, with BD-rates.

Why: a sweep answers "what does this (split, codec) cost and keep"; choosing a codec needs whole curves
(a QP ladder for NNC, a bit-depth ladder for a quantiser) compared at equal quality. This module runs
the sweep's machinery (one whole-model run per frame, cached activations, resumable, process pool or
Ray) over ladders of codec specs and reduces the rows to rate-quality curves and Bjontegaard deltas.

Defined terms:
- *ladder*: codec specs of one family; `NAME:A..B` expands to every parameter from A to B in steps of 1
  (`fq:2..8` = fq:2 ... fq:8), `/S` sets the step (`nnc:-38..-8/10` = nnc:-38, -28, -18, -8;
  `fq:3..4/0.5` = fq:3, fq:3.5, fq:4);
- *family*: the codec name and its mode options, the numbers a ladder varies left out (`nnc:-38` -> `nnc`,
  `fq:-26:x` -> `fq:x`, `video:30:intra` -> `video:intra`, `dzstd:3:0` -> `dzstd`): one curve per family;
- *rate*: bits per element = 8 x encoded bytes / elements Part I sends (per frame, mean); also kB per frame
  and, for a video, kbit/s at its frame rate (what the uplink must carry);
- *quality*: relative mAP@[.5:.95] for detectors (the whole model's own detections as truth), mAP against
  ground truth where given, or a fidelity metric of Part II's outputs (PSNR by default for a model without
  a family; see `sweep/fidelity.py`);
- *BD-rate* of a family against the anchor family (NNC): the mean difference in rate at equal quality over
  the quality range both curves cover, in percent (negative: fewer bits for the same quality), computed by
  the `bjontegaard` package (Akima interpolation of log10 rate over quality). Each curve is first reduced to
  its upper envelope (points sorted by rate, each kept only when its quality beats every cheaper point), since
  rate must be a function of quality; a curve with fewer than 2 such points, or curves whose quality ranges
  do not overlap, give no BD-rate (the reason is reported).
"""

from __future__ import annotations

import csv
import math
import re
import time
import warnings
from decimal import Decimal
from dataclasses import dataclass, field
from pathlib import Path

from splitinfer.common.core.errors import UserError
from splitinfer.common.families.raw import NAME as RAW_FAMILY  # fidelity metrics, no detections
from splitinfer.common.core.files import make_output_dir
from splitinfer.common.core.images import frame_rate
from splitinfer.common.studies.sweep import SweepConfig, SweepResult, SweepRow, run_sweep, write_outputs

NNC_LADDER = ("nnc:-38..-10/4",)  # QP stepped by 4: a fair anchor for ladders stepped as finely
FQ_LADDER = ("fq:-26..-2/4:x",)  # the step mode; beats fq:2..8 on BD-rate (docs/study/)
# the temporal (sequential) families, each in the default once its codec is registered
# (x265 QP by 4 is 1.6x in quantiser step where NNC's and fq's QP by 4 is 2x: finer, not coarser)
TEMPORAL_LADDERS = {"fqi": ("fqi:-30..-2/4:xh",), "video": ("video:0..24/4",)}  # fqi: 8 points, as NNC
ANCHOR_FAMILY = "nnc"
QUALITIES = {  # row attribute -> (label, higher is better)
    "rel_map": "relative mAP@[.5:.95] (%)",
    "map": "mAP@[.5:.95] vs ground truth (%)",
    "psnr_db": "PSNR of the model outputs (dB)",
    "cosine": "cosine similarity of the model outputs",
    "top1": "top-1 agreement with the whole model (%)",
    "top5": "top-5 agreement with the whole model (%)",
}
PERCENT = ("rel_map", "map", "top1", "top5")
_NUM = r"-?\d+(?:\.\d+)?"
_RANGE = re.compile(rf"^({_NUM})\.\.({_NUM})(?:/(\d+(?:\.\d+)?))?$")


def default_ladders() -> list[str]:
    """NNC's QP ladder (nnc:-38 ... nnc:-10 by 4), the fast quantiser's step ladder (fq:-26 ... fq:-2 with
    contexts) once `fq` is registered (else the lossless and float16 codecs as single reference points), and
    the ladder of every registered temporal family (`TEMPORAL_LADDERS`)."""
    from splitinfer.common.codecs import codec_names

    names = codec_names()
    other = list(FQ_LADDER) if "fq" in names else ["float16", "zstd"]
    temporal = [spec for fam, ladder in TEMPORAL_LADDERS.items() if fam in names for spec in ladder]
    return list(NNC_LADDER) + other + temporal


def expand_ladders(specs) -> list[str]:
    """Codec specs with `NAME:A..B[/STEP]` ranges expanded (order kept, duplicates dropped)."""
    out = []
    for spec in specs:
        name, _, rest = str(spec).partition(":")
        first, sep, options = rest.partition(":")
        m = _RANGE.match(first)
        if not m:
            out.append(str(spec))
            continue
        a, b, step = Decimal(m.group(1)), Decimal(m.group(2)), Decimal(m.group(3) or 1)
        if step <= 0:
            raise UserError(f"codec ladder {spec!r}: step must be positive")
        if abs(b - a) / step > 64:
            raise UserError(f"codec ladder {spec!r}: more than 65 codecs; use a larger /STEP")
        step = step if b >= a else -step
        for k in range(int(abs(b - a) / abs(step)) + 1):
            v = format((a + k * step).normalize(), "f")
            out.append(f"{name}:{v}" + (f":{options}" if sep else ""))
    return list(dict.fromkeys(out))


def codec_family(spec: str) -> str:
    """The family of a codec spec: its name and the options that are not plain numbers (modes such as `x`,
    `intra`, `av1`, `b12`, `g50`), so intra-only and inter coding, or two encoders, are two curves."""
    name, *opts = str(spec).split(":")
    return ":".join([name] + [o for o in opts if not re.fullmatch(_NUM, o)])


# ----------------------------------------------------------------------------------------------
# the study


@dataclass
class StudyConfig:
    """A study: the sweep's inputs plus the codec ladders, the anchor family and the quality metric."""

    model: str
    data: str
    splits: list | None = None
    codecs: list[str] = field(default_factory=default_ladders)
    family: str | None = None
    gt: str | None = None
    out_dir: str = "study_out"
    cache_dir: str | None = None
    workers: int | None = None
    ray_address: str | None = None
    batch_size: int = 16
    max_images: int | None = None  # at most this many frames, consecutive from `start` (0-based)
    start: int = 0
    anchor_family: str = ANCHOR_FAMILY
    quality: str | None = None  # None: rel_map for detectors, psnr_db otherwise
    resume: bool = True


@dataclass
class BdRate:
    """BD-rate of `family` against `anchor` at one split (percent; NaN with `note` when undefined)."""

    rank: int
    family: str
    anchor: str
    quality: str
    bd_rate: float
    points: int
    anchor_points: int
    overlap: float
    note: str = ""


@dataclass
class StudyResult:
    sweep: SweepResult
    quality: str
    anchor_family: str
    bd: list[BdRate]
    seconds: float
    command: str = ""  # the command line that made it, for the report
    fps: float | None = None  # the video's frame rate (kbit/s columns), None for images

    def families(self) -> list[str]:
        return list(dict.fromkeys(codec_family(c) for c in self.sweep.codecs))


def run_study(cfg: StudyConfig, progress: bool = True) -> StudyResult:
    """Run (or resume) the sweep over the ladders, then the BD-rates of every family against the anchor."""
    t0 = time.perf_counter()
    if cfg.quality is not None and cfg.quality not in QUALITIES:
        raise UserError(f"unknown quality metric {cfg.quality!r} (known: {', '.join(QUALITIES)})")
    codecs = expand_ladders(cfg.codecs)
    sweep = run_sweep(SweepConfig(model=cfg.model, data=cfg.data, splits=cfg.splits, codecs=codecs, family=cfg.family,
                                  gt=cfg.gt, out_dir=cfg.out_dir, cache_dir=cfg.cache_dir, workers=cfg.workers,
                                  ray_address=cfg.ray_address, batch_size=cfg.batch_size, max_images=cfg.max_images,
                                  start=cfg.start, resume=cfg.resume), progress=progress)
    quality = choose_quality(sweep, cfg.quality)
    bd = [b for q in dict.fromkeys([quality, "psnr_db"]) for b in bd_rates(sweep, q, cfg.anchor_family)]
    return StudyResult(sweep=sweep, quality=quality, anchor_family=cfg.anchor_family, bd=bd,
                       seconds=time.perf_counter() - t0, fps=frame_rate(cfg.data))


def choose_quality(sweep: SweepResult, quality: str | None) -> str:
    if quality is None:
        return "psnr_db" if sweep.family == RAW_FAMILY else "rel_map"
    if all(math.isnan(getattr(r, quality)) for r in sweep.rows):
        raise UserError(f"quality {quality!r} is not measured for this model/data "
                        f"({'no ground truth given' if quality == 'map' else 'no such output'})")
    return quality


# ----------------------------------------------------------------------------------------------
# curves and BD-rate


def curve(rows: list[SweepRow], rank: int, family: str) -> list[SweepRow]:
    """One family's rows at one split, by rate (bits per element)."""
    return sorted((r for r in rows if r.rank == rank and codec_family(r.codec) == family),
                  key=lambda r: r.bits_per_element)


def envelope(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(rate, quality) points on the upper envelope: by rate, each kept only if its quality beats every
    cheaper point's (finite, positive rates only)."""
    best = -math.inf
    out = []
    for rate, q in sorted(p for p in points if math.isfinite(p[0]) and p[0] > 0 and math.isfinite(p[1])):
        if q > best:
            out.append((rate, q))
            best = q
    return out


def bd_rate(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> tuple[float, float, str]:
    """(BD-rate %, quality overlap in [0,1], note) of `test` against `anchor`, both (rate, quality) points."""
    import bjontegaard

    a, t = envelope(anchor), envelope(test)
    if len(a) < 2 or len(t) < 2:
        return math.nan, 0.0, f"needs >= 2 points of rising quality (anchor {len(a)}, test {len(t)})"
    lo, hi = max(a[0][1], t[0][1]), min(a[-1][1], t[-1][1])
    span = max(a[-1][1], t[-1][1]) - min(a[0][1], t[0][1])
    overlap = max(hi - lo, 0.0) / span if span > 0 else 0.0
    if overlap <= 0:
        return math.nan, 0.0, "quality ranges do not overlap"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = bjontegaard.bd_rate([r for r, _ in a], [q for _, q in a], [r for r, _ in t], [q for _, q in t],
                                    method="akima", require_matching_points=False, min_overlap=0)
    return float(value), overlap, ""


def bd_rates(sweep: SweepResult, quality: str, anchor_family: str = ANCHOR_FAMILY) -> list[BdRate]:
    """BD-rate of every other family against `anchor_family`, at every split."""
    families = list(dict.fromkeys(codec_family(c) for c in sweep.codecs))
    out = []
    for s in sweep.splits:
        a = [(r.bits_per_element, getattr(r, quality)) for r in curve(sweep.rows, s["rank"], anchor_family)]
        for fam in families:
            if fam == anchor_family:
                continue
            t = [(r.bits_per_element, getattr(r, quality)) for r in curve(sweep.rows, s["rank"], fam)]
            if not a:
                value, overlap, note = math.nan, 0.0, f"no {anchor_family} codec in the study"
            else:
                value, overlap, note = bd_rate(a, t)
            out.append(BdRate(rank=s["rank"], family=fam, anchor=anchor_family, quality=quality, bd_rate=value,
                              points=len(envelope(t)), anchor_points=len(envelope(a)), overlap=overlap, note=note))
    return out


# ----------------------------------------------------------------------------------------------
# outputs: CSV, plots, report


STUDY_COLUMNS = ("rank", "node", "branches", "family", "codec", "images", "elements", "bits_per_element",
                 "kb_per_frame", "kbps", "ratio", "rel_map", "map", "nmse", "psnr_db", "cosine", "top1", "top5", "encode_mbps",
                 "decode_mbps", "encode_ms", "decode_ms", "keyframes", "key_kb", "predicted_kb")


def _value(row: SweepRow, col: str, fps: float | None = None):
    if col == "family":
        return codec_family(row.codec)
    if col == "kb_per_frame":
        return row.encoded_bytes / 1e3
    if col == "kbps":  # kbit/s at the video's frame rate (NaN: images, no rate)
        return row.encoded_bytes * 8 * fps / 1e3 if fps else math.nan
    if col in ("key_kb", "predicted_kb"):  # mean kB of a keyframe / of a predicted frame (NaN: none)
        return (row.key_bytes if col == "key_kb" else row.predicted_bytes) / 1e3
    return getattr(row, col)


def write_study_csv(result: StudyResult, path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(STUDY_COLUMNS)
        for r in result.sweep.rows:
            w.writerow(["" if isinstance(v, float) and math.isnan(v) else (f"{v:.6g}" if isinstance(v, float) else v)
                        for v in (_value(r, c, result.fps) for c in STUDY_COLUMNS)])
    return Path(path)


def write_bd_csv(result: StudyResult, path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "family", "anchor", "quality", "bd_rate_percent", "points", "anchor_points",
                    "overlap", "note"])
        for b in result.bd:
            w.writerow([b.rank, b.family, b.anchor, b.quality, "" if math.isnan(b.bd_rate) else f"{b.bd_rate:.3f}",
                        b.points, b.anchor_points, f"{b.overlap:.3f}", b.note])
    return Path(path)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(result: StudyResult) -> list[str]:
    """The quality metrics worth a panel: the study's quality, mAP vs ground truth where measured."""
    out = [result.quality]
    for extra in ("map", "rel_map", "psnr_db"):
        if extra not in out and any(math.isfinite(getattr(r, extra)) for r in result.sweep.rows):
            out.append(extra)
    return out


def _scale(attr: str, v: float) -> float:
    return 100.0 * v if attr in PERCENT else v


def plot_rate_quality(result: StudyResult, path, x: str) -> Path:
    """Quality against rate (x = 'bits_per_element' or 'kb_per_frame', log axis): one curve per codec
    family per split (colour = split, marker and line style = family)."""
    plt = _plt()
    metrics = plot_metrics(result)
    fig, axes = plt.subplots(1, len(metrics), figsize=(7.5 * len(metrics), 5.2), squeeze=False)
    cmap = plt.get_cmap("tab10")
    styles = ["o-", "s--", "^-.", "D:", "v-", "P--"]
    fams = result.families()
    for ax, attr in zip(axes[0], metrics):
        for i, s in enumerate(result.sweep.splits):
            for j, fam in enumerate(fams):
                rows = curve(result.sweep.rows, s["rank"], fam)
                pts = [(_value(r, x), _scale(attr, getattr(r, attr))) for r in rows]
                pts = [(a, b) for a, b in pts if math.isfinite(a) and a > 0 and math.isfinite(b)]
                if not pts:
                    continue
                ax.plot(*zip(*pts), styles[j % len(styles)], color=cmap(i % 10), ms=5,
                        label=f"r{s['rank']} ({s['branches']} br.) {fam}")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(plt.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # 1-2-5 labels, plain numbers
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # minor labels of a short log axis ran together
        ax.set_xlabel("bits per element (log)" if x == "bits_per_element" else "kB per frame (log)")
        ax.set_ylabel(QUALITIES[attr])
        ax.grid(alpha=0.3, which="both")
    axes[0, -1].legend(fontsize="small", title="split, codec family")
    fig.suptitle(f"{Path(result.sweep.model).stem if result.sweep.model.endswith('.onnx') else result.sweep.model}: "
                 f"rate-accuracy, {len(result.sweep.images)} frames")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_throughput(result: StudyResult, path) -> Path:
    """Encode and decode MB/s (raw data) per codec, averaged over the splits."""
    plt = _plt()
    codecs = result.sweep.codecs
    enc = [_mean([r.encode_mbps for r in result.sweep.rows if r.codec == c]) for c in codecs]
    dec = [_mean([r.decode_mbps for r in result.sweep.rows if r.codec == c]) for c in codecs]
    fig, ax = plt.subplots(figsize=(max(7, 0.6 * len(codecs) + 2), 4.5))
    xs = range(len(codecs))
    ax.bar([i - 0.2 for i in xs], enc, width=0.4, label="encode")
    ax.bar([i + 0.2 for i in xs], dec, width=0.4, label="decode")
    ax.set_xticks(list(xs), codecs, rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("MB/s of raw tensor data (log)")
    ax.set_title("codec throughput (mean over splits, one core per worker)")
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _mean(vals) -> float:
    vals = [v for v in vals if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.nan


PLOTS = (("rate_quality_bpe.png", lambda res, p: plot_rate_quality(res, p, "bits_per_element"),
          "quality against bits per element"),
         ("rate_quality_kb.png", lambda res, p: plot_rate_quality(res, p, "kb_per_frame"),
          "quality against kB per frame"),
         ("throughput.png", plot_throughput, "encode / decode throughput"))


def _fmt(v, kind: str = "{:.2f}") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return kind.format(v)


TABLE = (("rank", "rank", "{}"), ("branches", "br.", "{}"), ("codec", "codec", "{}"),
         ("bits_per_element", "bits/el", "{:.3f}"), ("kb_per_frame", "kB/frame", "{:,.1f}"), ("kbps", "kbit/s", "{:,.0f}"),
         ("key_kb", "key kB", "{:,.1f}"), ("predicted_kb", "pred kB", "{:,.1f}"),
         ("rel_map", "rel mAP %", "pct"), ("map", "mAP %", "pct"), ("nmse", "NMSE", "{:.2e}"),
         ("psnr_db", "PSNR dB", "{:.1f}"), ("cosine", "cosine", "{:.5f}"), ("top1", "top-1 %", "pct"),
         ("encode_mbps", "enc MB/s", "{:.1f}"), ("decode_mbps", "dec MB/s", "{:.1f}"))


def table_rows(result: StudyResult) -> tuple[list[str], list[list[str]]]:
    cols = [c for c in TABLE if c[0] not in ("map", "top1", "key_kb", "predicted_kb", "kbps") or
            any(math.isfinite(_value(r, c[0], result.fps)) for r in result.sweep.rows)]
    if all(math.isnan(r.predicted_bytes) for r in result.sweep.rows):  # no temporal codec: no key/pred columns
        cols = [c for c in cols if c[0] not in ("key_kb", "predicted_kb")]
    if result.sweep.family == RAW_FAMILY:
        cols = [c for c in cols if c[0] != "rel_map"]
    body = []
    for r in result.sweep.rows:
        cells = []
        for attr, _, fmt in cols:
            v = _value(r, attr, result.fps)
            cells.append(_fmt(100 * v if fmt == "pct" and isinstance(v, float) else v,
                              "{:.1f}" if fmt == "pct" else fmt))
        body.append(cells)
    return [h for _, h, _ in cols], body


RATIO_FLOOR = 0.99  # relative mAP a "ratio at" figure must keep


def best_ratios(result: StudyResult, floor: float = RATIO_FLOOR) -> list[tuple[int, str, SweepRow | None]]:
    """(split, family, the family's row of highest compression ratio among those keeping >= `floor` relative
    mAP, or None) for every split and family; empty for a model without detections."""
    if result.sweep.family == RAW_FAMILY:
        return []
    out = []
    for s in result.sweep.splits:
        for fam in result.families():
            ok = [r for r in curve(result.sweep.rows, s["rank"], fam) if r.rel_map >= floor and r.ratio > 0]
            out.append((s["rank"], fam, max(ok, key=lambda r: r.ratio) if ok else None))
    return out


def ratio_lines(result: StudyResult, floor: float = RATIO_FLOOR) -> list[str]:
    """Per split, each family's best ratio at >= `floor` relative mAP and its factor over the anchor's."""
    best = best_ratios(result, floor)
    anchor = {rank: r for rank, fam, r in best if fam == result.anchor_family}
    lines = []
    for rank, fam, r in best:
        if r is None:
            lines.append(f"r{rank}: {fam}: no point keeps >= {100 * floor:.0f} % relative mAP")
            continue
        a = anchor.get(rank)
        vs = (f", {r.ratio / a.ratio:.2f}x {result.anchor_family}'s best"
              if a is not None and fam != result.anchor_family else "")
        rate = f", {_value(r, 'kbps', result.fps):,.0f} kbit/s" if result.fps else ""
        lines.append(f"r{rank}: {fam}: {r.ratio:.1f}x at >= {100 * floor:.0f} % relative mAP ({r.codec}, "
                     f"{100 * r.rel_map:.1f} %, {r.bits_per_element:.3f} bits/el{rate}{vs})")
    return lines


def bd_lines(result: StudyResult) -> list[str]:
    lines = []
    for b in result.bd:
        v = "n/a" if math.isnan(b.bd_rate) else f"{b.bd_rate:+.1f} %"
        extra = f" ({b.note})" if b.note else f" (overlap {100 * b.overlap:.0f} % of the quality range)"
        lines.append(f"r{b.rank}: BD-rate of {b.family} vs {b.anchor} on {b.quality}: {v}{extra}")
    return lines


def summary_lines(result: StudyResult) -> list[str]:
    from splitinfer.common.studies.sweep import summary_lines as sweep_summary

    return sweep_summary(result.sweep) + [
        f"quality metric: {result.quality} ({QUALITIES[result.quality]}); rate: bits per element sent "
        f"(8 x encoded bytes / elements){_rate_note(result)}; BD-rate anchor: {result.anchor_family}; "
        f"study time {result.seconds:.1f} s"]


def _rate_note(result: StudyResult) -> str:
    return f"; kbit/s: at the video's {result.fps:g} frames/s" if result.fps else ""


def write_study_report(result: StudyResult, out_dir, plots: list[tuple[str, str]]) -> Path:
    head, body = table_rows(result)
    md = ["# Rate-accuracy study", ""]
    if result.command:
        md += ["Made by:", "", "```bash", result.command, "```", ""]
    md += [f"- {line}" for line in summary_lines(result)] + [""]
    md += ["## Bjontegaard delta rate", "",
           f"Negative: the family needs fewer bits per element than {result.anchor_family} for the same quality "
           f"(mean over the quality range both cover; curves reduced to their upper envelope; `bjontegaard` "
           f"package, Akima interpolation). Quality: {result.quality} (the study's metric) and psnr_db (fidelity "
           "of the model outputs, smooth where accuracy saturates).", "",
           "| split | family | quality | BD-rate vs " + result.anchor_family + " | points | anchor points | overlap "
           "| note |", "|---|---|---|---|---|---|---|---|"]
    for b in result.bd:
        md.append(f"| {b.rank} | {b.family} | {b.quality} | {_fmt(b.bd_rate, '{:+.1f} %')} | {b.points} | "
                  f"{b.anchor_points} | {100 * b.overlap:.0f} % | {b.note} |")
    if best_ratios(result):
        md += ["", f"## Compression ratio at >= {100 * RATIO_FLOOR:.0f} % relative mAP", "",
               "Each family's highest ratio among its points that keep the accuracy, against the anchor's.", ""]
        md += [f"- {line}" for line in ratio_lines(result)]
    md += ["", "## Every (split, codec)", "",
           "Per frame means. MB/s are of raw tensor data, per core (one onnxruntime thread per worker); "
           "NMSE / PSNR / cosine compare the model outputs after Part II with the whole model's.", ""]
    md += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    md += ["| " + " | ".join(row) + " |" for row in body]
    md += [""]
    for fname, title in plots:
        md += [f"## {title[0].upper() + title[1:]}", "", f"![{title}]({fname})", ""]
    path = Path(out_dir) / "report.md"
    path.write_text("\n".join(md))
    return path


def write_study_outputs(result: StudyResult, out_dir, plots: bool = True) -> dict[str, Path]:
    """study.csv, bd_rate.csv, the plots (frame_kb.png too where a temporal codec predicted frames) and
    report.md in `out_dir`; the sweep's own outputs in `out_dir/sweep`."""
    out_dir = make_output_dir(out_dir)
    paths = {"csv": write_study_csv(result, out_dir / "study.csv"), "bd": write_bd_csv(result, out_dir / "bd_rate.csv")}
    made = []
    if plots and result.sweep.rows:
        from splitinfer.common.studies.frameplot import has_streams, plot_frame_kb

        extra = [("frame_kb.png", plot_frame_kb, "kB of each frame")] if has_streams(result) else []
        for fname, fn, title in list(PLOTS) + extra:
            paths[fname] = fn(result, out_dir / fname)
            made.append((fname, title))
    paths["md"] = write_study_report(result, out_dir, made)
    paths["sweep"] = write_outputs(result.sweep, out_dir / "sweep", plots=False)["json"]
    return paths


def print_study(result: StudyResult, log=print) -> None:
    head, body = table_rows(result)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)]
    log("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for r in body:
        log("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    for line in bd_lines(result) + ratio_lines(result):
        log(line)
