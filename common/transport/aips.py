"""The 3GPP intermediate-data header: a frame as an "AI Parameter Set" (AIPS) in TLV framing.

Why: S4-260189 proposes that split-inference intermediate data travel with an *AI Parameter Set*: per tensor
a tensor id, its length (derived from its shape and element type), the partition id (formerly "split point
id") and the compression profile id, in type-length-value framing, so that any transport (RTP, HTTP, a
file) can carry a frame without our gRPC schema. This module serialises one frame of our wire format
(proto/splitinfer.proto: SessionSetup + FramePart + TensorHeader + chunks) to such a TLV record and back,
one field to one field; docs/aips.md has the mapping table.

Terms:
- *TLV*: type (uint16, big-endian), length (uint32, big-endian, bytes of the value), value. A *container*
  TLV's value is itself a sequence of TLVs. Unknown types are skipped (a newer writer may add fields).
- *partition id*: our split rank (`SplitPoint.rank`); a split named by node travels as `PARTITION_NODE` + flag.
- *compression profile id*: our codec id (`TensorHeader.codec_id`: 0 none, 1 float16, 2 zstd, 8xx NNC),
  with its parameters (`codec_params`).
- *tensor length*: bytes of the decoded tensor, shape x element size; never sent, always derived (and
  checked against the payload for the identity profile 0).
- Not carried: `part`, `part_count`, `chunk_count` and chunk indices: they cut a frame to gRPC's message
  limit; a TLV record carries each payload whole (up to 4 GiB - 1 bytes per tensor).

Parsing is bounded: every length is checked against what remains before anything is read, counts and
string sizes have limits, nesting is two levels deep, and payloads are views of the input (no copy). The
limits (docs/aips.md lists them), each refused with an AIPSError naming it: MAX_TENSORS tensors per record,
MAX_PARAMS compression parameters per tensor (keys unique), MAX_RANK dimensions, MAX_NAME bytes of a tensor
name or partition node, 128 of a model id, MAX_META of meta, MAX_PARAM_KEY / MAX_PARAM_VALUE of a parameter,
and per container at most 8 + MAX_EXTRA_FIELDS fields beside its repeated ones (tensors, parameters).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

MAGIC_VERSION = 1

# Type codes. Containers: AIPS (the record), TENSOR (one per tensor), PARAM (one codec parameter).
T_AIPS = 0x4149  # "AI"
T_VERSION = 0x0001
T_FRAME_ID = 0x0002
T_TIMESTAMP_NS = 0x0003
T_MODEL_ID = 0x0004
T_PARTITION_ID = 0x0005
T_PARTITION_NODE = 0x0006
T_PARTITION_FLAG = 0x0007
T_META = 0x0008
T_TENSOR = 0x0010
T_TENSOR_ID = 0x0011
T_TENSOR_NAME = 0x0012
T_ELEMENT_TYPE = 0x0013
T_SHAPE = 0x0014
T_COMPRESSION_PROFILE_ID = 0x0015
T_COMPRESSION_PARAM = 0x0016
T_PARAM_KEY = 0x0017
T_PARAM_VALUE = 0x0018
T_ENCODED_LENGTH = 0x0019
T_PAYLOAD = 0x001A

FLAGS = {"before": 0, "after": 1}
_HEAD = struct.Struct(">HI")
MAX_TENSORS = 4096
MAX_RANK = 32
MAX_NAME = 4096
MAX_META = 1 << 16
MAX_PARAMS = 64
MAX_PARAM_KEY = 256
MAX_PARAM_VALUE = 4096
MAX_EXTRA_FIELDS = 16  # unknown (newer) fields a container may carry beside its own
ELEMENT_TYPES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                 "float16", "float32", "float64")


class AIPSError(ValueError):
    """A record that breaks the TLV format or this module's limits (the message names the field)."""


@dataclass
class AIPSTensor:
    tensor_id: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    profile_id: int
    params: dict[str, str]
    payload: bytes | memoryview

    @property
    def tensor_length(self) -> int:
        """Bytes of the decoded tensor, derived from shape and element type."""
        n = np.dtype(self.dtype).itemsize
        for d in self.shape:
            n *= d
        return n

    def __eq__(self, other) -> bool:
        return isinstance(other, AIPSTensor) and (
            self.tensor_id, self.name, self.dtype, tuple(self.shape), self.profile_id, dict(self.params),
            bytes(self.payload)) == (other.tensor_id, other.name, other.dtype, tuple(other.shape),
                                     other.profile_id, dict(other.params), bytes(other.payload))


@dataclass
class AIPSFrame:
    frame_id: int
    model_id: str
    partition_id: int | None  # split rank; None when the split is named by node
    tensors: list[AIPSTensor] = field(default_factory=list)
    partition_node: str = ""
    partition_flag: str = "before"
    timestamp_ns: int = 0
    meta_json: str = ""


# ----------------------------------------------------------------------------------------------
# writing


def _tlv(t: int, value: bytes | memoryview) -> list:
    if len(value) > 0xFFFFFFFF:
        raise AIPSError(f"TLV type 0x{t:04x}: value of {len(value)} bytes exceeds 4 GiB - 1")
    return [_HEAD.pack(t, len(value)), value]


def _text(t: int, s: str) -> list:
    return _tlv(t, s.encode("utf-8"))


def _tensor_tlv(t: AIPSTensor) -> list:
    if t.dtype not in ELEMENT_TYPES:
        raise AIPSError(f"tensor {t.name!r}: element type {t.dtype!r} has no AIPS code (known: {ELEMENT_TYPES})")
    body = _tlv(T_TENSOR_ID, struct.pack(">I", t.tensor_id)) + _text(T_TENSOR_NAME, t.name)
    body += _text(T_ELEMENT_TYPE, t.dtype)
    body += _tlv(T_SHAPE, struct.pack(f">{len(t.shape)}q", *t.shape))
    body += _tlv(T_COMPRESSION_PROFILE_ID, struct.pack(">I", t.profile_id))
    for k, v in sorted(t.params.items()):
        inner = _text(T_PARAM_KEY, str(k)) + _text(T_PARAM_VALUE, str(v))
        body += _tlv(T_COMPRESSION_PARAM, b"".join(inner))
    body += _tlv(T_ENCODED_LENGTH, struct.pack(">Q", len(t.payload)))
    body += _tlv(T_PAYLOAD, t.payload)
    return _tlv(T_TENSOR, b"".join(body))


def encode(frame: AIPSFrame) -> bytes:
    """The frame as one AIPS TLV record."""
    if frame.partition_flag not in FLAGS:
        raise AIPSError(f"partition flag {frame.partition_flag!r} is neither 'before' nor 'after'")
    body = _tlv(T_VERSION, bytes([MAGIC_VERSION])) + _tlv(T_FRAME_ID, struct.pack(">Q", frame.frame_id))
    body += _tlv(T_TIMESTAMP_NS, struct.pack(">q", frame.timestamp_ns)) + _text(T_MODEL_ID, frame.model_id)
    if frame.partition_id is not None:
        body += _tlv(T_PARTITION_ID, struct.pack(">I", frame.partition_id))
    if frame.partition_node:
        body += _text(T_PARTITION_NODE, frame.partition_node)
    body += _tlv(T_PARTITION_FLAG, bytes([FLAGS[frame.partition_flag]]))
    if frame.meta_json:
        body += _text(T_META, frame.meta_json)
    for t in frame.tensors:
        body += _tensor_tlv(t)
    return b"".join(_tlv(T_AIPS, b"".join(body)))


# ----------------------------------------------------------------------------------------------
# reading


def _items(buf: memoryview, where: str, limit: int):
    """(type, value view) of each TLV in `buf`, lengths checked before reading; at most `limit` items."""
    pos, count = 0, 0
    while pos < len(buf):
        if len(buf) - pos < _HEAD.size:
            raise AIPSError(f"{where}: {len(buf) - pos} trailing bytes, a TLV header needs {_HEAD.size}")
        t, n = _HEAD.unpack_from(buf, pos)
        pos += _HEAD.size
        if n > len(buf) - pos:
            raise AIPSError(f"{where}: TLV type 0x{t:04x} says {n} bytes, only {len(buf) - pos} remain")
        count += 1
        if count > limit:
            raise AIPSError(f"{where}: more than {limit} fields")
        yield t, buf[pos:pos + n]
        pos += n


def _fields(buf: memoryview, where: str, limit: int, repeated=()) -> dict:
    out: dict = {}
    for t, v in _items(buf, where, limit):
        if t in repeated:
            out.setdefault(t, []).append(v)
        elif t in out:
            raise AIPSError(f"{where}: field 0x{t:04x} appears twice")
        else:
            out[t] = v
    return out


def _uint(v: memoryview, size: int, what: str, signed: bool = False) -> int:
    if len(v) != size:
        raise AIPSError(f"{what}: {len(v)} bytes, expected {size}")
    return int.from_bytes(v, "big", signed=signed)


def _str(v: memoryview, what: str, limit: int) -> str:
    if len(v) > limit:
        raise AIPSError(f"{what}: {len(v)} bytes (limit {limit})")
    try:
        return bytes(v).decode("utf-8")
    except UnicodeDecodeError:
        raise AIPSError(f"{what}: not UTF-8") from None


def _need(fields: dict, t: int, what: str):
    if t not in fields:
        raise AIPSError(f"{what} is missing")
    return fields[t]


def _read_tensor(v: memoryview, index: int, max_tensor_bytes: int) -> AIPSTensor:
    where = f"tensor {index}"
    f = _fields(v, where, 8 + MAX_EXTRA_FIELDS + MAX_PARAMS, repeated=(T_COMPRESSION_PARAM,))
    name = _str(_need(f, T_TENSOR_NAME, f"{where}: name"), f"{where}: name", MAX_NAME)
    where = f"tensor {index} ({name[:80]!r})"
    dtype = _str(_need(f, T_ELEMENT_TYPE, f"{where}: element type"), f"{where}: element type", 16)
    if dtype not in ELEMENT_TYPES:
        raise AIPSError(f"{where}: element type {dtype!r} unknown (known: {', '.join(ELEMENT_TYPES)})")
    raw_shape = _need(f, T_SHAPE, f"{where}: shape")
    if len(raw_shape) % 8 or len(raw_shape) // 8 > MAX_RANK:
        raise AIPSError(f"{where}: shape of {len(raw_shape)} bytes (8 per dimension, at most {MAX_RANK})")
    shape = struct.unpack(f">{len(raw_shape) // 8}q", raw_shape)
    if any(d < 0 for d in shape):
        raise AIPSError(f"{where}: negative dimension in shape {list(shape)}")
    params = {}
    given = f.get(T_COMPRESSION_PARAM, [])
    if len(given) > MAX_PARAMS:
        raise AIPSError(f"{where}: {len(given)} compression parameters (limit {MAX_PARAMS})")
    for p in given:
        pf = _fields(p, f"{where}: compression parameter", 2 + MAX_EXTRA_FIELDS)
        key = _str(_need(pf, T_PARAM_KEY, f"{where}: parameter key"), f"{where}: parameter key", MAX_PARAM_KEY)
        if key in params:
            raise AIPSError(f"{where}: compression parameter {key[:80]!r} given twice")
        params[key] = _str(_need(pf, T_PARAM_VALUE, f"{where}: parameter value"), f"{where}: parameter value",
                           MAX_PARAM_VALUE)
    tensor = AIPSTensor(
        tensor_id=_uint(_need(f, T_TENSOR_ID, f"{where}: tensor id"), 4, f"{where}: tensor id"),
        name=name, dtype=dtype, shape=tuple(shape),
        profile_id=_uint(_need(f, T_COMPRESSION_PROFILE_ID, f"{where}: compression profile id"), 4,
                         f"{where}: compression profile id"),
        params=params, payload=_need(f, T_PAYLOAD, f"{where}: payload"))
    declared = _uint(_need(f, T_ENCODED_LENGTH, f"{where}: encoded length"), 8, f"{where}: encoded length")
    if declared != len(tensor.payload):
        raise AIPSError(f"{where}: encoded length says {declared} bytes, payload has {len(tensor.payload)}")
    length = tensor.tensor_length
    if length > max_tensor_bytes:
        raise AIPSError(f"{where}: tensor length {length} bytes exceeds the limit of {max_tensor_bytes}")
    if tensor.profile_id == 0 and length != len(tensor.payload):
        raise AIPSError(f"{where}: profile 0 (none) payload has {len(tensor.payload)} bytes, shape {list(shape)} "
                        f"x {dtype} is {length}")
    return tensor


def decode(data, max_bytes: int = 1 << 30, max_tensor_bytes: int = 1 << 32) -> AIPSFrame:
    """An AIPS TLV record back to a frame. Payloads are views into `data` (keep it alive)."""
    buf = memoryview(data).cast("B")
    if len(buf) > max_bytes:
        raise AIPSError(f"record of {len(buf)} bytes exceeds the limit of {max_bytes}")
    top = list(_items(buf, "record", 1))
    if len(top) != 1 or top[0][0] != T_AIPS:
        raise AIPSError(f"record: expected one AIPS TLV (type 0x{T_AIPS:04x}), got {[hex(t) for t, _ in top]}")
    f = _fields(top[0][1], "AIPS", 8 + MAX_EXTRA_FIELDS + MAX_TENSORS, repeated=(T_TENSOR,))
    if len(f.get(T_TENSOR, [])) > MAX_TENSORS:
        raise AIPSError(f"AIPS: {len(f[T_TENSOR])} tensors (limit {MAX_TENSORS})")
    version = _uint(_need(f, T_VERSION, "AIPS version"), 1, "AIPS version")
    if version != MAGIC_VERSION:
        raise AIPSError(f"AIPS version {version} not supported (this reader: {MAGIC_VERSION})")
    flag_code = _uint(_need(f, T_PARTITION_FLAG, "partition flag"), 1, "partition flag")
    flags = {v: k for k, v in FLAGS.items()}
    if flag_code not in flags:
        raise AIPSError(f"partition flag {flag_code} unknown (0 before, 1 after)")
    frame = AIPSFrame(
        frame_id=_uint(_need(f, T_FRAME_ID, "frame id"), 8, "frame id"),
        model_id=_str(_need(f, T_MODEL_ID, "model id"), "model id", 128),
        partition_id=_uint(f[T_PARTITION_ID], 4, "partition id") if T_PARTITION_ID in f else None,
        partition_node=_str(f[T_PARTITION_NODE], "partition node", MAX_NAME) if T_PARTITION_NODE in f else "",
        partition_flag=flags[flag_code],
        timestamp_ns=_uint(_need(f, T_TIMESTAMP_NS, "timestamp"), 8, "timestamp", signed=True),
        meta_json=_str(f[T_META], "meta", MAX_META) if T_META in f else "",
    )
    if frame.partition_id is None and not frame.partition_node:
        raise AIPSError("neither partition id nor partition node is given")
    frame.tensors = [_read_tensor(v, i, max_tensor_bytes) for i, v in enumerate(f.get(T_TENSOR, []))]
    ids = [t.tensor_id for t in frame.tensors]
    if ids != list(range(len(ids))):
        raise AIPSError(f"tensor ids must be 0, 1, ... in order (the frame's tensor index), got {ids[:16]}")
    return frame


# ----------------------------------------------------------------------------------------------
# mapping from and to our wire format (proto/splitinfer.proto via splitinfer.common.transport.wire)


def from_wire(setup, frame_id: int, tensors, timestamp_ns: int = 0, meta_json: str = "") -> AIPSFrame:
    """An AIPS frame from a SessionSetup and the frame's tensors (wire.EncodedTensor or wire.ReceivedTensor)."""
    point = setup.split.WhichOneof("point")
    return AIPSFrame(
        frame_id=int(frame_id), model_id=setup.model_id,
        partition_id=int(setup.split.rank) if point == "rank" else None,
        partition_node=setup.split.node if point == "node" else "",
        partition_flag=setup.split.flag or "before", timestamp_ns=int(timestamp_ns), meta_json=meta_json,
        tensors=[AIPSTensor(i, t.name, t.dtype, tuple(int(d) for d in t.shape), int(t.codec_id),
                            dict(t.codec_params), t.payload) for i, t in enumerate(tensors)])


def to_wire(frame: AIPSFrame):
    """(SessionSetup, [wire.EncodedTensor]) of an AIPS frame: what `wire.frame_messages` sends."""
    from splitinfer.common.transport import wire
    from splitinfer.common.transport.proto import splitinfer_pb2 as pb

    split = (pb.SplitPoint(rank=frame.partition_id, flag=frame.partition_flag) if frame.partition_id is not None
             else pb.SplitPoint(node=frame.partition_node, flag=frame.partition_flag))
    codec_id = frame.tensors[0].profile_id if frame.tensors else 0
    setup = pb.SessionSetup(model_id=frame.model_id, split=split, codec=pb.CodecProfile(codec_id=codec_id))
    tensors = [wire.EncodedTensor(t.name, t.dtype, tuple(t.shape), t.profile_id, dict(t.params), t.payload,
                                  t.tensor_length) for t in frame.tensors]
    return setup, tensors
