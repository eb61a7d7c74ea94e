"""Part II behind the Open Inference Protocol: names, datatypes, checks and the run, free of gRPC and protobuf.

Why a module of its own: two servers speak the Open Inference Protocol (OIP, KServe v2) for Part II: the
network process's own endpoint (server/oip.py, our protobuf-7 stubs) and a KServe `ModelServer`
(server/oip_kserve.py, in .venv-oip with protobuf < 7). Both take their rules from here, and this module
imports only numpy and the split engine's layers (core, split, families), never a generated stub.

Terms:
- *OIP model name*: `<model id>.r<rank>`, e.g. `nanodet.r60`: Part II of the repository's model `nanodet`
  cut before rank 60 (the split engine's rank). Part II exists for every rank, so every such name is a model.
- *inputs*: the crossing tensors, then Part I's final outputs (the model outputs Part I already made), by
  name, as raw contents (row-major, no padding). The datatype is the tensor's own (FP32 for NanoDet), or FP16
  for a float32 tensor sent as half precision (the `float16` codec of our own protocol): cast back here.
- *meta*: the family's preprocessing meta (image size, scale) as JSON in the request parameter `meta`;
  post-processing needs it to give boxes in pixels of the original image.
- *outputs*: `detections` (FP64 [N, 5]: x1 y1 x2 y2 score, pixels of the original image, best first) and
  `labels` (BYTES [N]); and, when a request names them, the model's raw outputs (after consolidation).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np

from splitinfer.server.errors import exhausted, invalid, not_found

DETECTIONS = "detections"
LABELS = "labels"
META_PARAMETER = "meta"
MAX_META_CHARS = 1 << 16
PLATFORM = "splitinfer_part2"
SERVER_NAME = "splitinfer"
NAME_PATTERN = re.compile(r"(?P<model>[A-Za-z0-9][A-Za-z0-9._-]{0,127})\.r(?P<rank>0|[1-9][0-9]{0,6})")  # fullmatch
MAX_OUTPUT_NAMES = 256  # requested output names a request may list (duplicates included)
REPLY_OVERHEAD_BYTES = 64 << 10  # a reply's bytes beside its raw contents: names, shapes, parameters

# numpy dtype name <-> OIP datatype (the protocol's tensor data types; BF16 has no numpy type here).
_TO_OIP = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64",
}
_FROM_OIP = {v: k for k, v in _TO_OIP.items()}


def oip_datatype(dtype) -> str:
    name = np.dtype(dtype).name
    if name not in _TO_OIP:
        raise invalid(f"numpy dtype {name} has no Open Inference Protocol datatype")
    return _TO_OIP[name]


def numpy_dtype(datatype: str) -> np.dtype:
    if datatype not in _FROM_OIP:
        raise invalid(f"datatype {datatype[:20]!r} is not supported (supported: {', '.join(_FROM_OIP)})")
    return np.dtype(_FROM_OIP[datatype])


def model_name(model_id: str, rank: int) -> str:
    return f"{model_id}.r{int(rank)}"


def parse_model_name(name: str) -> tuple[str, int]:
    """(model id, rank) of an OIP model name; INVALID_ARGUMENT naming the expected form otherwise."""
    m = NAME_PATTERN.fullmatch(name or "")  # never `match` with `$`: it matches before a trailing newline
    if m is None:
        shown = name if len(name) <= 80 else name[:80] + "..."
        raise not_found(f"model {shown!r}: an OIP model name is <model id>.r<split rank>, e.g. nanodet.r60")
    return m.group("model"), int(m.group("rank"))


@dataclass
class TensorSpec:
    """A tensor of the OIP model metadata: name, OIP datatype, shape (-1 where the model leaves it open)."""

    name: str
    datatype: str
    shape: list[int]


@dataclass
class Part2Result:
    detections: list
    outputs: dict  # model output name -> array, after consolidation
    seconds: dict = field(default_factory=dict)  # stage -> seconds (decode, part2, consolidate, postprocess)
    raw_bytes: int = 0


def _open_shape(shape) -> list[int]:
    if shape is None:
        return [-1]
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


def input_specs(part2) -> list[TensorSpec]:
    """What a request must carry for this Part II, in the order our own protocol sends it."""
    return [TensorSpec(name, oip_datatype(info.dtype) if info.dtype else "FP32", _open_shape(info.shape))
            for name, info in part2.expected.items()]


@dataclass
class SplitIO:
    """What the metadata of a split needs (a Part II's `expected` and `plan`), from the split engine's plan
    alone: answering ModelMetadata never builds a Part II."""

    model_id: str
    plan: object
    expected: dict  # name -> TensorInfo: crossing tensors, then Part I's final outputs


def split_io(model_id: str, graph, rank: int) -> SplitIO:
    plan = graph.plan(rank=rank)
    expected = {t.name: t for t in plan.crossing}
    for name in plan.part1_final_outputs:
        expected.setdefault(name, graph.tensor_info(name))
    return SplitIO(model_id, plan, expected)


def output_specs(part2, graph=None) -> list[TensorSpec]:
    specs = [TensorSpec(DETECTIONS, "FP64", [-1, 5]), TensorSpec(LABELS, "BYTES", [-1])]
    for name, _ in part2.plan.consolidation:
        info = graph.tensor_info(name) if graph is not None else None
        dtype = info.dtype if info is not None and info.dtype else "float32"
        specs.append(TensorSpec(name, oip_datatype(dtype), _open_shape(info.shape if info is not None else None)))
    return specs


def output_names(part2) -> list[str]:
    """Every output a request may name: `detections`, `labels`, then the model's outputs (consolidated)."""
    return [DETECTIONS, LABELS, *[n for n in part2.plan.output_names if n not in (DETECTIONS, LABELS)]]


def requested_outputs(names, part2) -> list[str]:
    """The outputs a request names, each once, in its order; at most MAX_OUTPUT_NAMES names, each one an
    output of this Part II; `detections` + `labels` when it names none. Checked before Part II runs."""
    names = list(names[:MAX_OUTPUT_NAMES + 1])
    if len(names) > MAX_OUTPUT_NAMES:
        raise invalid(f"the request names more than {MAX_OUTPUT_NAMES} outputs (Part II of split "
                      f"{part2.plan.rank} has {len(output_names(part2))})")
    known = output_names(part2)
    wanted = list(dict.fromkeys(names))
    for name in wanted:
        if name not in known:
            raise invalid(f"requested output {name[:80]!r} is not an output of split {part2.plan.rank} of "
                          f"{part2.model_id!r} (outputs: {known[:8]})")
    return wanted or [DETECTIONS, LABELS]


def check_reply_size(wanted, result, boxes, labels, limit: int) -> None:
    """RESOURCE_EXHAUSTED, before any output is copied or serialised, when the raw contents of the outputs
    `wanted` would not fit a reply of `limit` bytes (the server's send limit)."""
    sizes = {DETECTIONS: int(boxes.nbytes), LABELS: sum(4 + len(b) for b in labels)}
    total = REPLY_OVERHEAD_BYTES
    for name in wanted:
        total += sizes[name] if name in sizes else int(np.asarray(result.outputs[name]).nbytes)
    if total > limit:
        raise exhausted(f"the reply would be about {total} bytes with outputs {wanted[:8]}, over the server's "
                        f"message limit of {limit} bytes: ask for fewer outputs")


def parse_meta(text) -> dict:
    if text is None or text == "":
        return {}
    if not isinstance(text, str):
        raise invalid(f"request parameter {META_PARAMETER!r} must be a string (the family's meta as JSON)")
    if len(text) > MAX_META_CHARS:
        raise invalid(f"request parameter {META_PARAMETER!r} is {len(text)} characters (limit {MAX_META_CHARS})")
    from splitinfer.server.meta import clean_meta

    return clean_meta(text)  # the one check of meta (server/meta.py): families only see clean sizes


def _shape_matches(expected, got) -> bool:
    if expected is None:
        return True
    return len(expected) == len(got) and all(not isinstance(e, int) or e == g for e, g in zip(expected, got))


def check_tensor(part2, name: str, datatype: str, shape, max_bytes: int) -> tuple[np.dtype, np.dtype, list[int], int]:
    """(sent dtype, dtype Part II expects, shape, bytes the contents must have) of one request input: the
    name known, the datatype the tensor's own (or FP16 for FP32), the shape its own, within `max_bytes`."""
    info = part2.expected.get(name)
    if info is None:
        raise invalid(f"input {name[:80]!r} is not a tensor of split {part2.plan.rank} of {part2.model_id!r} "
                      f"(inputs: {list(part2.expected)[:8]})")
    dtype = numpy_dtype(datatype)
    want = np.dtype(info.dtype) if info.dtype else dtype
    if dtype != want and not (dtype == np.float16 and want == np.float32):
        raise invalid(f"input {name!r}: datatype {datatype}, Part II expects {oip_datatype(want)} (or FP16 for FP32)")
    shape = [int(d) for d in shape]
    if any(d < 0 for d in shape):
        raise invalid(f"input {name!r}: negative dimension in shape {shape}")
    if not _shape_matches(info.shape, shape):
        raise invalid(f"input {name!r}: shape {shape}, Part II expects {info.shape}")
    bound = part2.bounds.tensors.get(name) if part2.bounds is not None else None
    if bound is not None and bound.upper is not None and any(g > u for g, u in zip(shape, bound.upper)):
        raise exhausted(f"input {name!r}: shape {shape}, but split {part2.plan.rank} of {part2.model_id!r} can need "
                        f"at most {list(bound.upper)} (server/limits.py)")
    count = 1
    for d in shape:
        count *= d
        if count * dtype.itemsize > max_bytes:
            raise exhausted(f"input {name!r}: shape {shape} x {datatype} exceeds the limit of {max_bytes} bytes")
    return dtype, want, shape, count * dtype.itemsize


def tensor_from_raw(part2, name: str, datatype: str, shape, raw, max_bytes: int) -> np.ndarray:
    """One request input as the array Part II expects, from its raw contents: checked by `check_tensor`
    and the byte count equal to shape x datatype before anything is allocated; FP16 cast back to float32."""
    dtype, want, shape, nbytes = check_tensor(part2, name, datatype, shape, max_bytes)
    if len(raw) != nbytes:
        raise invalid(f"input {name!r}: {len(raw)} bytes of raw contents, shape {shape} x {datatype} needs {nbytes}")
    arr = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)
    return arr.astype(want) if dtype != want else arr


def check_complete(part2, names) -> None:
    missing = [n for n in part2.expected if n not in names]
    seen, duplicated = set(), []
    for n in names:
        if n in seen:
            duplicated.append(n)
        seen.add(n)
    if missing or duplicated:
        raise invalid(f"inputs do not match split {part2.plan.rank} of {part2.model_id!r}: missing {missing[:8]}, "
                      f"duplicated {duplicated[:8]}")


def run_part2(part2, arrays: dict, meta: dict) -> Part2Result:
    """Part II, consolidation and the family's post-processing on checked inputs."""
    from splitinfer.common.core.errors import UserError
    from splitinfer.common.split.consolidate import consolidated_outputs

    plan = part2.plan
    t1 = time.perf_counter()
    out2 = {}
    if part2.session is not None:
        try:
            values = part2.session.run({n: arrays[n] for n in plan.part2_inputs})
        except Exception as exc:  # onnxruntime errors: the request's values broke Part II
            raise invalid(f"Part II failed on the request's tensors ({type(exc).__name__}: {str(exc)[:300]})") from None
        out2 = dict(zip(part2.session.output_names, values))
    t2 = time.perf_counter()
    outputs = consolidated_outputs(plan, arrays, out2)
    t3 = time.perf_counter()
    try:
        dets = part2.family.postprocess(outputs, meta)
    except (UserError, KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise invalid(f"post-processing failed (check the request parameter {META_PARAMETER!r}): "
                      f"{type(exc).__name__}: {str(exc)[:300]}") from None
    t4 = time.perf_counter()
    raw = sum(int(a.nbytes) for a in arrays.values())
    return Part2Result(dets, outputs, {"part2": t2 - t1, "consolidate": t3 - t2, "postprocess": t4 - t3}, raw)


def detection_arrays(dets) -> tuple[np.ndarray, np.ndarray]:
    """`detections` (float64 [N, 5]) and `labels` (object array of bytes [N]) of a result."""
    boxes = np.array([[d.x1, d.y1, d.x2, d.y2, d.score] for d in dets], dtype=np.float64).reshape(len(dets), 5)
    labels = np.array([d.label.encode() for d in dets], dtype=object)
    return boxes, labels


def detections_from_arrays(boxes, labels) -> list:
    """The inverse of `detection_arrays` (what a client reads back)."""
    from splitinfer.common.core.detections import Detection

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    out = []
    for row, label in zip(boxes.tolist(), list(labels)):
        text = label.decode() if isinstance(label, (bytes, bytearray)) else str(label)
        out.append(Detection(text, row[0], row[1], row[2], row[3], row[4]))
    return out


def serialize_bytes_tensor(values) -> bytes:
    """BYTES raw contents as the protocol lays them out: each element as a 4-byte little-endian length, then
    its bytes."""
    parts = []
    for v in values:
        b = v if isinstance(v, (bytes, bytearray)) else str(v).encode()
        parts.append(len(b).to_bytes(4, "little"))
        parts.append(bytes(b))
    return b"".join(parts)


def deserialize_bytes_tensor(raw: bytes, count_limit: int = 1 << 20) -> list[bytes]:
    out, pos, view = [], 0, memoryview(raw)
    while pos < len(view):
        if pos + 4 > len(view) or len(out) >= count_limit:
            raise ValueError("BYTES contents truncated or too many elements")
        n = int.from_bytes(view[pos:pos + 4], "little")
        pos += 4
        if pos + n > len(view):
            raise ValueError("BYTES element runs past the end of the contents")
        out.append(bytes(view[pos:pos + n]))
        pos += n
    return out
