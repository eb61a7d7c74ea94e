"""The default label-set cap of a process's metrics (issue 23: only an end-to-end test caught a change of
it, the unit tests set their own cap): 64 (split, codec) sets per process, later ones counted as "other"."""

from splitinfer.common.transport.metrics import Metrics, labels_for


def test_the_default_cap_is_64_label_sets_then_other():
    m = Metrics("server")
    seen = set()
    for split in range(200):
        lab = labels_for("nanodet", split, f"zstd:{1 + split % 22}")
        got = m.bounded(lab)
        seen.add((got["split"], got["codec"]))
        m.count_frame(lab, 10, 5)
    assert len(seen) == 64 + 1 and ("other", "other") in seen
    assert m.bounded(labels_for("nanodet", 0, "zstd:1")) == labels_for("nanodet", 0, "zstd:1")  # kept ones stay
    frames = {s.labels["split"]: s.value for s in m.frames.collect()[0].samples if s.name.endswith("_total")}
    assert len(frames) == 65 and frames["other"] == 200 - 64
