"""Splitability survey: small torchvision exports and the bundled NanoDet, verified by real inference.

Facts a reader can check by looking at the architectures: a ResNet basic block carries the skip tensor
beside the main path (2 tensors cross inside it); a SqueezeNet fire module feeds its squeeze output to two
expand convolutions (2 cross between them); NanoDet's head has three levels, each with several tensors.
"""

from __future__ import annotations

import csv

import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from splitinfer.common.studies import splitability as S
from splitinfer.common.models import zoo
from splitinfer.common.studies.analysis import analyze
from splitinfer.common.assets import default_model_path
from splitinfer.common.cli import main
from splitinfer.common.core.errors import UserError
from splitinfer.common.split.graph import SplitGraph


@pytest.fixture(scope="module")
def small_zoo(zoo_dir):
    return {n: zoo.model_path(n, zoo_dir) for n in ("resnet18", "squeezenet1_0")}


@pytest.mark.slow
def test_zoo_exports_are_dynamic_classifiers(small_zoo):
    for name, path in small_zoo.items():
        m = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in m.metadata_props}
        assert props["splitinfer.task"] == "classification" and props["splitinfer.zoo"] == name
        dims = m.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_value == 1 and dims[1].dim_value == 3
        assert dims[2].dim_param and dims[3].dim_param  # height and width symbolic
        # the same file runs at two sizes; the first conv's output follows the conv arithmetic:
        # resnet18 conv1 64 ch 7x7 stride 2 pad 3 (H/2); squeezenet1_0 96 ch 7x7 stride 2 no pad
        first_conv_bytes = {"resnet18": lambda s: 64 * (s // 2) ** 2 * 4,
                            "squeezenet1_0": lambda s: 96 * ((s - 7) // 2 + 1) ** 2 * 4}[name]
        for side in (128, 256):
            a = analyze(path, input_size=(side, side))
            first_relu = next(r for r in a.rows if r.rank > 0 and r.op_type == "Relu")
            assert first_relu.measured_bytes == first_relu.static_bytes == first_conv_bytes(side)
            assert a.rows[-1].sent_bytes == 1000 * 4  # logits [1,1000] float32
            assert all(r.agree for r in a.rows)
    # cached: asking again does not export again
    mtime = small_zoo["resnet18"].stat().st_mtime_ns
    assert zoo.model_path("resnet18", small_zoo["resnet18"].parent).stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_splitability_table_over_small_models(small_zoo, tmp_path):
    rows = [S.assess(p, samples=3) for p in (small_zoo["resnet18"], small_zoo["squeezenet1_0"], default_model_path())]
    by = {r.model: r for r in rows}
    assert set(by) == {"resnet18", "squeezenet1_0", "nanodet"}
    assert by["resnet18"].task == by["squeezenet1_0"].task == "classification" and by["nanodet"].task == "detection"
    for r in rows:
        assert r.split_possible and r.verified and r.multi_branch, r
        assert len(r.ranks_checked) >= 3 and r.ranks_ok == r.ranks_checked
        assert r.max_branches_rank in r.ranks_checked  # the widest cut is always verified
    assert by["resnet18"].max_branches == 2
    assert by["squeezenet1_0"].max_branches == 2
    assert by["nanodet"].max_branches >= 3
    # the reported maximum is the maximum over the engine's crossing sets of interior ranks
    g = SplitGraph(onnx.load(str(default_model_path())))
    sets = g.all_crossing_sets()
    assert by["nanodet"].max_branches == max(len(s) for s in sets[1:-1]) == len(sets[by["nanodet"].max_branches_rank])

    md = S.to_markdown(rows)
    lines = md.strip().splitlines()
    assert lines[0].startswith("| model | task | nodes | split possible | verified with inference | multi-branch")
    assert len([ln for ln in lines if ln.startswith("| ") and "---" not in ln]) == 4
    assert "| nanodet | detection | 136 | yes | yes (" in md
    S.write_csv(rows, tmp_path / "s.csv")
    with open(tmp_path / "s.csv", newline="") as f:
        back = list(csv.DictReader(f))
    assert [b["model"] for b in back] == [r.model for r in rows]
    assert [int(b["max_branches"]) for b in back] == [r.max_branches for r in rows]
    assert all(b["verified"] == "yes" and b["split_possible"] == "yes" for b in back)


def test_single_node_model_cannot_be_split(tmp_path):
    graph = h.make_graph([h.make_node("Relu", ["x"], ["y"], name="only")], "one",
                         [h.make_tensor_value_info("x", T.FLOAT, [1, 4])], [h.make_tensor_value_info("y", T.FLOAT, [1, 4])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "one.onnx"
    onnx.save(model, str(path))
    r = S.assess(path)
    assert not r.split_possible and not r.verified and r.ranks_checked == [] and "no interior" in r.note
    assert r.task == "classification"  # one 2-D output; no metadata says otherwise


def test_sample_ranks_are_spread_and_include_the_widest_cut():
    import graph_fixtures as gf

    g = SplitGraph(gf.residual_diamond())
    branches = [len(s) for s in g.all_crossing_sets()]
    ranks = S.sample_ranks(g, branches, samples=2)
    assert all(0 < r < g.num_nodes for r in ranks)
    assert 2 in ranks  # first rank with 3 crossing tensors
    assert S.sample_ranks(g, branches, samples=100) == list(range(1, g.num_nodes))


def test_find_models_and_errors(tmp_path):
    (tmp_path / "a").mkdir()
    src = default_model_path().read_bytes()
    (tmp_path / "a" / "model.onnx").write_bytes(src)
    (tmp_path / "b.onnx").write_bytes(src)
    found = S.find_models([tmp_path])
    assert [S.model_label(p) for p in found] == ["a", "b"]
    with pytest.raises(UserError, match="not found"):
        S.find_models([tmp_path / "missing.onnx"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .onnx model"):
        S.find_models([tmp_path / "empty"])


@pytest.mark.slow
def test_cli_splitability(small_zoo, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["splitability", "--zoo", "squeezenet1_0", "nanodet", "--zoo-dir", str(small_zoo["resnet18"].parent),
                 "--samples", "2", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| squeezenet1_0 | classification |" in text and "| nanodet | detection | 136 | yes | yes" in text
    assert (out / "splitability.md").read_text() in text
    assert len((out / "splitability.csv").read_text().strip().splitlines()) == 3


@pytest.mark.parametrize("argv,msg", [
    (["splitability"], "give model files/folders, or --zoo"),
    (["splitability", "--zoo", "alexnet"], "unknown survey model"),
    (["splitability", "nowhere.onnx"], "not found"),
])
def test_cli_splitability_errors(argv, msg, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err
