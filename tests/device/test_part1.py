"""part1.py: where the cut is, read off the part files the field's scripts give (manifest, else ONNX)."""

import json

import pytest

from splitinfer.common.assets import default_model_path
from splitinfer.common.core.errors import UserError
from splitinfer.common.core.onnx_io import load_model
from splitinfer.common.core.files import file_sha256
from splitinfer.common.split.graph import SplitGraph, split_model
from splitinfer.device.part1 import parse_split, plan_split, rank_of_part


@pytest.fixture(scope="module")
def graph():
    path = default_model_path()
    return SplitGraph(load_model(path), source_sha256=file_sha256(path))


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    out = tmp_path_factory.mktemp("parts")
    p1, p2, manifest, plan = split_model(default_model_path(), rank=60, out_dir=out)
    return p1, p2, manifest


def test_split_option_is_a_rank_or_a_node_name():
    assert parse_split(" 60 ") == (60, None)
    assert parse_split("/backbone/Conv_3") == (None, "/backbone/Conv_3")
    assert parse_split(None) == parse_split("") == (None, None)


def test_the_manifest_beside_the_parts_names_the_rank(graph, parts):
    p1, p2, _ = parts
    assert rank_of_part(graph, p1, "part1", graph.source_sha256) == 60
    assert rank_of_part(graph, p2, "part2", graph.source_sha256) == 60
    assert plan_split(graph, part1_path=p1).part1_outputs == graph.plan(rank=60).part1_outputs
    assert plan_split(graph, rank=120, part1_path=p1).rank == 120  # --split wins (Part1 then checks the file)


def test_without_a_manifest_the_files_own_outputs_and_inputs_say_it(graph, parts, tmp_path):
    p1, p2, _ = parts
    for p in (p1, p2):
        (tmp_path / p.name).write_bytes(p.read_bytes())  # the parts alone, no manifest
    assert rank_of_part(graph, tmp_path / p1.name, "part1", None) == 60
    assert rank_of_part(graph, tmp_path / p2.name, "part2", None) == 60


def test_a_manifest_of_another_model_or_no_split_at_all_is_refused(graph, parts, tmp_path):
    p1, _, manifest = parts
    other = json.loads(manifest.read_text())
    other["source_sha256"] = "0" * 64
    (tmp_path / p1.name).write_bytes(p1.read_bytes())
    (tmp_path / manifest.name).write_text(json.dumps(other))
    with pytest.raises(UserError, match="cut from another model than the anchor"):
        rank_of_part(graph, tmp_path / p1.name, "part1", graph.source_sha256)
    with pytest.raises(UserError, match="give the split with --split"):
        plan_split(graph)
