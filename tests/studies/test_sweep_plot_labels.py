"""Point labels of the sweep's curve plots (map_vs_size/ratio) never overlap: a dense stretch of a curve
(many QPs at the same mAP) keeps a readable subset instead of a smear. Drawn from the committed sweep
(docs/sweep/results.json)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from splitinfer.common.studies.sweep import report  # noqa: E402
from splitinfer.common.studies.sweep.config import SweepResult, load_results  # noqa: E402

DOCS = Path(__file__).resolve().parents[2] / "docs" / "sweep"


def _result():
    d = load_results(DOCS)
    return SweepResult(**{k: d[k] for k in SweepResult.__dataclass_fields__ if k in d})


def test_curve_labels_do_not_overlap(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))  # keep the figure to inspect it
    report.plot_map_vs_size(_result(), tmp_path / "size.png")
    fig = figs[-1]
    renderer = fig.canvas.get_renderer()
    drawn = 0
    for ax in fig.axes:
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        drawn += len(boxes)
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not a.overlaps(b), (a, b)
    points = sum(1 for r in _result().rows)
    assert 0 < drawn < 2 * points  # some labels kept on both panels, not all of them
    plt.close(fig)
