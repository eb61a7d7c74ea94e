"""Hand-built ONNX graphs that exercise each rule of the split engine (reusable by other tests).

Each builder returns a checked `onnx.ModelProto` (opset 13, IR 8). They are small so that every
rank of every graph can be split and verified in a test run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

OPSET = 13


def _model(nodes, inputs, outputs, inits=(), name="g"):
    graph = h.make_graph(nodes, name, inputs, outputs, list(inits))
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], producer_name="graph_fixtures")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _f(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def chain() -> onnx.ModelProto:
    """Conv -> Relu -> ... straight line, with constant-derived tensors (Cast of a weight, Constant)."""
    nodes = [
        h.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c"], ["r"], name="relu"),
        h.make_node("Cast", ["scale_i"], ["scale_f"], name="cast_weight", to=T.FLOAT),  # constant-derived
        h.make_node("Constant", [], ["k"], name="const_k", value=_init("kv", np.float32(0.5))),
        h.make_node("Mul", ["r", "scale_f"], ["m"], name="mul"),
        h.make_node("Add", ["m", "k"], ["a"], name="add"),
        h.make_node("Cast", ["a"], ["ai"], name="to_int", to=T.INT32),
        h.make_node("Cast", ["ai"], ["af"], name="to_float", to=T.FLOAT),
        h.make_node("Sigmoid", ["af"], ["s"], name="sigmoid"),
        h.make_node("ReduceMean", ["s"], ["y"], name="mean", axes=[2, 3], keepdims=0),
    ]
    inits = [_init("w", _f((4, 3, 3, 3), 1)), _init("b", _f((4,), 2)),
             _init("scale_i", np.array([2, 3, 4, 5], np.int64).reshape(1, 4, 1, 1))]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                  [h.make_tensor_value_info("y", T.FLOAT, [1, 4])], inits, "chain")


def residual_diamond() -> onnx.ModelProto:
    """Two branches that meet again, plus a skip connection from the input: multi-tensor cuts."""
    nodes = [
        h.make_node("Relu", ["x"], ["a"], name="stem"),
        h.make_node("Mul", ["a", "w1"], ["b1"], name="left_mul"),
        h.make_node("Add", ["a", "w2"], ["c1"], name="right_add"),
        h.make_node("Tanh", ["c1"], ["c2"], name="right_tanh"),
        h.make_node("Sigmoid", ["b1"], ["b2"], name="left_sigmoid"),
        h.make_node("Add", ["b2", "c2"], ["j"], name="join"),
        h.make_node("Add", ["j", "x"], ["y"], name="skip"),
    ]
    inits = [_init("w1", _f((1, 6), 3)), _init("w2", _f((1, 6), 4))]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["batch", 6])],
                  [h.make_tensor_value_info("y", T.FLOAT, ["batch", 6])], inits, "diamond")


def shape_late() -> onnx.ModelProto:
    """Late nodes need only Shape(x) / Size(x): the small shape tensors should cross, not x."""
    nodes = [
        h.make_node("Relu", ["x"], ["r"], name="relu"),
        h.make_node("Mul", ["r", "two"], ["m"], name="mul"),
        h.make_node("Reshape", ["m", "minus1"], ["flat"], name="flatten"),
        h.make_node("Exp", ["flat"], ["e"], name="exp"),
        h.make_node("Neg", ["e"], ["n"], name="neg"),
        h.make_node("Shape", ["x"], ["xs"], name="shape_of_input"),
        h.make_node("Reshape", ["n", "xs"], ["y"], name="unflatten"),
        h.make_node("Size", ["x"], ["count"], name="size_of_input"),
    ]
    inits = [_init("two", np.float32(2.0)), _init("minus1", np.array([-1], np.int64))]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [1, 3, "H", "W"])],
                  [h.make_tensor_value_info("y", T.FLOAT, [1, 3, "H", "W"]),
                   h.make_tensor_value_info("count", T.INT64, [])], inits, "shape_late")


def early_output() -> onnx.ModelProto:
    """Outputs made early (one also used later), listed out of production order."""
    nodes = [
        h.make_node("Relu", ["x"], ["early"], name="relu"),
        h.make_node("Neg", ["x"], ["side"], name="neg"),
        h.make_node("Mul", ["early", "early"], ["sq"], name="square"),
        h.make_node("Exp", ["sq"], ["late"], name="exp"),
    ]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [2, 5])],
                  [h.make_tensor_value_info("late", T.FLOAT, [2, 5]),
                   h.make_tensor_value_info("early", T.FLOAT, [2, 5]),
                   h.make_tensor_value_info("side", T.FLOAT, [2, 5])], (), "early_output")


def if_outer() -> onnx.ModelProto:
    """An If whose branches read tensors `t` and `u` from the outer graph (no explicit input edge)."""
    then_g = h.make_graph([h.make_node("Add", ["t", "w_then"], ["then_out"], name="then_add")], "then", [],
                          [h.make_tensor_value_info("then_out", T.FLOAT, [4])])
    else_g = h.make_graph(
        [h.make_node("Constant", [], ["three"], name="else_const", value=_init("three_v", np.float32(3.0))),
         h.make_node("Mul", ["u", "three"], ["else_out"], name="else_mul")], "else", [],
        [h.make_tensor_value_info("else_out", T.FLOAT, [4])])
    nodes = [
        h.make_node("Relu", ["x"], ["t"], name="relu"),
        h.make_node("Neg", ["x"], ["u"], name="neg"),
        h.make_node("ReduceSum", ["x"], ["total"], name="total", keepdims=0),
        h.make_node("Greater", ["total", "limit"], ["cond"], name="greater"),
        h.make_node("Sin", ["x"], ["v"], name="sin"),
        h.make_node("If", ["cond"], ["branch"], name="if", then_branch=then_g, else_branch=else_g),
        h.make_node("Add", ["branch", "v"], ["y"], name="final_add"),
    ]
    inits = [_init("w_then", _f((4,), 5)), _init("limit", np.float32(2.0))]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [4])],
                  [h.make_tensor_value_info("y", T.FLOAT, [4])], inits, "if_outer")


def unsorted() -> onnx.ModelProto:
    """The residual diamond with its nodes stored out of topological order (valid for onnxruntime)."""
    m = residual_diamond()
    nodes = list(m.graph.node)
    order = [5, 2, 0, 6, 3, 1, 4]
    del m.graph.node[:]
    m.graph.node.extend(nodes[i] for i in order)
    return m


def external_data(directory) -> Path:
    """A chain of MatMuls whose weights live in an external data file; returns the .onnx path."""
    nodes, prev = [], "x"
    inits = []
    for i in range(4):
        inits.append(_init(f"w{i}", _f((64, 64), 10 + i) / 8))
        nodes.append(h.make_node("MatMul", [prev, f"w{i}"], [f"mm{i}"], name=f"matmul{i}"))
        nodes.append(h.make_node("Tanh", [f"mm{i}"], [f"t{i}"], name=f"tanh{i}"))
        prev = f"t{i}"
    nodes.append(h.make_node("Identity", [prev], ["y"], name="out"))
    model = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [2, 64])],
                   [h.make_tensor_value_info("y", T.FLOAT, [2, 64])], inits, "external")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "external.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="external.onnx.data", size_threshold=256)
    return path


IN_MEMORY = {
    "chain": chain,
    "residual_diamond": residual_diamond,
    "shape_late": shape_late,
    "early_output": early_output,
    "if_outer": if_outer,
    "unsorted": unsorted,
}
