"""Series exist at zero from session set-up, and the buckets are fine enough to read a median off them."""

import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from splitinfer.common.transport.metrics import BUCKETS, ROLE_STAGES, Metrics, labels_for


def _samples(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def test_open_session_creates_every_series_of_the_role_at_zero():
    for role, stages in ROLE_STAGES.items():
        m = Metrics(role)
        lab = labels_for("nanodet", 60, "zstd")
        m.open_session(lab)
        port = m.serve(0, "127.0.0.1")
        try:
            samples = _samples(port)
        finally:
            m.close()
        mine = [s for s in samples if s.labels.get("model") == "nanodet"]
        for stage in stages:
            counts = [s.value for s in mine if s.name == f"splitinfer_{stage}_seconds_count"]
            assert counts == [0.0], (role, stage)
        for name in ("splitinfer_frames_total", "splitinfer_raw_bytes_total", "splitinfer_encoded_bytes_total"):
            assert [s.value for s in mine if s.name == name] == [0.0], (role, name)
        other = set(ROLE_STAGES["server" if role == "device" else "device"])
        assert not [s for s in mine if s.name.replace("splitinfer_", "").split("_seconds")[0] in other]


def _quantile_from_buckets(values, q):
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding the rank."""
    counts = [sum(v <= b for v in values) for b in BUCKETS]
    rank = q * len(values)
    prev_b, prev_c = 0.0, 0
    for b, c in zip(BUCKETS, counts):
        if c >= rank:
            return prev_b + (b - prev_b) * (rank - prev_c) / max(c - prev_c, 1)
        prev_b, prev_c = b, c
    return BUCKETS[-1]


def test_median_read_off_the_buckets_is_within_a_few_ms():
    rng = np.random.default_rng(0)
    for centre in (0.012, 0.068, 0.15):  # a quick stage, the compose run's end-to-end, a slow frame
        values = list(rng.normal(centre, centre * 0.1, 200).clip(1e-4))
        est = _quantile_from_buckets(values, 0.5)
        assert abs(est - float(np.median(values))) < max(0.004, 0.05 * centre), (centre, est)
