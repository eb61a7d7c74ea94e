"""Rate-accuracy study: real NanoDet on the committed vtest clip, real nncodec, real BD-rates.

Numbers are checked against independent computations: element counts against the split plan's static
shapes, bits per element against encoded bytes, BD-rate signs on real activations quantised and
entropy-coded (a family that is strictly better at every point must come out negative).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from splitinfer.common.cli import main
from splitinfer.common.studies.ratestudy import bd_rate, envelope, expand_ladders

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "docs" / "study" / "vtest_clip.avi"
SPLITS = [46, 95]  # 1 crossing tensor; 3 crossing tensors (multi-branch)
CODECS = ["nnc:-38", "nnc:-8", "float16"]
FRAMES = 3


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """`splitinfer study` on NanoDet: 2 splits x 3 codecs on 3 frames of the vtest clip, 2 workers."""
    out = tmp_path_factory.mktemp("study")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["study", "nanodet", "--data", str(CLIP), "--max-images", str(FRAMES), "--splits",
                   *map(str, SPLITS), "--codecs", *CODECS, "-o", str(out), "--workers", "2", "-q"])
    assert rc == 0, buf.getvalue()
    with open(out / "study.csv") as f:
        rows = {(int(r["rank"]), r["codec"]): r for r in csv.DictReader(f)}
    return out, rows, buf.getvalue()


def test_clip_and_licence_are_committed():
    import cv2

    cap = cv2.VideoCapture(str(CLIP))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 30
    assert CLIP.stat().st_size < 4_000_000
    lic = CLIP.with_name("vtest_clip.LICENSE.txt").read_text()
    assert "Apache-2.0 AND BSD-3-Clause" in lic and "Licensed under the Apache License" in lic


def test_rates_match_the_split_plan(study):
    """Elements per frame = the plan's static shapes; bits/element = 8 x bytes / elements; float16 = 16."""
    from splitinfer.common.assets import default_model_path
    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.split.graph import SplitGraph

    _, rows, _ = study
    assert set(rows) == {(s, c) for s in SPLITS for c in CODECS}
    graph = SplitGraph(load_model(default_model_path()))
    for s in SPLITS:
        plan = graph.plan(rank=s)
        elems = sum(int(np.prod(graph.tensor_info(n).shape)) for n in plan.part1_outputs)
        for c in CODECS:
            r = rows[(s, c)]
            assert float(r["elements"]) == elems
            assert int(r["images"]) == FRAMES and r["family"] == c.split(":")[0]
            kb = float(r["kb_per_frame"])
            assert float(r["bits_per_element"]) == pytest.approx(8 * kb * 1e3 / elems, rel=1e-5)
            assert float(r["kbps"]) == pytest.approx(8 * kb * 10, rel=1e-5)  # vtest's 10 frames/s
            assert float(r["encode_mbps"]) > 0 and float(r["decode_mbps"]) > 0
        assert float(rows[(s, "float16")]["bits_per_element"]) == pytest.approx(16.0)
        assert float(rows[(s, "nnc:-8")]["bits_per_element"]) < float(rows[(s, "nnc:-38")]["bits_per_element"]) < 16


def test_fidelity_of_raw_outputs_orders_the_codecs(study):
    """NanoDet's raw outputs: coarser quantisation, larger NMSE, lower PSNR and cosine."""
    _, rows, _ = study
    for s in SPLITS:
        f16, fine, coarse = rows[(s, "float16")], rows[(s, "nnc:-38")], rows[(s, "nnc:-8")]
        assert 0 < float(f16["nmse"]) < float(fine["nmse"]) < float(coarse["nmse"]) < 1
        assert float(f16["psnr_db"]) > float(fine["psnr_db"]) > float(coarse["psnr_db"]) > 0
        assert 1 >= float(fine["cosine"]) > float(coarse["cosine"]) > 0.5
        assert float(f16["rel_map"]) >= 0.99


def test_report_plots_and_bd_table(study):
    out, _, stdout = study
    for name in ("rate_quality_bpe.png", "rate_quality_kb.png", "throughput.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    with open(out / "bd_rate.csv") as f:
        bd = list(csv.DictReader(f))
    # float16 is one point: no curve, so no BD-rate, and the reason is given
    assert {(int(b["rank"]), b["family"], b["quality"]) for b in bd} == \
        {(s, "float16", q) for s in SPLITS for q in ("rel_map", "psnr_db")}
    assert all(b["bd_rate_percent"] == "" and "needs >= 2 points" in b["note"] for b in bd)
    md = (out / "report.md").read_text()
    assert "## Bjontegaard delta rate" in md and "![quality against bits per element](rate_quality_bpe.png)" in md
    assert sum(1 for line in md.splitlines() if line.startswith(("| 46 |", "| 95 |"))) == 6 + 4
    results = json.loads((out / "sweep" / "results.json").read_text())
    assert results["data"].endswith("vtest_clip.avi") and results["images"][0] == "vtest_clip_000000"
    assert "BD-rate of float16 vs nnc on rel_map: n/a" in stdout


def test_study_with_ground_truth_reports_absolute_map(tmp_path, capsys):
    """With --gt, mAP against ground truth is a column, a plot panel, and can be the BD-rate's quality."""
    import shutil

    from splitinfer.common.assets import IMAGES_DIR

    data = tmp_path / "data"
    data.mkdir()
    for n in ("terrain2.png", "dog.jpg"):
        shutil.copy(IMAGES_DIR / n, data / n)
    out = tmp_path / "out"
    assert main(["study", "nanodet", "--data", str(data), "--gt", str(IMAGES_DIR / "terrain2_coco.json"),
                 "--splits", "95", "--codecs", "fq:3..5", "float16", "--quality", "map", "-o", str(out),
                 "--workers", "0", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "mAP %" in printed and "kbit/s" not in printed  # photos have no frame rate
    with open(out / "study.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(0 < float(r["map"]) <= 1 for r in rows)
    assert all(r["kbps"] == "" for r in rows)
    with open(out / "bd_rate.csv") as f:
        assert {b["quality"] for b in csv.DictReader(f)} == {"map", "psnr_db"}


def _quantise(x: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = float(x.min()), float(x.max())
    levels = (1 << bits) - 1
    q = np.round((x - lo) / (hi - lo) * levels).astype(np.uint8)
    return q, (q.astype(np.float32) / levels * (hi - lo) + lo)


def _psnr(x, y) -> float:
    return 10 * math.log10(float(np.max(np.abs(x))) ** 2 / float(np.mean((x - y) ** 2)))


def test_bd_rate_sign_on_real_activations(study):
    """Real NanoDet activations at split 46, quantised at 2..8 bits: sending the symbols entropy-coded
    (zstd) costs fewer bits at every point than bit-packing them, at the same PSNR, so its BD-rate against
    bit-packing is negative, the reverse is positive, and a curve against itself is 0."""
    import zstandard

    from splitinfer.common.assets import default_model_path
    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.split.graph import SplitGraph

    out, _, _ = study
    sent = SplitGraph(load_model(default_model_path())).plan(rank=46).part1_outputs
    npz = sorted((out / "cache" / "activations").rglob("*.npz"))[0]
    with np.load(npz, allow_pickle=False) as z:
        names = [str(s) for s in z["__names__"]]
        x = z[f"t{names.index(sent[0])}"].astype(np.float32)
    packed, coded = [], []
    for bits in range(2, 9):
        q, y = _quantise(x, bits)
        quality = _psnr(x, y)
        packed.append((float(bits), quality))
        coded.append((8.0 * len(zstandard.ZstdCompressor(level=19).compress(q.tobytes())) / x.size, quality))
    assert all(c[0] < p[0] for c, p in zip(coded, packed))  # strictly better at every point
    assert len(envelope(packed)) == 7
    better, overlap, note = bd_rate(packed, coded)
    worse, _, _ = bd_rate(coded, packed)
    same, _, _ = bd_rate(packed, packed)
    assert note == "" and overlap == pytest.approx(1.0)
    assert -100 < better < 0 < worse
    assert same == pytest.approx(0.0, abs=1e-9)
    # a constant rate factor is a constant BD-rate: the same points at 1.25x the bits are +25 %
    assert bd_rate(coded, [(r * 1.25, q) for r, q in coded])[0] == pytest.approx(25.0, rel=1e-6)


def test_envelope_and_missing_overlap():
    pts = [(4.0, 0.9), (1.0, 0.5), (2.0, 0.8), (3.0, 0.7), (8.0, 0.9), (0.0, 0.1), (5.0, math.nan)]
    assert envelope(pts) == [(1.0, 0.5), (2.0, 0.8), (4.0, 0.9)]
    value, overlap, note = bd_rate([(1, 0.1), (2, 0.2)], [(1, 0.5), (2, 0.6)])
    assert math.isnan(value) and overlap == 0 and note == "quality ranges do not overlap"


def test_ladders_expand():
    assert expand_ladders(["fq:2..4", "nnc:-38..-8/10", "zstd", "fq:3"]) == \
        ["fq:2", "fq:3", "fq:4", "nnc:-38", "nnc:-28", "nnc:-18", "nnc:-8", "zstd"]
    assert expand_ladders(["fq:8..6:sym"]) == ["fq:8:sym", "fq:7:sym", "fq:6:sym"]
    assert expand_ladders(["fq:3..4.2/0.5", "nnc:-8..-12/2"]) == ["fq:3", "fq:3.5", "fq:4", "nnc:-8", "nnc:-10",
                                                                  "nnc:-12"]


@pytest.mark.parametrize("argv, needle", [
    (["--codecs", "nnc:-38..-8/0"], "step must be positive"),
    (["--codecs", "gzip"], "unknown codec 'gzip'"),
    (["--quality", "map", "--codecs", "float16"], "quality 'map' is not measured"),
    (["--data", "/nonexistent/clip.avi"], "data not found: /nonexistent/clip.avi"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, needle):
    args = ["study", "nanodet", "--data", str(CLIP), "--max-images", "1", "--splits", "95", "--workers", "0",
            "-o", str(tmp_path), "-q"]
    assert main(args + argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
