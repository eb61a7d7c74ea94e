"""Unit tests of the split engine's pieces: order, crossing intervals, types, parts, plan I/O.

The whole engine is checked end to end in test_graph_split.py; here each piece is checked alone on
graphs small enough to work the expected answer out by hand.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import graph_fixtures as gf
from splitinfer.common.core.errors import UserError
from splitinfer.common.core.onnx_io import with_outputs
from splitinfer.common.core.runtime import keep_feeds
from splitinfer.common.split import order
from splitinfer.common.split.crossing import crossing_intervals
from splitinfer.common.split.graph import NONDETERMINISTIC_OPS, SplitGraph
from splitinfer.common.split.parts import WeightFragments, write_part
from splitinfer.common.split.plan import part_io
from splitinfer.common.split.types import has_rank, info_from_type, observed_types, resolve_types
from splitinfer.common.split.consolidate import consolidated_outputs, run_split


def _model(nodes, inputs, outputs, inits=()):
    m = h.make_model(h.make_graph(nodes, "g", inputs, outputs, list(inits)), opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _vi(name, shape=(2, 3), elem=T.FLOAT):
    return h.make_tensor_value_info(name, elem, list(shape))


# ---------------------------------------------------------------------------------------------- order


def test_topological_order_keeps_a_sorted_graph_and_sorts_a_shuffled_one_stably():
    nodes = [h.make_node("Relu", ["x"], ["a"], name="n0"), h.make_node("Neg", ["x"], ["b"], name="n1"),
             h.make_node("Add", ["a", "b"], ["y"], name="n2")]
    ins = [order.node_inputs(n) for n in nodes]
    assert order.topological_order(nodes, ins, set()) == ([0, 1, 2], True)
    shuffled = [nodes[2], nodes[1], nodes[0]]
    ins = [order.node_inputs(n) for n in shuffled]
    # ties (Neg and Relu are both ready) break by stored position: Neg (stored 1) before Relu (stored 2)
    assert order.topological_order(shuffled, ins, set()) == ([1, 2, 0], False)


def test_cycle_is_a_user_error_naming_the_node():
    nodes = [h.make_node("Relu", ["b"], ["a"], name="first"), h.make_node("Relu", ["a"], ["b"], name="second")]
    with pytest.raises(UserError, match="cycle"):
        order.topological_order(nodes, [order.node_inputs(n) for n in nodes], set())


def test_subgraph_outer_reads_are_node_inputs():
    m = gf.if_outer()
    if_node = next(n for n in m.graph.node if n.op_type == "If")
    reads = order.node_inputs(if_node)
    assert reads[0] == if_node.input[0] and len(reads) > 1  # the condition, then what the branches read


def test_constants_liveness_and_consumers():
    nodes = [h.make_node("Cast", ["w"], ["wf"], to=T.FLOAT, name="cast_w"),   # constant (from a weight)
             h.make_node("Mul", ["x", "wf"], ["m"], name="mul"),
             h.make_node("Neg", ["x"], ["dead"], name="dead_end"),              # feeds no output
             h.make_node("Relu", ["m"], ["y"], name="relu")]
    ins = [order.node_inputs(n) for n in nodes]
    outs = [order.node_outputs(n) for n in nodes]
    tensors, const_nodes = order.constants(nodes, ins, outs, {"w"})
    assert const_nodes == {0} and tensors == {"w", "wf"}
    live = order.live_nodes(ins, outs, ["y"])
    assert live == [True, True, False, True]
    assert order.consumers(ins, live) == {"w": [0], "x": [1], "wf": [1], "m": [3]}


@pytest.mark.parametrize("op", sorted(NONDETERMINISTIC_OPS))
def test_random_operators_are_never_constants(op):
    """Fed only constants, a Random* node must still not count as constant (Part II would draw anew)."""
    ins = {"RandomNormal": [], "RandomUniform": [], "RandomNormalLike": ["c"], "RandomUniformLike": ["c"],
           "Multinomial": ["c"], "Bernoulli": ["c"]}[op]
    nodes = [h.make_node(op, ins, ["r"], name="rnd"), h.make_node("Add", ["x", "r"], ["y"], name="add")]
    node_ins = [order.node_inputs(n) for n in nodes]
    tensors, const_nodes = order.constants(nodes, node_ins, [["r"], ["y"]], {"c"})
    assert 0 not in const_nodes and "r" not in tensors


def test_random_tensor_crosses_so_both_parts_see_the_same_draw():
    """r = RandomUniformLike(constant) is used on both sides of the cut: it must cross, not be recomputed."""
    c = numpy_helper.from_array(np.zeros((2, 3), np.float32), "c")
    nodes = [h.make_node("RandomUniformLike", ["c"], ["r"], name="draw"),
             h.make_node("Add", ["x", "r"], ["a"], name="add"),
             h.make_node("Mul", ["a", "r"], ["y"], name="mul")]
    model = _model(nodes, [_vi("x")], [_vi("y")], [c])
    graph = SplitGraph(model)
    assert 0 not in graph.const_nodes and "r" not in graph.constants
    assert graph.crossing_at(2) == ["r", "a"]
    plan = graph.plan(rank=2)
    p1, p2 = graph.extract(plan)
    assert "RandomUniformLike" not in {n.op_type for n in p2.graph.node}  # Part II takes r, does not redraw
    s1 = ort.InferenceSession(p1.SerializeToString(), providers=["CPUExecutionProvider"])
    s2 = ort.InferenceSession(p2.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.ones((2, 3), np.float32)
    r, a = s1.run(["r", "a"], {"x": x})
    (y,) = s2.run(["y"], {"r": r, "a": a})
    np.testing.assert_array_equal(y, (x + r) * r)


# ---------------------------------------------------------------------------------------------- crossing


def test_crossing_intervals_by_hand():
    #   0: a = Relu(x)   1: b = Neg(a)   2: c = Add(a, b)   3: y = Mul(c, x)
    nodes = [h.make_node("Relu", ["x"], ["a"]), h.make_node("Neg", ["a"], ["b"]),
             h.make_node("Add", ["a", "b"], ["c"]), h.make_node("Mul", ["c", "x"], ["y"])]
    ins = [order.node_inputs(n) for n in nodes]
    outs = [order.node_outputs(n) for n in nodes]
    producer, out_index = order.producers(outs, ["x"])
    cons = order.consumers(ins, order.live_nodes(ins, outs, ["y"]))
    c = crossing_intervals(["x"], nodes, outs, cons, producer, out_index, set())
    assert c.interval == {"x": (0, 3), "a": (1, 2), "b": (2, 2), "c": (3, 3)}
    assert c.every_rank() == [["x"], ["x", "a"], ["x", "a", "b"], ["x", "c"], []]
    assert [c.at(r) for r in range(5)] == c.every_rank()
    with pytest.raises(UserError, match="out of range"):
        c.at(5)


def test_shape_only_input_crosses_as_its_shape_from_its_last_value_read():
    # x is read for its values by node 0 only; node 2 needs only Shape(x) -> from rank 1 its shape crosses
    nodes = [h.make_node("Relu", ["x"], ["a"]), h.make_node("Shape", ["x"], ["s"]),
             h.make_node("Reshape", ["a", "s"], ["y"])]
    ins = [order.node_inputs(n) for n in nodes]
    outs = [order.node_outputs(n) for n in nodes]
    producer, out_index = order.producers(outs, ["x"])
    cons = order.consumers(ins, order.live_nodes(ins, outs, ["y"]))
    c = crossing_intervals(["x"], nodes, outs, cons, producer, out_index, set())
    assert c.interval["x"] == (0, 0) and c.shape_start["x"] == 1 and c.shape_nodes["x"] == [1]
    assert c.interval["s"] == (1, 2)  # hoistable: crosses from rank 1, before its node runs


# ---------------------------------------------------------------------------------------------- types


def test_types_declared_then_inferred_then_observed():
    # Reshape to a shape whose LENGTH is computed from an input's values: inference cannot give r's rank
    nodes = [h.make_node("ReduceMax", ["n"], ["m"], keepdims=1), h.make_node("Mul", ["m", "zero"], ["z"]),
             h.make_node("Add", ["z", "two"], ["e"]), h.make_node("Cast", ["e"], ["ends"], to=T.INT64),
             h.make_node("Slice", ["target", "starts", "ends"], ["shape"]),
             h.make_node("Reshape", ["x", "shape"], ["r"]), h.make_node("Relu", ["r"], ["y"])]
    inits = [numpy_helper.from_array(np.array(v, dt), name) for name, v, dt in
             (("zero", [0.0], np.float32), ("two", [2.0], np.float32), ("target", [-1, 1, 1], np.int64),
              ("starts", [0], np.int64))]
    model = _model(nodes, [_vi("x", (2, 3)), _vi("n", (4,))], [_vi("y", (None, None))], inits)
    inferred_only = resolve_types(model, list(model.graph.node), list(model.graph.input), ["ends"])
    assert "r" not in inferred_only or not has_rank(inferred_only["r"])  # inference alone leaves r open
    types = resolve_types(model, list(model.graph.node), list(model.graph.input), ["ends", "r"])
    assert info_from_type("ends", types["ends"]).dtype == "int64"      # inferred
    assert has_rank(types["r"]) and info_from_type("r", types["r"]).dtype == "float32"
    assert len(types["r"].tensor_type.shape.dim) == 2                  # rank observed in the probe run
    assert all(not d.HasField("dim_value") for d in types["r"].tensor_type.shape.dim)  # no size leaks


def test_probe_failure_still_gives_the_element_type():
    nodes = [h.make_node("Relu", ["x"], ["a"]), h.make_node("Reshape", ["a", "s"], ["y"])]
    model = _model(nodes, [_vi("x", (2, 3)), _vi("s", (2,), T.INT64)], [_vi("y", (None, None))])
    # random int64 feeds for s make Reshape fail, so the run fails: the static type is what remains
    found = observed_types(model, ["y"])
    assert found["y"].tensor_type.elem_type == T.FLOAT


# ---------------------------------------------------------------------------------------------- parts


def test_weight_fragments_merge_into_one_model(tmp_path):
    model = gf.chain()
    graph = SplitGraph(model)
    plan = graph.plan(rank=4)
    full1, full2 = graph.extract(plan)
    skel1, skel2, names1, names2 = graph._parts(plan, with_initializers=False)
    assert not skel1.graph.initializer and names1 == ["w", "b"]
    path = write_part(skel1, WeightFragments(graph.initializers).get(names1), tmp_path / "p1.onnx")
    loaded = onnx.load(str(path))
    assert loaded.SerializeToString() == full1.SerializeToString()  # fragments merged = the full part
    onnx.checker.check_model(loaded)


def test_part_io_and_identity_part_two():
    crossing = ["a", "b"]
    assert part_io(crossing, [("y", "II"), ("z", "I")]) == (["a", "b", "z"], ["a", "b"], ["y"], ["z"])
    # nothing left for Part II: it hands Part I's outputs on
    assert part_io([], [("y", "I"), ("z", "I")]) == (["y", "z"], ["y", "z"], ["y", "z"], ["y", "z"])


def test_consolidated_outputs_and_keep_feeds():
    model = gf.early_output()
    graph = SplitGraph(model)
    whole = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.linspace(-1, 1, 10, dtype=np.float32).reshape(2, 5)
    expected = dict(zip([o.name for o in model.graph.output], whole.run(None, {"x": x})))
    for r in range(graph.num_nodes + 1):
        plan = graph.plan(rank=r)
        p1, p2 = graph.extract(plan)
        sess = [ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"]) for p in (p1, p2)]
        out = run_split(sess[0], sess[1], plan, {"x": x, "not_an_input": np.zeros(1)})  # extra feed dropped
        assert list(out) == list(expected)
        for name in expected:
            np.testing.assert_array_equal(out[name], expected[name])
    # by name, from the part the plan says: at rank 1 'early' comes from Part I, 'late' from Part II
    plan = graph.plan(rank=1)
    assert consolidated_outputs(plan, {"early": 1, "late": -1}, {"late": 2, "side": 3}) == \
        {"late": 2, "early": 1, "side": 3}
    assert keep_feeds({"a": 1, "b": 2}, ["b", "c"]) == {"b": 2}


def test_with_outputs_adds_or_replaces():
    model = gf.chain()
    m = with_outputs(model, ["r", "y", "r"], {"r": T.FLOAT})
    assert [o.name for o in m.graph.output] == ["y", "r"] and m.graph.output[1].type.tensor_type.elem_type == T.FLOAT
    assert [o.name for o in with_outputs(model, ["r"], replace=True).graph.output] == ["r"]
    assert [o.name for o in model.graph.output] == ["y"]  # the original is untouched
