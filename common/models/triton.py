"""Split models in Triton Inference Server's model repository layout (onnxruntime backend, + an ensemble).

Why: engineers who put Part II in production often run NVIDIA Triton; it serves ONNX files with its
onnxruntime backend from a folder per model (`<name>/config.pbtxt` + `<name>/<version>/model.onnx`). For each
split this writes Part I and Part II as two such models and, where both parts have nodes, an *ensemble* that
chains them (the whole model's inputs in, its outputs out, Part I's final outputs taken from Part I), so one
repository serves the device side, the network side and the end-to-end check.

Terms: *split rank* as the split engine reads it; model names `<model>_r<rank>_part1`, `_part2` and
`<model>_r<rank>` (the ensemble); `max_batch_size: 0`, so `dims` are the full tensor shapes (-1 where the
model leaves a dimension open). Part II here is the ONNX part only: post-processing into detections is the
family's code (our network process and the KServe model do it; Triton returns the raw outputs).
tests/oip/test_triton_export.py parses every config.pbtxt with Triton's own ModelConfig protobuf.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from splitinfer.common.core.errors import UserError

TRITON_TYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
}


@dataclass
class Tensor:
    name: str
    dtype: str
    dims: list[int]


@dataclass
class ExportedSplit:
    rank: int
    part1: str
    part2: str
    ensemble: str | None


def _q(s: str) -> str:
    return json.dumps(s)  # a protobuf text-format string literal for the names ONNX uses


def _tensors_of(values) -> list[Tensor]:
    """Name, numpy dtype and Triton dims of ONNX value infos (graph inputs or outputs)."""
    from onnx import helper

    out = []
    for v in values:
        tt = v.type.tensor_type
        try:
            dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        except (KeyError, TypeError, ValueError):
            dtype = "?"
        if dtype not in TRITON_TYPES:
            raise UserError(f"tensor {v.name!r}: element type {dtype} has no Triton data type")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim] if tt.HasField("shape") else [-1]
        out.append(Tensor(v.name, dtype, dims))
    return out


def _io_block(kind: str, tensors: list[Tensor]) -> str:
    items = ",\n".join(f"  {{\n    name: {_q(t.name)}\n    data_type: {TRITON_TYPES[t.dtype]}\n"
                       f"    dims: [ {', '.join(str(d) for d in t.dims)} ]\n  }}" for t in tensors)
    return f"{kind} [\n{items}\n]\n"


def onnx_config(name: str, inputs: list[Tensor], outputs: list[Tensor], instances: int = 1, kind: str = "KIND_CPU") -> str:
    """config.pbtxt of an ONNX model for the onnxruntime backend."""
    return (f"name: {_q(name)}\nplatform: \"onnxruntime_onnx\"\nbackend: \"onnxruntime\"\nmax_batch_size: 0\n"
            + _io_block("input", inputs) + _io_block("output", outputs)
            + f"instance_group [\n  {{\n    count: {int(instances)}\n    kind: {kind}\n  }}\n]\n")


def _step(model: str, input_map: dict, output_map: dict) -> str:
    ins = "".join(f"      input_map {{ key: {_q(k)} value: {_q(v)} }}\n" for k, v in input_map.items())
    outs = "".join(f"      output_map {{ key: {_q(k)} value: {_q(v)} }}\n" for k, v in output_map.items())
    return f"    {{\n      model_name: {_q(model)}\n      model_version: -1\n{ins}{outs}    }}"


def ensemble_config(name: str, part1: str, part2: str, inputs: list[Tensor], outputs: list[Tensor],
                    p1_inputs: list[str], p1_outputs: list[str], p2_inputs: list[str], p2_outputs: list[str]) -> str:
    """config.pbtxt of the ensemble Part I -> Part II; ensemble tensors keep the model's own names."""
    steps = [_step(part1, {n: n for n in p1_inputs}, {n: n for n in p1_outputs}),
             _step(part2, {n: n for n in p2_inputs}, {n: n for n in p2_outputs})]
    return (f"name: {_q(name)}\nplatform: \"ensemble\"\nmax_batch_size: 0\n"
            + _io_block("input", inputs) + _io_block("output", outputs)
            + "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n")


def export_triton(model_path, ranks, out_dir, model_name: str | None = None, instances: int = 1,
                  gpu: bool = False, ensemble: bool = True, progress=None) -> list[ExportedSplit]:
    """Write Part I, Part II (and the ensemble) of each split rank into a Triton model repository."""
    import onnx

    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.split.graph import SplitGraph, file_sha256

    model_path = Path(model_path)
    base = model_name or (model_path.parent.name if model_path.name == "model.onnx" else model_path.stem)
    base = "".join(c if c.isalnum() or c in "_-" else "_" for c in base)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"output directory is a file: {out}")
    model = load_model(model_path)
    graph = SplitGraph(model, source_sha256=file_sha256(model_path))
    model_inputs = {t.name: t for t in _tensors_of(model.graph.input)}
    model_outputs = {t.name: t for t in _tensors_of(model.graph.output)}
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    done = []
    for rank in ranks:
        plan = graph.plan(rank=int(rank))
        if plan.part2_identity or not plan.part2_inputs:
            raise UserError(f"{model_path}: split {plan.rank} leaves Part II without nodes: nothing to serve")
        names = ExportedSplit(plan.rank, f"{base}_r{plan.rank}_part1", f"{base}_r{plan.rank}_part2",
                              f"{base}_r{plan.rank}" if ensemble else None)
        paths = [out / n / "1" / "model.onnx" for n in (names.part1, names.part2)]
        try:
            graph.write_parts(plan, *paths)
        except OSError as exc:
            raise UserError(f"cannot write {paths[0].parent}: {exc}") from None
        parts = [onnx.load(str(p), load_external_data=False).graph for p in paths]
        ios = [(_tensors_of(g.input), _tensors_of(g.output)) for g in parts]
        for name, (ins, outs), p in zip((names.part1, names.part2), ios, paths):
            (p.parent.parent / "config.pbtxt").write_text(onnx_config(name, ins, outs, instances, kind))
        if names.ensemble:
            (p1_in, p1_out), (p2_in, p2_out) = ios
            missing = [t.name for t in p2_in if t.name not in {x.name for x in p1_out} and t.name not in model_inputs]
            if missing:
                raise UserError(f"split {plan.rank}: Part II inputs {missing} come from neither Part I nor the model")
            ens_in = [model_inputs[t.name] for t in p1_in if t.name in model_inputs]
            extra = [model_inputs[t.name] for t in p2_in if t.name in model_inputs and t.name not in {x.name for x in ens_in}]
            ens_out = [model_outputs[n] for n, _ in plan.consolidation]
            folder = out / names.ensemble
            (folder / "1").mkdir(parents=True, exist_ok=True)
            (folder / "config.pbtxt").write_text(ensemble_config(
                names.ensemble, names.part1, names.part2, ens_in + extra, ens_out, [t.name for t in p1_in],
                [t.name for t in p1_out], [t.name for t in p2_in], [t.name for t in p2_out]))
        done.append(names)
        if progress is not None:
            progress.update(1)
    return done
