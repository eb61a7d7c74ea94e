"""Analysis: sizes per split rank on graphs whose sizes are known by hand, a dynamic-shape graph resolved by
input size, a tensor that depends on the data, writers, plots, the CLI, and RetinaNet (static == measured)."""

from __future__ import annotations

import csv
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import graph_fixtures as gf
from splitinfer.common.studies import analysis as A
from splitinfer.common.studies import analysis_report as R
from splitinfer.common.studies import inputs as Inp
from splitinfer.common.cli import main
from splitinfer.common.core.errors import UserError
from splitinfer.common.split.graph import SplitGraph

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------- parsers


def test_transfer_time():
    # rates: tests/core/test_rates.py
    # 1 MB (10^6 bytes) at 1 Gbit/s: 8e6 bits / 1e9 bit/s = 8 ms
    assert A.transfer_seconds(10**6, 1e9) == pytest.approx(8e-3)
    assert A.transfer_seconds(None, 1e9) is None


def test_parse_input_size():
    assert Inp.parse_input_size("480x640") == (480, 640)
    assert Inp.parse_input_size("320") == (320, 320)
    assert Inp.parse_input_size((10, 20)) == (10, 20)
    for bad in ("0x5", "axb", "480x", "-3x3"):
        with pytest.raises(UserError):
            Inp.parse_input_size(bad)


# ---------------------------------------------------------------------------------------------- known sizes

# residual_diamond: stem(x)->a; left_mul(a)->b1; right_add(a)->c1; right_tanh(c1)->c2; left_sigmoid(b1)->b2;
# join(b2,c2)->j; skip(j,x)->y. Worked out by hand: what Part I (nodes < r) must hand to Part II.
DIAMOND_CROSSING = [
    {"x"}, {"a", "x"}, {"a", "b1", "x"}, {"b1", "c1", "x"}, {"b1", "c2", "x"}, {"b2", "c2", "x"}, {"j", "x"}, set(),
]


def test_diamond_sizes_static_and_measured_by_hand():
    model = gf.residual_diamond()  # x: [batch, 6] float32, every tensor has x's shape
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    a = A.analyze(model, feeds={"x": x}, bandwidths=["1G", "100k"])
    assert [set(r.tensors) for r in a.rows] == DIAMOND_CROSSING
    assert [r.branches for r in a.rows] == [1, 2, 3, 3, 3, 3, 2, 0]
    per_tensor = 3 * 6 * 4
    for r in a.rows:
        assert r.static_bytes == r.measured_bytes == per_tensor * r.branches
        assert r.agree is True and not r.unknown
    # the anchor is the raw input; at the last rank nothing crosses but Part I's output y is sent
    assert a.rows[0].rank == 0 and a.rows[0].tensors == ["x"] and a.rows[0].sent_bytes == x.nbytes
    assert a.rows[-1].part1_outputs == ["y"] and a.rows[-1].sent_bytes == per_tensor
    r2 = a.rows[2]
    assert r2.transfer_s["1G"] == pytest.approx(3 * per_tensor * 8 / 1e9)
    assert r2.transfer_s["100k"] == pytest.approx(3 * per_tensor * 8 / 1e5)
    assert a.measure_runs == 1


def test_static_only_resolves_a_free_batch_to_one():
    a = A.analyze(gf.residual_diamond(), measure=False)
    assert a.input_shapes == {"x": [1, 6]}
    assert [r.static_bytes for r in a.rows] == [24 * len(s) for s in DIAMOND_CROSSING]
    assert all(r.measured_bytes is None and r.agree is None for r in a.rows)
    assert a.rows[3].sent_bytes == 72  # without a measurement, transfer is estimated from the static size
    assert a.rows[3].transfer_s["500M"] == pytest.approx(72 * 8 / 5e8)


def test_crossing_sets_come_from_the_split_engine():
    model = gf.shape_late()  # late nodes need only Shape(x)/Size(x): the engine hoists them
    g = SplitGraph(model)
    a = A.analyze(model, feeds={"x": np.ones((1, 3, 4, 5), np.float32)}, graph=g)
    assert [r.tensors for r in a.rows] == g.all_crossing_sets()
    assert all(r.agree is True for r in a.rows)


def test_measuring_in_chunks_gives_the_same_numbers():
    model = gf.chain()
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    one = A.analyze(model, feeds={"x": x})
    chunked = A.analyze(model, feeds={"x": x}, max_exposed_bytes=1)  # every tensor over budget: one per run
    assert one.measure_runs == 1 and chunked.measure_runs > 1
    assert [r.measured_bytes for r in one.rows] == [r.measured_bytes for r in chunked.rows]
    assert all(r.agree is True for r in one.rows)


# ---------------------------------------------------------------------------------------------- dynamic shapes


def dynamic_graph() -> onnx.ModelProto:
    """x [1,3,H,W] -> stride-2 conv r [1,4,ceil(H/2),ceil(W/2)]; then shapes *computed* from Shape(r):
    a Reshape to [1,4,h*w] (Slice + ReduceProd + Concat), a Resize to twice r's size (Mul on the shape)
    and a data-dependent NonZero whose size no shape inference can know."""
    w = numpy_helper.from_array(np.random.default_rng(2).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
              (("two", [2]), ("four", [4]), ("one4", [1, 4]), ("x2", [1, 1, 2, 2]))]
    nodes = [
        h.make_node("Conv", ["x", "w"], ["r0"], name="conv", strides=[2, 2], pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["r0"], ["r"], name="relu"),
        h.make_node("Shape", ["r"], ["s"], name="shape"),
        h.make_node("Slice", ["s", "two", "four"], ["hw"], name="slice_hw"),
        h.make_node("ReduceProd", ["hw"], ["n"], name="prod", keepdims=1),
        h.make_node("Concat", ["one4", "n"], ["flat_shape"], name="concat", axis=0),
        h.make_node("Reshape", ["r", "flat_shape"], ["flat"], name="flatten"),
        h.make_node("Mul", ["s", "x2"], ["big"], name="double"),
        h.make_node("Resize", ["r", "", "", "big"], ["up"], name="upsample", mode="nearest"),
        h.make_node("Greater", ["flat", "zero"], ["mask"], name="positive"),
        h.make_node("NonZero", ["mask"], ["nz"], name="nonzero"),
        h.make_node("ReduceMean", ["up"], ["m_up"], name="mean_up", keepdims=0),
        h.make_node("ReduceMean", ["flat"], ["m_flat"], name="mean_flat", keepdims=0),
        h.make_node("Cast", ["nz"], ["nzf"], name="cast", to=T.FLOAT),
        h.make_node("ReduceSum", ["nzf"], ["count"], name="count", keepdims=0),
        h.make_node("Add", ["m_up", "m_flat"], ["ms"], name="add"),
        h.make_node("Add", ["ms", "count"], ["y"], name="out"),
    ]
    graph = h.make_graph(nodes, "dynamic", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, "H", "W"])],
                         [h.make_tensor_value_info("y", T.FLOAT, [])],
                         [w, *consts, numpy_helper.from_array(np.array(0, np.float32), "zero")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _expected_bytes(H, W):
    h2, w2 = -(-H // 2), -(-W // 2)
    return {"r": 4 * h2 * w2 * 4, "flat": 4 * h2 * w2 * 4, "up": 4 * 2 * h2 * 2 * w2 * 4, "mask": 4 * h2 * w2}


@pytest.mark.parametrize("size", [(32, 48), (21, 30)])
def test_dynamic_graph_static_sizes_resolved_by_input_size(size):
    model = dynamic_graph()
    a = A.analyze(model, input_size=size, measure=False)
    assert a.input_shapes == {"x": [1, 3, *size]}
    for name, nbytes in _expected_bytes(*size).items():
        assert a.tensors[name].static_bytes == nbytes, name
    assert a.tensors["nz"].static_bytes is None  # depends on the values: listed as unknown
    rows_with_nz = [r for r in a.rows if "nz" in r.tensors]
    assert rows_with_nz and all(r.unknown == ["nz"] and r.static_bytes is None for r in rows_with_nz)
    assert all(r.static_known_bytes >= 0 for r in rows_with_nz)


def test_dynamic_graph_measured_on_an_image_agrees_where_known():
    model = dynamic_graph()
    a = A.analyze(model, input_size=(40, 26))  # the bundled photo, resized
    assert a.feeds_from == "resize" and a.input_shapes == {"x": [1, 3, 40, 26]}
    for name, nbytes in _expected_bytes(40, 26).items():
        assert a.tensors[name].measured_bytes == nbytes, name
    nz = a.tensors["nz"]
    assert nz.static_bytes is None and nz.measured_bytes == int(np.prod(nz.measured_shape)) * 8
    assert nz.measured_shape[0] == 3  # NonZero of a 3-D mask: one row per axis
    for r in a.rows:
        assert r.agree is (None if r.unknown else True)
        assert r.measured_bytes == sum(a.tensors[t].measured_bytes for t in r.tensors)


def test_fixed_size_model_refuses_another_size():
    with pytest.raises(UserError, match="fixed size 8x8"):
        A.analyze(gf.chain(), input_size=(16, 16), measure=False)


# ---------------------------------------------------------------------------------------------- writers and plots


def test_csv_json_and_plots(tmp_path):
    model = dynamic_graph()
    runs = [A.analyze(model, input_size=s, bandwidths=["500M", "1G", "5G"]) for s in [(16, 16), (32, 48), (64, 64)]]
    a = runs[1]
    R.write_csv(a, tmp_path / "a.csv")
    with open(tmp_path / "a.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == a.num_nodes + 1
    assert rows[0]["node"].startswith("(whole model") and rows[0]["tensors"] == "x"
    for row, r in zip(rows, a.rows):
        assert int(row["branches"]) == r.branches
        assert row["agree"] == {True: "yes", False: "no", None: "unknown"}[r.agree]
        if r.unknown:
            assert row["static_bytes"] == "" and row["unknown_tensors"] == " ".join(r.unknown)
        sent = int(row["sent_bytes"])
        for lab, bps in (("500M", 5e8), ("1G", 1e9), ("5G", 5e9)):
            assert float(row[f"t_{lab}_ms"]) == pytest.approx(sent * 8 / bps * 1e3, rel=1e-6, abs=1e-6)
    R.write_json(a, tmp_path / "a.json")
    d = json.loads((tmp_path / "a.json").read_text())
    assert d["bandwidths"] == {"500M": 5e8, "1G": 1e9, "5G": 5e9}
    assert [r["measured_bytes"] for r in d["rows"]] == [r.measured_bytes for r in a.rows]
    assert d["tensors"]["nz"]["static_bytes"] is None and d["tensors"]["up"]["agree"] is True

    p = R.plot_per_node(a, tmp_path / "per_node.png")
    lines, bars = R.plot_sizes_by_input(runs, tmp_path / "lines.png", tmp_path / "bars.png")
    for f in (p, lines, bars):
        assert f.read_bytes()[:8] == PNG_MAGIC and f.stat().st_size > 10_000


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_analyze_nanodet(tmp_path, capsys):
    assert main(["analyze", "nanodet", "-o", str(tmp_path), "--bandwidth", "500M", "1G", "100k"]) == 0
    out = capsys.readouterr().out
    assert "nanodet: 136 nodes" in out and "(family:nanodet)" in out
    with open(tmp_path / "nanodet_416x416.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 137 and {"t_500M_ms", "t_1G_ms", "t_100k_ms"} <= set(rows[0])
    assert rows[0]["measured_bytes"] == str(1 * 3 * 416 * 416 * 4)  # the raw input tensor
    assert all(r["agree"] == "yes" for r in rows)  # nanodet's shapes are all static
    assert (tmp_path / "nanodet_416x416.png").read_bytes()[:8] == PNG_MAGIC
    assert json.loads((tmp_path / "nanodet_416x416.json").read_text())["measure_runs"] == 1


def test_cli_analyze_takes_tc_rates_in_either_list_form(tmp_path, capsys):
    """Issue 15: `--bandwidth 10mbit` as tc writes it; `10mbps` is megaBYTES per second (80 Mbit/s) as in tc."""
    argv = ["analyze", "nanodet", "--static-only", "--no-plots", "-o", str(tmp_path), "--bandwidth"]
    assert main(argv + ["10mbit,10mbps"]) == 0
    with open(tmp_path / "nanodet_416x416.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    raw = 1 * 3 * 416 * 416 * 4  # rank 0 sends the input tensor
    assert float(rows[0]["t_10M_ms"]) == pytest.approx(raw * 8 / 10e6 * 1e3, rel=1e-3)
    assert float(rows[0]["t_80M_ms"]) == pytest.approx(raw * 8 / 80e6 * 1e3, rel=1e-3)
    capsys.readouterr()
    assert main(argv + ["10mbit", "10mbps"]) == 0  # space-separated: the same columns
    with open(tmp_path / "nanodet_416x416.csv", newline="") as f:
        assert {"t_10M_ms", "t_80M_ms"} <= set(next(csv.DictReader(f)))


@pytest.mark.parametrize("argv,msg", [
    (["analyze", "nanodet", "--bandwidth", "fast"], "bad rate 'fast'"),
    (["analyze", "nanodet", "--input-size", "300x300"], "fixed size 416x416"),
    (["analyze", "no/such/model.onnx"], "model not found"),
    (["analyze", "nanodet", "--image", "no_such.jpg"], "image not found"),
])
def test_cli_analyze_errors_are_one_line(argv, msg, tmp_path, capsys):
    assert main(argv + ["-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_analyze_several_input_sizes_of_a_dynamic_model(tmp_path, capsys):
    path = tmp_path / "dyn.onnx"
    onnx.save(dynamic_graph(), str(path))
    assert main(["analyze", str(path), "--input-size", "24x24", "48x64", "-o", str(tmp_path / "out")]) == 0
    for name in ("dyn_24x24.csv", "dyn_48x64.json", "dyn_48x64.png", "dyn_sizes_lines.png", "dyn_sizes_bars.png"):
        assert (tmp_path / "out" / name).is_file(), name


# ---------------------------------------------------------------------------------------------- RetinaNet


@pytest.mark.slow
def test_retinanet_static_sizes_match_measured(retinanet_onnx):
    """2,000+ nodes, one inference for all ranks; every tensor whose size is known statically has it
    measured identically, and the only unknown ones come after the data-dependent filtering."""
    model = onnx.load(str(retinanet_onnx))
    g = SplitGraph(model)
    a = A.analyze(model, graph=g, model_path=retinanet_onnx)
    assert g.num_nodes > 2000 and len(a.rows) == g.num_nodes + 1 and a.measure_runs == 1
    assert a.feeds_from == "family:retinanet"
    both = [t for t in a.tensors.values() if t.static_bytes is not None and t.measured_bytes is not None]
    assert len(both) > 0.6 * len(a.tensors)
    assert all(t.agree for t in both), [t.name for t in both if not t.agree][:5]
    assert all(r.agree is not False for r in a.rows)
    assert sum(r.agree is True for r in a.rows) > 1000  # fully known and equal at most ranks
    # unknown sizes only downstream of NonZero / NonMaxSuppression (what the image decides)
    downstream: set[str] = set()
    for n in g.nodes:
        if n.op_type in ("NonZero", "NonMaxSuppression") or any(i in downstream for i in n.input):
            downstream.update(n.output)
    unknown = {t.name for t in a.tensors.values() if t.static_bytes is None}
    assert unknown and unknown <= downstream
    # the transform resizes inside the graph (shorter side 800): the first conv runs at that scale
    img_h, img_w = a.input_shapes["input"][1:]
    conv = next(n for n in g.nodes if n.op_type == "Conv")
    shape = a.tensors[conv.output[0]].static_shape
    assert shape[1] == 64 and min(shape[2], shape[3]) == 400  # stride 2 of 800
    assert a.rows[0].measured_bytes == 3 * img_h * img_w * 4
