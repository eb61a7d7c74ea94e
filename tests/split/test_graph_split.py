"""Split engine: every rank of every hand-built graph, a real exported detector, manifests, errors.

Crossing sets are checked against a deliberately naive re-implementation of the definition (fixed
points, per-rank scans) written here independently of the engine's one-pass interval sweep.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

import graph_fixtures as gf
from splitinfer.common.core.errors import UserError
from splitinfer.common.split.graph import (
    SplitGraph,
    SplitPlan,
    consolidate,
    random_feeds,
    reference_outputs,
    run_split,
    split_model,
    verify_split,
)
from splitinfer.common.core.runtime import make_session

NANODET = Path(__file__).resolve().parents[2] / "common" / "assets" / "models" / "nanodet" / "model.onnx"


# ---------------------------------------------------------------------------------------------
# naive reference of the crossing-set definition


def _reads(graph) -> set[str]:
    """Outer-scope names a subgraph reads (recursive), computed naively."""
    local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for n in graph.node:
        local |= set(n.output)
    names = set()
    for n in graph.node:
        names |= {i for i in n.input if i}
        for a in n.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                names |= _reads(sub)
    return names - local


def _all_reads(node) -> set[str]:
    names = {i for i in node.input if i}
    for a in node.attribute:
        for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
            names |= _reads(sub)
    return names


def naive_crossing(model: onnx.ModelProto, nodes, r: int) -> set[str]:
    inits = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    const = set(inits)
    changed = True
    while changed:
        changed = False
        for n in nodes:
            reads = _all_reads(n)
            if (reads and reads <= const) or (not reads and n.op_type == "Constant"):
                if not set(n.output) <= const:
                    const |= set(n.output)
                    changed = True
    needed = {o.name for o in model.graph.output}
    live = set()
    changed = True
    while changed:
        changed = False
        for i, n in reversed(list(enumerate(nodes))):
            if i not in live and set(n.output) & needed:
                live.add(i)
                needed |= _all_reads(n)
                changed = True
    part2 = {i for i in live if i >= r}
    part1_made = set(inputs) | {o for i, n in enumerate(nodes) if i < r for o in n.output}
    for x in inputs:
        users = [i for i in part2 if x in _all_reads(nodes[i])]
        if users and all(nodes[i].op_type in ("Shape", "Size") for i in users):
            part2 -= set(users)
            part1_made |= {o for i in users for o in nodes[i].output}
    consumed = set().union(*[_all_reads(nodes[i]) for i in part2]) if part2 else set()
    return {t for t in consumed if t in part1_made and t not in const}


# ---------------------------------------------------------------------------------------------
# helpers


def check_rank(model, graph: SplitGraph, r: int, reference: dict, feeds: dict, sets=None, checker=True,
               sessions=True):
    """All properties one split must have; returns the plan (and runtime sessions if asked)."""
    plan = graph.plan(rank=r)
    assert plan.rank == r
    crossing = plan.crossing_names
    assert crossing == graph.crossing_at(r)
    if sets is not None:
        assert crossing == sets[r]
    assert len(set(crossing)) == len(crossing)
    assert set(crossing) == naive_crossing(model, graph.nodes, r), f"rank {r}"
    # manifest survives JSON
    again = SplitPlan.from_manifest(json.loads(json.dumps(plan.to_manifest())))
    assert again == plan
    assert [n for n, _ in plan.consolidation] == [o.name for o in model.graph.output]
    assert plan.part1_outputs[: len(crossing)] == crossing
    part1, part2 = graph.extract(plan)
    assert [o.name for o in part1.graph.output] == plan.part1_outputs
    assert [i.name for i in part2.graph.input] == plan.part2_inputs
    assert [o.name for o in part2.graph.output] == plan.part2_outputs
    assert len(part1.graph.value_info) == 0 and len(part2.graph.value_info) == 0  # no inferred shapes copied
    assert part1.ir_version <= 13 and part2.ir_version <= 13
    if checker:
        onnx.checker.check_model(part1)
        onnx.checker.check_model(part2)
    # verify_split loads both parts in onnxruntime and compares every output exactly
    report = verify_split(model, plan, feeds=feeds, parts=(part1, part2), reference=reference)
    assert report.ok, f"rank {r}: " + "\n".join(report.lines())
    assert [row.name for row in report.rows] == [o.name for o in model.graph.output]
    if not sessions:
        return plan, None
    s1, s2 = make_session(part1, device="cpu"), make_session(part2, device="cpu")
    assert s1.output_names == plan.part1_outputs
    return plan, (s1, s2)


# ---------------------------------------------------------------------------------------------
# every rank of every hand-built graph


@pytest.mark.parametrize("name", sorted(gf.IN_MEMORY))
def test_every_rank_of_hand_built_graphs(name):
    model = gf.IN_MEMORY[name]()
    graph = SplitGraph(model)
    sets = graph.all_crossing_sets()
    assert len(sets) == graph.num_nodes + 1 == len(model.graph.node) + 1
    # the analysed order is a topological permutation of the stored nodes
    assert sorted(n.name for n in graph.nodes) == sorted(n.name for n in model.graph.node)
    made = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer}
    for n in graph.nodes:
        assert _all_reads(n) <= made
        made |= set(n.output)
    feeds = random_feeds(model, seed=1)
    reference = reference_outputs(model, feeds)
    for r in range(graph.num_nodes + 1):
        plan, sessions = check_rank(model, graph, r, reference, feeds, sets)
        # run_split with the runtime's sessions gives the outputs in original order, exactly
        out = run_split(*sessions, plan, feeds)
        assert list(out) == [o.name for o in model.graph.output]
        for k, v in out.items():
            assert np.array_equal(v, reference[k])


def test_chain_constants_never_cross():
    model = gf.chain()
    graph = SplitGraph(model)
    assert {"scale_f", "k"} <= graph.constants
    r = graph.rank_of("mul")  # Cast(weight) and Constant were made before the cut
    plan = graph.plan(rank=r)
    assert plan.crossing_names == ["r"]
    assert plan.crossing[0].dtype == "float32" and plan.crossing[0].shape == [1, 4, 8, 8]
    _, part2 = graph.extract(plan)
    assert {"cast_weight", "const_k"} <= {n.name for n in part2.graph.node}  # Part II's own copies
    part1, _ = graph.extract(plan)
    assert {"cast_weight", "const_k"}.isdisjoint({n.name for n in part1.graph.node})
    assert graph.plan(rank=graph.rank_of("to_float")).crossing[0].dtype == "int32"


def test_residual_diamond_multi_branch_cut():
    graph = SplitGraph(gf.residual_diamond())
    plan = graph.plan(name="right_tanh")
    # graph input first, then by producer rank
    assert plan.crossing_names == ["x", "b1", "c1"]
    assert [(p.name, p.mode) for p in plan.passthrough_inputs] == [("x", "tensor")]
    assert plan.crossing[0].shape == ["batch", 6]  # symbolic dims kept


def test_shape_only_input_crosses_as_its_shape():
    model = gf.shape_late()
    graph = SplitGraph(model)
    p0 = graph.plan(rank=0)
    assert p0.crossing_names == ["x"] and p0.passthrough_inputs[0].mode == "tensor"
    for r in range(1, graph.num_nodes - 1):
        plan = graph.plan(rank=r)
        assert "x" not in plan.crossing_names and "xs" in plan.crossing_names
        (pt,) = plan.passthrough_inputs
        assert pt.name == "x" and pt.mode == "shape" and "count" in pt.shape_tensors
        assert dict(plan.consolidation)["count"] == "I"  # Size(x) hoisted into Part I
        xs = next(t for t in plan.crossing if t.name == "xs")
        assert xs.dtype == "int64" and xs.shape == [4]
        part1, part2 = graph.extract(plan)
        assert [i.name for i in part1.graph.input] == ["x"]
        assert "x" not in [i.name for i in part2.graph.input]
        assert not any(n.op_type in ("Shape", "Size") for n in part2.graph.node)
    # a non-square image of another size still works: the shape travels, not a dummy image
    feeds = {"x": np.random.default_rng(3).random((1, 3, 5, 7)).astype(np.float32)}
    report = verify_split(model, graph.plan(rank=3), feeds=feeds, graph=graph)
    assert report.ok and report.rows[0].shape == [1, 3, 5, 7]


def test_early_outputs_and_consolidation_order():
    model = gf.early_output()
    graph = SplitGraph(model)
    plan = graph.plan(rank=1)
    assert plan.consolidation == [("late", "II"), ("early", "I"), ("side", "II")]
    assert plan.crossing_names == ["x", "early"]  # early is a final output and feeds Part II
    assert plan.part1_final_outputs == ["early"]
    assert plan.part1_outputs == ["x", "early"]
    plan2 = graph.plan(rank=2)
    assert plan2.consolidation == [("late", "II"), ("early", "I"), ("side", "I")]
    part1, part2 = graph.extract(plan2)
    feeds = random_feeds(model)
    s1, s2 = make_session(part1, device="cpu"), make_session(part2, device="cpu")
    out1 = dict(zip(s1.output_names, s1.run(feeds)))
    out2 = dict(zip(s2.output_names, s2.run({"early": out1["early"]})))
    whole = make_session(model, device="cpu").run(feeds)
    for got, want in zip(consolidate(plan2, out1, out2), whole):
        assert np.array_equal(got, want)


def test_if_subgraph_outer_reads_cross():
    model = gf.if_outer()
    graph = SplitGraph(model)
    plan = graph.plan(name="if")  # before the If: t and u are read only inside its branches
    assert plan.crossing_names == ["t", "u", "cond", "v"]
    _, part2 = graph.extract(plan)
    assert "w_then" in {t.name for t in part2.graph.initializer}  # outer initializer read by a branch
    for x in (np.ones(4, np.float32), np.full(4, 0.1, np.float32)):  # then- and else-branch
        for r in range(graph.num_nodes + 1):
            report = verify_split(model, graph.plan(rank=r), feeds={"x": x}, graph=graph)
            assert report.ok, report.lines()
    # the engine's order puts producers of outer reads before the If even when stored after it
    m = gf.if_outer()
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend([nodes[i] for i in (2, 3, 4, 5, 0, 1, 6)])
    g2 = SplitGraph(m)
    assert not g2.was_sorted
    order = [n.name for n in g2.nodes]
    assert order.index("relu") < order.index("if") and order.index("neg") < order.index("if")


def test_edge_ranks_zero_and_n():
    model = gf.chain()
    graph = SplitGraph(model)
    p0 = graph.plan(rank=0)
    part1, part2 = graph.extract(p0)
    assert len(part1.graph.node) == 0 and p0.part1_outputs == ["x"]  # Part I passes the input on
    assert len(part2.graph.node) == len(model.graph.node)
    pn = graph.plan(rank=graph.num_nodes)
    assert pn.node_name is None and pn.crossing == [] and pn.part2_identity
    assert all(p == "I" for _, p in pn.consolidation)
    part1, part2 = graph.extract(pn)
    assert len(part2.graph.node) == 0 and [o.name for o in part2.graph.output] == ["y"]
    assert graph.plan(name="mean", flag="after").rank == graph.num_nodes
    assert graph.plan(rank=0, flag="after").rank == 1


def test_flags_names_and_errors():
    graph = SplitGraph(gf.chain())
    k = graph.node_names.index("relu")
    assert graph.rank_of("relu") == k and graph.rank_of("relu", "after") == k + 1
    assert graph.plan(name="relu", flag="after").node_name == "relu"
    for bad, match in [((graph.num_nodes + 1, "before"), "out of range"), ((-1, "before"), "out of range"),
                       ((graph.num_nodes, "after"), "out of range"), (("relux", "before"), "did you mean"),
                       (("relu", "sideways"), "unknown split flag")]:
        with pytest.raises(UserError, match=match):
            graph.rank_of(*bad)
    with pytest.raises(UserError):
        graph.plan()
    with pytest.raises(UserError):
        graph.plan(rank=1, name="relu")
    m = gf.chain()
    m.graph.node[1].name = "conv"  # two nodes named conv
    with pytest.raises(UserError, match="ambiguous"):
        SplitGraph(m).rank_of("conv")
    with pytest.raises(UserError, match="different model"):
        SplitGraph(gf.early_output()).extract(graph.plan(rank=2))


def test_external_data_model_every_rank(tmp_path):
    path = gf.external_data(tmp_path / "src")
    assert (path.parent / "external.onnx.data").stat().st_size > 4 * 64 * 64 * 4 - 1
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    out = tmp_path / "parts"
    n = len(onnx.load(str(path), load_external_data=False).graph.node)
    feeds = random_feeds(onnx.load(str(path), load_external_data=False))
    reference = reference_outputs(path, feeds)
    for r in range(n + 1):
        p1, p2, mf, plan = split_model(path, rank=r, out_dir=out)
        assert p1.name == f"external_part_I_node_{r}.onnx" and p2.name == f"external_part_II_node_{r}.onnx"
        manifest = json.loads(mf.read_text())
        assert mf.name == f"external_split_node_{r}.json"
        assert manifest["source_sha256"] == sha and manifest["rank"] == r and manifest["flag"] == "before"
        assert manifest["files"] == {"source": "external.onnx", "part1": p1.name, "part2": p2.name}
        assert manifest["crossing"] == [{"name": t.name, "dtype": t.dtype, "shape": t.shape} for t in plan.crossing]
        assert SplitPlan.load(mf) == plan
        report = verify_split(path, plan, feeds=feeds, parts=(p1, p2), reference=reference)
        assert report.ok, report.lines()
    # the files hold exactly what extract() builds (write_parts reuses serialised weights)
    graph = SplitGraph(onnx.load(str(path)))
    for r in (0, 3, n):
        p1, p2, _, plan = split_model(path, rank=r, out_dir=out, graph=graph)
        assert (onnx.load(str(p1)), onnx.load(str(p2))) == graph.extract(plan)
    # names work as well as ranks; default output directory is beside the model
    p1, _, _, plan = split_model(path, name="tanh1", flag="after")
    assert p1.parent == path.parent and plan.rank == 4 and plan.crossing_names == ["t1"]


# ---------------------------------------------------------------------------------------------
# a real exported detector


@pytest.fixture(scope="session")
def ssdlite(tmp_path_factory):
    """SSDlite320-MobileNetV3 with random weights, exported by the TorchScript exporter (opset 17)."""
    import torch  # a listed dependency: a broken install must fail here, not skip
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=91).eval()
    path = tmp_path_factory.mktemp("ssdlite") / "ssdlite.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.rand(1, 3, 320, 320), str(path), opset_version=17, dynamo=False,
                          input_names=["images"])
    return path


def _spread(n: int, k: int) -> list[int]:
    return sorted({round(i * n / (k - 1)) for i in range(k)})


def test_exported_detector_sampled_ranks(ssdlite, tmp_path):
    model = onnx.load(str(ssdlite))
    graph = SplitGraph(model)
    assert graph.num_nodes > 1000 and any(n.op_type == "If" for n in graph.nodes)
    sets = graph.all_crossing_sets()
    multi = max(range(graph.num_nodes + 1), key=lambda r: len(sets[r]))
    assert len(sets[multi]) > 1
    feeds = random_feeds(model, seed=0)
    reference = reference_outputs(ssdlite, feeds)
    assert reference[model.graph.output[0].name].size > 0  # real boxes to compare
    ranks = sorted(set(_spread(graph.num_nodes, 20)) | {multi})
    # the If node's neighbourhood: outer reads of its branches must cross
    ifs = [i for i, n in enumerate(graph.nodes) if n.op_type == "If"]
    ranks = sorted(set(ranks) | {ifs[0], ifs[0] + 1})
    for i, r in enumerate(ranks):
        plan, _ = check_rank(model, graph, r, reference, feeds, sets, checker=i % 5 == 0, sessions=False)
        if i % 7 == 0:
            graph.write_parts(plan, tmp_path / "p1.onnx", tmp_path / "p2.onnx")
            assert (onnx.load(str(tmp_path / "p1.onnx")), onnx.load(str(tmp_path / "p2.onnx"))) == graph.extract(plan)


def test_nanodet_every_rank():
    # Every rank's parts pass onnx.checker too: ranks 113-125 cut after a Reshape whose target shape
    # is computed at run time, so shape inference alone leaves their rank unknown.
    model = onnx.load(str(NANODET))
    graph = SplitGraph(model)
    sets = graph.all_crossing_sets()
    feeds = random_feeds(model, seed=0)
    reference = reference_outputs(NANODET, feeds)
    for r in range(graph.num_nodes + 1):
        check_rank(model, graph, r, reference, feeds, sets, checker=True, sessions=False)


def test_unknown_rank_crossing_keeps_its_element_type_when_the_probe_run_fails():
    # Reshape to a shape given as a graph input: shape inference cannot know the output's rank, and
    # random feeds (a shape of random ints) cannot run the model, so only onnxruntime's static
    # element type remains; Part II must still declare float32 for the crossing tensor.
    from onnx import TensorProto, helper as h

    graph = h.make_graph(
        [h.make_node("Reshape", ["x", "target"], ["r"], name="reshape"),
         h.make_node("Relu", ["r"], ["y"], name="relu")],
        "reshape_by_input",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
         h.make_tensor_value_info("target", TensorProto.INT64, [3])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    graph_ = SplitGraph(model)
    plan = graph_.plan(rank=1)
    assert [t.name for t in plan.crossing] == ["r"]
    assert plan.crossing[0].dtype == "float32"
    _, part2 = graph_.extract(plan)
    assert part2.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
