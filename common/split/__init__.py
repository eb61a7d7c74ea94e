"""Split layer: cut any ONNX model at any node into Part I (UE) and Part II (network).

Defined terms: *rank* (a node's position in one fixed topological order), *cut* (a rank, or a node
name with `before`/`after`), *crossing tensors* (the tensors Part I produces that Part II consumes,
plus final outputs Part I already yields), *plan* (the resolved cut: both parts' inputs and outputs).

Modules, in the order a cut walks them: `cut` (rank-or-name parsing), `order` (topological order,
producers, constants, liveness), `crossing` (crossing intervals, every rank's set in one pass), `types`
(dtype and rank of crossing tensors, incl. the onnxruntime probe), `plan` (SplitPlan, manifest),
`parts` (Part I/II models and files), `verify` (run and compare), `graph` (SplitGraph, the facade).
The public names below load lazily, so `splitinfer.common.split.cut` stays cheap to import.
"""

from __future__ import annotations

_PUBLIC = {"SplitGraph", "SplitPlan", "consolidate", "consolidated_outputs", "split_model", "verify_split",
           "load_feeds", "reference_outputs", "file_sha256", "run_split", "random_feeds", "part_paths",
           "TensorInfo", "PassthroughInput", "NONDETERMINISTIC_OPS"}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        from splitinfer.common.split import graph

        return getattr(graph, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
