"""Measured sizes for the size analysis: shapes and bytes of the crossing tensors on one real inference.

Why one run for all ranks: every tensor that crosses somewhere is exposed as a graph output of one
onnxruntime session (core/runtime.py `exposing_session`), so measuring all ranks costs one inference, not
one per rank. Exposed outputs stay in memory until the run ends; when the static estimate of their total
exceeds `max_exposed_bytes` they are measured in a few *chunks* (still independent of the number of ranks).
"""

from __future__ import annotations

import numpy as np
import onnx

from splitinfer.common.core.errors import UserError
from splitinfer.common.studies.inputs import graph_inputs
from splitinfer.common.studies.static_types import static_bytes

DEFAULT_MAX_EXPOSED_BYTES = 6 * 10**9


def _ort_dtype_name(type_str: str) -> str:
    inner = type_str[len("tensor("):-1] if type_str.startswith("tensor(") else type_str
    return {"float": "float32", "double": "float64"}.get(inner, inner)


def chunk_by_bytes(names: list[str], types: dict, max_exposed_bytes: int) -> list[list[str]]:
    """`names` in order, cut into chunks whose static bytes (unknown counts 0) stay within `max_exposed_bytes`."""
    chunks, current, current_bytes = [], [], 0
    for n in names:
        b = static_bytes(types.get(n)) or 0
        if current and current_bytes + b > max_exposed_bytes:
            chunks.append(current)
            current, current_bytes = [], 0
        current.append(n)
        current_bytes += b
    chunks.append(current)
    return chunks


def measure_tensors(model: onnx.ModelProto, names: list[str], feeds: dict, device: str = "cpu",
                    types: dict | None = None, max_exposed_bytes: int = DEFAULT_MAX_EXPOSED_BYTES,
                    progress: bool = False) -> tuple[dict, int]:
    """Shapes and bytes of the named tensors on a real inference: {name: (shape, dtype, bytes)}, runs.

    Every wanted tensor is declared a graph output of one session and fetched as an OrtValue (shape and
    size read without copying the data). Graph inputs are taken from `feeds`.
    """
    import onnxruntime as ort

    from splitinfer.common.core.runtime import exposing_session, run_exposed

    types = types or {}
    result = {}
    inputs = {vi.name for vi in graph_inputs(model)}
    for n in names:
        if n in inputs and n in feeds:
            a = np.asarray(feeds[n])
            result[n] = (list(a.shape), a.dtype.name, int(a.nbytes))
    wanted = [n for n in dict.fromkeys(names) if n not in result]
    if not wanted:
        return result, 0
    chunks = chunk_by_bytes(wanted, types, max_exposed_bytes)
    ort_feeds = {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()
                 if k in inputs}
    iterator = chunks
    if progress and len(chunks) > 1:
        from splitinfer.common.core.progress import bar as tqdm

        iterator = tqdm(chunks, desc="measuring", unit="run", leave=False)
    for chunk in iterator:
        elem_types = {n: tp.tensor_type.elem_type for n in chunk
                      if (tp := types.get(n)) is not None and tp.HasField("tensor_type")}
        sess = exposing_session(model, chunk, elem_types=elem_types, device=device)
        try:
            values = run_exposed(sess, ort_feeds)
        except Exception as exc:
            raise UserError(f"inference failed while measuring intermediate tensors: {exc}") from None
        for n, v in zip(sess.output_names, values):
            if v.is_tensor():
                result[n] = (list(v.shape()), _ort_dtype_name(v.data_type()), int(v.tensor_size_in_bytes()))
        del values, sess
    return result, len(chunks)
