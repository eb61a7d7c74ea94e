"""Loading and saving ONNX models with errors a user can read and files onnxruntime accepts.

onnx 1.23 writes IR version 14 by default but onnxruntime 1.31/1.32 read at most 13, so
every model we write is capped at `MAX_ORT_IR_VERSION`. Models over 2 GB use external data.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from splitinfer.common.core.errors import UserError

MAX_ORT_IR_VERSION = 13
_PROTOBUF_LIMIT = 2**31 - 1


def load_model(path: str | Path, load_external_data: bool = True) -> onnx.ModelProto:
    """Load an ONNX file, raising UserError naming the file if it is missing or not ONNX."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model file not found: {path}")
    if not path.is_file():
        raise UserError(f"model path is not a file: {path}")
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:
        raise UserError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node and not model.graph.output:
        raise UserError(f"{path}: not an ONNX model (no graph nodes or outputs)")
    return model


def cap_ir_version(model: onnx.ModelProto) -> onnx.ModelProto:
    """Lower the IR version so onnxruntime 1.31/1.32 load the model (they accept <= 13)."""
    if model.ir_version > MAX_ORT_IR_VERSION:
        model.ir_version = MAX_ORT_IR_VERSION
    return model


def save_model(model: onnx.ModelProto, path: str | Path) -> Path:
    """Save with a capped IR version; models too large for one protobuf go to external data."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cap_ir_version(model)
    if model.ByteSize() > _PROTOBUF_LIMIT - 1024:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))
    return path


def with_outputs(model: onnx.ModelProto, names, elem_types: dict | None = None,
                 replace: bool = False) -> onnx.ModelProto:
    """A copy of `model` whose graph outputs also (or, with `replace`, only) are the tensors `names`.

    Exposing intermediate tensors as outputs lets one onnxruntime run return them. `elem_types`
    (name -> TensorProto element type) declares their element type where known; the rest stay untyped,
    which onnxruntime accepts. Names already declared as outputs are not repeated.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    if replace:
        del m.graph.output[:]
    declared = {o.name for o in m.graph.output}
    for name in dict.fromkeys(names):
        if name in declared:
            continue
        vi = m.graph.output.add()
        vi.name = name
        if elem_types and elem_types.get(name):
            vi.type.tensor_type.elem_type = int(elem_types[name])
    return cap_ir_version(m)
