"""`splitinfer split` as a user runs it: a real subprocess, files written, one-line errors, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest

import graph_fixtures as gf


def splitinfer(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "splitinfer.common.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture()
def diamond(tmp_path):
    path = tmp_path / "diamond.onnx"
    onnx.save(gf.residual_diamond(), str(path))
    return path


def test_split_by_name_with_verify(diamond, tmp_path):
    out = tmp_path / "out"
    res = splitinfer("split", "-a", diamond, "-n", "right_tanh", "-o", out, "--verify")
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "Split node: right_tanh" in text and "rank 3" in text
    assert "Part I: " in text and "Part II: " in text
    assert "Intermediate data (3 tensors" in text
    for name in ("x  float32[batch, 6]", "b1  float32[batch, 6]", "c1  float32[batch, 6]"):
        assert name in text
    assert "graph input 'x' is passed through" in text
    assert "verify (exact): OK" in text and "DIFFERENT" not in text
    files = sorted(p.name for p in out.iterdir())
    assert files == ["diamond_part_II_node_3.onnx", "diamond_part_I_node_3.onnx", "diamond_split_node_3.json"]
    manifest = json.loads((out / "diamond_split_node_3.json").read_text())
    assert manifest["node_name"] == "right_tanh" and [t["name"] for t in manifest["crossing"]] == ["x", "b1", "c1"]


def test_split_by_rank_after_beside_model_and_npz_input(tmp_path):
    path = tmp_path / "shape_late.onnx"
    onnx.save(gf.shape_late(), str(path))
    import numpy as np

    npz = tmp_path / "x.npz"
    np.savez(npz, x=np.random.default_rng(0).random((1, 3, 6, 10)).astype(np.float32))
    res = splitinfer("split", "-a", path, "-r", 1, "-f", "after", "--verify", "--input", npz)
    assert res.returncode == 0, res.stderr
    assert "rank 2" in res.stdout
    assert "only through Shape/Size: xs, count" in res.stdout
    assert "float32[1, 3, 6, 10]" in res.stdout  # the given input was used
    assert (tmp_path / "shape_late_part_I_node_2.onnx").exists()
    assert (tmp_path / "shape_late_split_node_2.json").exists()


@pytest.mark.parametrize("case", ["missing", "not_onnx", "unknown_name", "rank_high", "rank_after_end",
                                  "bad_npz"])
def test_bad_input_one_line_exit_2(case, diamond, tmp_path):
    junk = tmp_path / "notes.onnx"
    junk.write_text("this is not a model\n" * 5)
    args = {
        "missing": ["-a", tmp_path / "nope.onnx", "-r", 1],
        "not_onnx": ["-a", junk, "-r", 1],
        "unknown_name": ["-a", diamond, "-n", "no_such_node"],
        "rank_high": ["-a", diamond, "-r", 99],
        "rank_after_end": ["-a", diamond, "-r", 7, "-f", "after"],
        "bad_npz": ["-a", diamond, "-r", 2, "-o", tmp_path / "o", "--verify", "--input", junk],
    }[case]
    res = splitinfer("split", *args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("splitinfer split: error:")
    expect = {"missing": "nope.onnx", "not_onnx": "notes.onnx", "unknown_name": "no_such_node",
              "rank_high": "out of range", "rank_after_end": "out of range", "bad_npz": "notes.onnx"}[case]
    assert expect in lines[0]


def test_help_lists_split():
    res = splitinfer("--help")
    assert res.returncode == 0 and "split" in res.stdout
