"""The study's plots keep their tick labels apart (issue 19, section 5 cosmetics): on a log axis spanning
less than a decade matplotlib labelled the minor ticks too, and they ran into each other; codec names under
the throughput bars overlapped. Drawn from the committed study (docs/study/sweep/results.json)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from splitinfer.common.studies import ratestudy  # noqa: E402
from splitinfer.common.studies.sweep.config import SweepResult, load_results  # noqa: E402

DOCS = Path(__file__).resolve().parents[2] / "docs" / "study" / "sweep"


def _result():
    d = load_results(DOCS)
    sweep = SweepResult(**{k: d[k] for k in SweepResult.__dataclass_fields__ if k in d})
    quality = ratestudy.choose_quality(sweep, None)
    return ratestudy.StudyResult(sweep=sweep, quality=quality, anchor_family=ratestudy.ANCHOR_FAMILY,
                                 bd=ratestudy.bd_rates(sweep, quality), seconds=0.0)


def _overlaps(fig):
    renderer = fig.canvas.get_renderer()
    found, labelled = [], 0
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            ticks = [t for t in axis.get_ticklabels(which="both") if t.get_visible() and t.get_text()]
            labelled += bool(ticks)
            boxes = [t.get_window_extent(renderer) for t in ticks]
            found += [(ticks[i].get_text(), ticks[j].get_text()) for i in range(len(boxes))
                      for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
    return found, labelled


def test_tick_labels_do_not_overlap(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))  # keep each figure to inspect it
    result = _result()
    ratestudy.plot_rate_quality(result, tmp_path / "bpe.png", "bits_per_element")
    ratestudy.plot_rate_quality(result, tmp_path / "kb.png", "kb_per_frame")
    ratestudy.plot_throughput(result, tmp_path / "tp.png")
    for fig in figs:
        fig.canvas.draw()
        found, labelled = _overlaps(fig)
        assert labelled >= 2 and not found, found
