"""Metrics: one registry per process, served over HTTP, parseable by prometheus_client's parser."""

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from splitinfer.common.transport.metrics import STAGES, Metrics, labels_for


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(families, family, sample_name, **labels):
    for s in families[family].samples:
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError((family, sample_name, labels))


def test_histograms_and_counters_are_served_with_labels():
    m = Metrics("device")
    port = m.serve(0, "127.0.0.1")
    try:
        lab = labels_for("nanodet", 60, "nnc:-38")
        m.observe(lab, part1=0.012, encode=0.003, serialize=0.0004, transfer=0.002, end_to_end=0.02)
        m.observe(lab, part1=0.018)
        m.count_frame(lab, raw_bytes=1000, encoded_bytes=250)
        m.count_frame(lab, raw_bytes=1000, encoded_bytes=260)
        m.count_error("NOT_FOUND")
        fams = scrape(port)
    finally:
        m.close()
    assert value(fams, "splitinfer_part1_seconds", "splitinfer_part1_seconds_count", **lab) == 2
    assert abs(value(fams, "splitinfer_part1_seconds", "splitinfer_part1_seconds_sum", **lab) - 0.03) < 1e-9
    assert value(fams, "splitinfer_part1_seconds", "splitinfer_part1_seconds_bucket", le="0.02", **lab) == 2
    assert value(fams, "splitinfer_part1_seconds", "splitinfer_part1_seconds_bucket", le="0.01", **lab) == 0
    assert value(fams, "splitinfer_frames", "splitinfer_frames_total", **lab) == 2
    assert value(fams, "splitinfer_raw_bytes", "splitinfer_raw_bytes_total", **lab) == 2000
    assert value(fams, "splitinfer_encoded_bytes", "splitinfer_encoded_bytes_total", **lab) == 510
    assert value(fams, "splitinfer_errors", "splitinfer_errors_total", code="NOT_FOUND", model="unknown") == 1
    assert value(fams, "splitinfer_process_info", "splitinfer_process_info", role="device") == 1
    for stage in STAGES:  # every stage is declared, observed or not
        assert f"splitinfer_{stage}_seconds" in fams


def test_each_process_has_its_own_registry():
    a, b = Metrics("device"), Metrics("server")
    lab = labels_for("m", 1, "none")
    a.observe(lab, part1=0.1)
    pa, pb = a.serve(0, "127.0.0.1"), b.serve(0, "127.0.0.1")
    try:
        assert pa != pb
        fa, fb = scrape(pa), scrape(pb)
    finally:
        a.close()
        b.close()
    assert value(fa, "splitinfer_part1_seconds", "splitinfer_part1_seconds_count", **lab) == 1
    assert not [s for s in fb["splitinfer_part1_seconds"].samples]
    assert value(fb, "splitinfer_process_info", "splitinfer_process_info", role="server") == 1


def test_label_sets_are_bounded_past_the_limit_into_other():
    """A client naming a new (split, codec) per session cannot grow the page without bound."""
    m = Metrics("server", max_label_sets=8)
    port = m.serve(0, "127.0.0.1")
    try:
        for split in range(200):
            lab = labels_for("nanodet", split, f"zstd:{1 + split % 22}")
            m.open_session(lab)
            m.observe(lab, decode=0.001)
            m.count_frame(lab, 10, 5)
            m.count_error("INVALID_ARGUMENT", lab)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        m.close()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    frames = {(s.labels["split"], s.labels["codec"]): s.value for s in fams["splitinfer_frames"].samples
              if s.name == "splitinfer_frames_total"}
    assert len(frames) == 9  # 8 label sets, then one "other"
    assert frames[("other", "other")] == 192 and frames[("0", "zstd:1")] == 1
    assert len(text) < 400_000, len(text)  # 200 label sets would make ~5 MB
