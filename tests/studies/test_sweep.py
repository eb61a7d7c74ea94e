"""Split x codec sweep: real NanoDet, real codecs (nncodec included), real process pool and Ray.

The sweep's numbers are checked against independent computations: Part I run on its own for the raw
sizes, the whole model run from the image for the anchor's mAP, and the static size analysis for the
automatic split choice.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from splitinfer.common.assets import IMAGES_DIR, default_model_path
from splitinfer.common.cli import main
from splitinfer.common.studies.sweep import SweepConfig, auto_splits, run_sweep

GT = IMAGES_DIR / "terrain2_coco.json"
SPLITS = [27, 95]  # 1 branch (0.69 MB) and 3 branches (2.4 MB)
CODECS = ["none", "float16", "nnc:-4"]


def _data(tmp_path_factory, names=("terrain2.png", "dog.jpg", "kite.jpg")) -> Path:
    d = tmp_path_factory.mktemp("data")
    for n in names:
        shutil.copy(IMAGES_DIR / n, d / n)
    return d


@pytest.fixture(scope="module")
def data3(tmp_path_factory) -> Path:
    return _data(tmp_path_factory)


@pytest.fixture(scope="module")
def cli_sweep(tmp_path_factory, data3):
    """One sweep through the CLI: 2 splits x 3 codecs on 3 photos, 2 pool workers."""
    out = tmp_path_factory.mktemp("sweep")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["sweep", "nanodet", "--splits", *map(str, SPLITS), "--codecs", *CODECS, "--data", str(data3),
                   "--gt", str(GT), "-o", str(out), "--workers", "2", "-q"])
    assert rc == 0, buf.getvalue()
    return out, json.loads((out / "results.json").read_text()), buf.getvalue()


def _rows(results) -> dict:
    return {(r["rank"], r["codec"]): r for r in results["rows"]}


def test_sizes_match_part1_run_alone(cli_sweep, data3):
    from splitinfer.common.families import get_family
    from splitinfer.common.split.graph import SplitGraph
    from splitinfer.common.core.images import iter_frames
    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.core.runtime import make_session

    _, results, _ = cli_sweep
    rows = _rows(results)
    assert len(rows) == len(SPLITS) * len(CODECS)
    graph = SplitGraph(load_model(default_model_path()))
    fam = get_family("nanodet")
    for r in SPLITS:
        plan = graph.plan(rank=r)
        part1 = make_session(graph.extract(plan)[0], device="cpu")
        sizes = []
        for _, img in iter_frames(data3):
            feeds, _ = fam.preprocess(img)
            sizes.append(sum(a.nbytes for a in part1.run(feeds, plan.part1_outputs)))
        none, f16, nnc = (rows[(r, c)] for c in CODECS)
        assert none["branches"] == len(graph.crossing_at(r))
        assert none["raw_bytes"] == pytest.approx(np.mean(sizes))
        assert none["encoded_bytes"] == none["raw_bytes"] and none["ratio"] == 1.0
        assert f16["encoded_bytes"] == none["raw_bytes"] / 2  # every crossing tensor is float32
        assert nnc["encoded_bytes"] < f16["encoded_bytes"] / 4
        assert nnc["ratio"] == pytest.approx(nnc["raw_bytes"] / nnc["encoded_bytes"])
        assert none["max_abs_err"] == 0.0 and 0 < f16["max_abs_err"] < nnc["max_abs_err"]
        assert nnc["encode_ms"] > f16["encode_ms"]


def test_lossless_and_float16_keep_relative_map(cli_sweep):
    _, results, _ = cli_sweep
    for r in SPLITS:
        assert _rows(results)[(r, "none")]["rel_map"] == pytest.approx(1.0)
        assert _rows(results)[(r, "float16")]["rel_map"] >= 0.99  # within 1 point of 100
        assert _rows(results)[(r, "float16")]["rel_map50"] >= 0.99


def test_absolute_map_matches_whole_model_run(cli_sweep):
    """The anchor's mAP equals pycocotools on detections from a plain whole-model run."""
    from splitinfer.common.eval.evaluation import evaluate_coco
    from splitinfer.common.families import get_family
    from splitinfer.common.core.images import read_image
    from splitinfer.common.core.runtime import make_session

    _, results, _ = cli_sweep
    fam = get_family("nanodet")
    sess = make_session(default_model_path(), device="cpu")
    feeds, meta = fam.preprocess(read_image(IMAGES_DIR / "terrain2.png"))
    outs = dict(zip(sess.output_names, sess.run(feeds)))
    dets = fam.postprocess(outs, meta, results["score_threshold"])
    ref = evaluate_coco({"terrain2": dets}, GT, only_predicted=True)
    assert results["anchor"]["gt_images"] == 1
    assert results["anchor"]["map"] == pytest.approx(ref.ap, abs=1e-9)
    assert results["anchor"]["map50"] == pytest.approx(ref.ap50, abs=1e-9)
    for r in SPLITS:
        assert _rows(results)[(r, "none")]["map"] == pytest.approx(ref.ap, abs=1e-6)


def test_report_table_and_plots(cli_sweep):
    out, results, stdout = cli_sweep
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["rank"]), r["codec"]) for r in rows] == [(s, c) for s in SPLITS for c in CODECS]
    wanted = {"branches", "raw_bytes", "encoded_bytes", "ratio", "encode_ms", "decode_ms", "map", "rel_map"}
    assert wanted <= set(rows[0])
    pngs = ["map_by_split.png", "map_vs_size.png", "map_vs_ratio.png"]
    for name in pngs:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    md = (out / "report.md").read_text()
    assert sum(1 for line in md.splitlines() if line.startswith("| 27 ") or line.startswith("| 95 ")) == 6
    assert all(f"]({p})" in md for p in pngs)
    html = (out / "report.html").read_text()
    assert html.count("<img ") == 3 and html.count("<tr>") == 7
    assert "rows: 6 computed, 0 from cache" in stdout


def test_interrupted_sweep_resumes_without_recomputing(tmp_path, data3):
    """Ctrl-C (KeyboardInterrupt) after the first stored row, then resume: finished rows stay as they were."""
    base = dict(model="nanodet", data=str(data3), splits=[27], codecs=["none", "float16", "nnc:-4", "nnc:0"],
                out_dir=str(tmp_path / "out"), workers=2)
    first = []

    def interrupt(rank, codec):
        first.append((rank, codec))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(SweepConfig(**base), progress=False, on_row=interrupt)
    rows_dir = next((tmp_path / "out" / "cache" / "rows").iterdir())
    files = sorted(rows_dir.glob("*.json"))
    assert len(first) == 1 and len(files) == 1
    before = files[0].read_bytes()
    computed_by = json.loads(before)["computed_by"]

    second = []
    res = run_sweep(SweepConfig(**base), progress=False, on_row=lambda r, c: second.append((r, c)))
    assert first[0] not in second and len(second) == 3
    assert files[0].read_bytes() == before  # not rewritten
    assert res.stats["rows_cached"] == 1 and res.stats["rows_computed"] == 3
    assert res.stats["activations_computed"] == 0  # the model did not run again
    assert [r.cached for r in res.rows].count(True) == 1
    assert len(list(rows_dir.glob("*.json"))) == 4
    assert json.loads(files[0].read_text())["computed_by"] == computed_by

    # everything cached now; a new ground truth changes mAP but recomputes no row
    third = run_sweep(SweepConfig(**base, gt=str(GT)), progress=False, on_row=lambda r, c: pytest.fail("recomputed"))
    assert third.stats["rows_computed"] == 0 and third.stats["tasks"] == 0
    assert third.anchor["gt_images"] == 1 and all(not math.isnan(r.map) for r in third.rows)
    assert [r.encoded_bytes for r in third.rows] == [r.encoded_bytes for r in res.rows]

    # --fresh recomputes, and deterministic codecs give the same bytes again
    fresh = run_sweep(SweepConfig(**{**base, "resume": False, "workers": 0}), progress=False)
    assert fresh.stats["rows_computed"] == 4
    assert [r.encoded_bytes for r in fresh.rows] == [r.encoded_bytes for r in res.rows]


def test_ctrl_c_on_the_cli_keeps_finished_rows(tmp_path, data3):
    """A real SIGINT to `splitinfer sweep` once its first row is stored: exit 130 with one line, the
    workers stopped, and the next run takes the stored rows from the cache."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    argv = [sys.executable, "-m", "splitinfer.common.cli", "sweep", "nanodet", "--splits", "27", "--codecs", "none",
            "nnc:-38", "nnc:-37", "nnc:-36", "nnc:-35", "--data", str(data3), "-o", str(out), "--workers", "2", "-q"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("cache/rows/*/*.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "splitinfer sweep: interrupted"
    done = len(list(out.glob("cache/rows/*/*.json")))
    assert 1 <= done < 5
    assert not list(out.glob("cache/tmp/*/*"))  # the workers' temp folders are gone
    res = run_sweep(SweepConfig(model="nanodet", data=str(data3), splits=[27], out_dir=str(out), workers=0,
                                codecs=["none", "nnc:-38", "nnc:-37", "nnc:-36", "nnc:-35"]), progress=False)
    assert res.stats["rows_cached"] == done and res.stats["rows_computed"] == 5 - done


def test_ray_local_instance_matches_process_pool(tmp_path_factory, tmp_path):
    """Tasks (image batch, split, codec) on a local Ray instance give the rows the local pool gives."""
    import ray  # in requirements.txt: a missing ray is a failure, not a skip
    data = _data(tmp_path_factory, ("terrain2.png", "dog.jpg"))
    base = dict(model="nanodet", data=str(data), splits=[95], codecs=["none", "float16"], batch_size=1)
    local = run_sweep(SweepConfig(**base, out_dir=str(tmp_path / "local"), workers=0), progress=False)
    try:
        on_ray = run_sweep(SweepConfig(**base, out_dir=str(tmp_path / "ray"), ray_address="local", workers=2),
                           progress=False)
    finally:
        ray.shutdown()
    assert on_ray.runner.startswith("Ray (local, 2 CPUs)")
    assert on_ray.stats["tasks"] == 4  # 2 batches of one image x 1 split x 2 codecs
    for a, b in zip(local.rows, on_ray.rows):
        assert (a.rank, a.codec) == (b.rank, b.codec)
        assert a.encoded_bytes == b.encoded_bytes and a.raw_bytes == b.raw_bytes
        assert a.rel_map == b.rel_map and a.predictions == b.predictions


def test_auto_splits_pick_least_data_per_segment():
    """Default splits: one interior rank per sixth of the model, where the static analysis says the
    least data is sent (crossing tensors + model outputs Part I already made)."""
    from splitinfer.common.studies.analysis import analyze
    from splitinfer.common.split.graph import SplitGraph
    from splitinfer.common.core.onnx_io import load_model

    model = load_model(default_model_path())
    graph = SplitGraph(model)
    ranks = auto_splits(graph)
    assert len(ranks) == 6 and ranks == sorted(set(ranks)) and 0 < ranks[0] and ranks[-1] < graph.num_nodes
    static = {row.rank: row.sent_bytes for row in analyze(model, measure=False, input_size=(416, 416)).rows}
    n = graph.num_nodes
    for k, r in enumerate(ranks):
        lo, hi = 1 + (n - 1) * k // 6, 1 + (n - 1) * (k + 1) // 6
        assert lo <= r < hi
        assert static[r] == min(static[x] for x in range(lo, hi))


@pytest.mark.parametrize("argv, needle", [
    (["--codecs", "gzip"], "unknown codec 'gzip'"),
    (["--splits", "NoSuchNode"], "no node named 'NoSuchNode'"),
    (["--splits", "999"], "rank 999 out of range"),
    (["--data", "/nonexistent/photos"], "data not found: /nonexistent/photos"),
    (["--gt", "/nonexistent/gt.json"], "ground truth not found"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, needle):
    args = ["sweep", "nanodet", "--data", str(IMAGES_DIR), "-o", str(tmp_path), "-q"]
    # later options win in argparse, so the bad value overrides the good default above
    assert main(args + argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_batch_size_zero_is_refused_by_argparse(tmp_path, capsys):
    """Out-of-range numbers are argparse's (cli/options.py): one line, exit 2."""
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "nanodet", "--data", str(IMAGES_DIR), "-o", str(tmp_path), "-q", "--batch-size", "0"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "--batch-size: must be >= 1" in err and len(err.splitlines()) == 1
