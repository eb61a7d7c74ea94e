"""numpy tensors <-> the protobuf wire format, chunked under a message limit and reassembled with checks.

Why the payload bytes are framed by hand: upb copies a `bytes` field when it is set, again when the
message is serialized, again when it is parsed and once more every time the field is read (measured:
about 50 ms of copying for a 16 MB tensor). Here the small headers go through protobuf while chunk bytes
are written and read in place: the sender copies each payload once (into the message handed to gRPC);
the receiver reads it as a memoryview slice of the received message (no copy for a one-chunk tensor,
one copy into a preallocated buffer for a chunked one). The result is ordinary protobuf (tests compare
it with protobuf's own serialization), so any other protobuf client can speak it.

Message layout (proto/splitinfer.proto): a frame is one or more `FramePart`s; part 0 carries the
tensor headers; chunks follow in order (tensor 0 chunk 0, 0/1, ..., 1/0, ...). `FrameAssembler`
rejects missing, duplicated and out-of-order parts and chunks with a message naming the problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from google.protobuf.message import DecodeError

from splitinfer.common.transport.proto import splitinfer_pb2 as pb

MIB = 1 << 20
DEFAULT_MAX_MESSAGE_BYTES = 4 * MIB  # gRPC's own default receive limit
DEFAULT_MAX_FRAME_BYTES = 1 << 30  # a frame's payloads together (memory guard on the server)
ALLOWED_DTYPES = frozenset({"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
                            "uint32", "uint64", "bool"})

_U32 = 0xFFFFFFFF
_ENVELOPE_MAX = 1 + 10  # tag + length varint of the FramePart inside StreamRequest / InferRequest
_CHUNK_OVERHEAD_MAX = (1 + 10) + (1 + 5) + (1 + 5) + (1 + 10)  # chunks tag+len, tensor, index, data tag+len


def _tag(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _num(message, name: str) -> int:
    return message.DESCRIPTOR.fields_by_name[name].number


# Field numbers read from the generated descriptors, so a change in the .proto cannot desynchronise them.
_F_SETUP = _num(pb.StreamRequest, "setup")
_F_FRAME = _num(pb.StreamRequest, "frame")
assert (_num(pb.InferRequest, "setup"), _num(pb.InferRequest, "frame")) == (_F_SETUP, _F_FRAME)
_F_CHUNKS = _num(pb.FramePart, "chunks")
_F_CH_TENSOR, _F_CH_INDEX, _F_CH_DATA = (_num(pb.TensorChunk, n) for n in ("tensor", "index", "data"))
_TAG_FRAME = _tag(_F_FRAME, 2)
_TAG_SETUP = _tag(_F_SETUP, 2)
_TAG_CHUNKS = _tag(_F_CHUNKS, 2)
_TAG_CH_TENSOR = _tag(_F_CH_TENSOR, 0)
_TAG_CH_INDEX = _tag(_F_CH_INDEX, 0)
_TAG_CH_DATA = _tag(_F_CH_DATA, 2)


class WireError(ValueError):
    """A message that breaks the wire format. `code` names the gRPC status the server answers with: the
    class's, or the one given (a codec's error keeps its own, e.g. a missing reference's FAILED_PRECONDITION)."""

    code = "INVALID_ARGUMENT"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code or self.code  # the class's own unless given

    def within(self, place: str) -> "WireError":
        """The same error, its message prefixed by where it happened (`frame 7: ...`), its code kept."""
        return type(self)(f"{place}: {self}", self.code)


class TooLarge(WireError):
    """A frame or message beyond a configured limit."""

    code = "RESOURCE_EXHAUSTED"


# ----------------------------------------------------------------------------------------------
# tensors


@dataclass
class EncodedTensor:
    """A tensor ready to send: header fields plus the codec's payload (bytes or a byte memoryview)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    codec_id: int
    codec_params: dict[str, str]
    payload: bytes | memoryview
    raw_nbytes: int

    def header(self, chunk_count: int = 0) -> pb.TensorHeader:
        return pb.TensorHeader(name=self.name, dtype=self.dtype, shape=list(self.shape), codec_id=self.codec_id,
                               codec_params=self.codec_params, encoded_length=len(self.payload),
                               chunk_count=chunk_count)


@dataclass
class ReceivedTensor:
    """A reassembled tensor: header fields plus its encoded payload (memoryview or bytearray)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    codec_id: int
    codec_params: dict[str, str]
    payload: memoryview


def codec_params_of(codec) -> dict[str, str]:
    return {str(k): str(v) for k, v in (getattr(codec, "params", None) or {}).items()}


def raw_view(arr: np.ndarray) -> memoryview:
    """The bytes of `arr` in C order, little-endian, as a flat byte memoryview (no copy when possible)."""
    arr = np.asarray(arr)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and np.little_endian is False):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    arr = np.ascontiguousarray(arr)
    return memoryview(arr.reshape(-1).view(np.uint8))


def encode_tensor(name: str, arr: np.ndarray, codec) -> EncodedTensor:
    """Encode one tensor. The identity codec (id 0) sends the array's own memory: the same bytes as
    `codec.encode` (little-endian, C order; tests check it) without its copy, so framing is the one copy."""
    return encode_tensors([name], [arr], codec)[0]


def encode_tensors(names, arrays, codec, encoder=None) -> list[EncodedTensor]:
    """Encode one frame's tensors, in order, as `encode_tensor` does each; the codec codes them together
    (`codecs.encode_many`: nnc spreads them over its helper processes at once). `encoder`: the stream's
    `codec.sequence_encoder()`, which a sequential codec needs (frames in order, see codecs/sequence.py)."""
    from splitinfer.common.codecs import encode_many

    arrays = [np.asarray(a) for a in arrays]
    for name, arr in zip(names, arrays):
        if arr.dtype.name not in ALLOWED_DTYPES:
            raise WireError(f"tensor {name!r}: dtype {arr.dtype} cannot be sent (allowed: {sorted(ALLOWED_DTYPES)})")
    if codec.codec_id == 0:
        payloads = [raw_view(a) for a in arrays]
    elif encoder is not None:
        payloads = encoder.encode_frame(names, arrays)
    else:
        payloads = encode_many(codec, arrays)
    params = codec_params_of(codec)
    return [EncodedTensor(name, arr.dtype.name, tuple(int(d) for d in arr.shape), int(codec.codec_id), params,
                          payload, int(arr.nbytes)) for name, arr, payload in zip(names, arrays, payloads)]


def decode_tensor(t: ReceivedTensor, codec, max_raw_bytes: int = DEFAULT_MAX_FRAME_BYTES * 4) -> np.ndarray:
    """Decode a received tensor with `codec`, checking that dtype and shape come back as announced.

    The payload is handed to the codec as it lies in the received message (the `none` codec then
    views it without a copy). Codec failures become WireError (INVALID_ARGUMENT).
    """
    dtype = np.dtype(t.dtype)
    numel = 1
    for d in t.shape:
        numel *= d
    if numel * dtype.itemsize > max_raw_bytes:
        raise TooLarge(f"tensor {t.name!r}: {numel * dtype.itemsize} bytes decoded exceed the limit of {max_raw_bytes}")
    try:
        arr = codec.decode(t.payload, dtype, t.shape)
    except WireError:
        raise
    except Exception as exc:  # CodecError and whatever a codec library raises on a corrupt payload
        raise WireError(f"tensor {t.name!r}: codec {t.codec_id} cannot decode the payload "
                        f"({type(exc).__name__}: {exc})", getattr(exc, "code", None)) from None
    arr = np.asarray(arr)
    if arr.dtype != dtype or tuple(arr.shape) != tuple(t.shape):
        raise WireError(f"tensor {t.name!r}: codec {t.codec_id} restored {arr.dtype}{list(arr.shape)}, "
                        f"header says {t.dtype}{list(t.shape)}")
    return arr


def meta_to_json(meta: dict | None) -> str:
    """A family's preprocessing meta as JSON (numpy scalars and arrays become numbers and lists)."""

    def default(o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, tuple):
            return list(o)
        raise TypeError(f"meta value of type {type(o).__name__} cannot be sent")

    return json.dumps(meta or {}, default=default, separators=(",", ":"))


# The server reads a frame's meta with `splitinfer.server.meta.clean_meta` (hardened JSON, checked fields).


# ----------------------------------------------------------------------------------------------
# sending


def _part_header(frame_id: int, part: int, part_count: int, first: bool, timestamp_ns: int, meta_json: str,
                 headers: list[pb.TensorHeader]) -> pb.FramePart:
    fp = pb.FramePart(frame_id=frame_id, part=part, part_count=part_count)
    if first:
        fp.timestamp_ns = timestamp_ns
        fp.meta_json = meta_json
        fp.tensors.extend(headers)
    return fp


def _plan_chunks(sizes: list[int], cap_first: int, cap_other: int) -> list[list[tuple[int, int, int, int]]]:
    """Greedy packing: messages of (tensor, chunk index, start, end) so each stays under its capacity."""
    if cap_first - _CHUNK_OVERHEAD_MAX < 0:
        raise TooLarge(f"the frame header alone ({-cap_first + _CHUNK_OVERHEAD_MAX} bytes over) exceeds the message limit")
    if cap_other - _CHUNK_OVERHEAD_MAX < 1:
        raise TooLarge("the message limit is too small to carry any payload")
    messages: list[list[tuple[int, int, int, int]]] = [[]]
    room = cap_first
    for ti, n in enumerate(sizes):
        off, ci = 0, 0
        while True:
            avail = room - _CHUNK_OVERHEAD_MAX
            if avail < 0 or (avail == 0 and off < n):
                messages.append([])
                room = cap_other
                continue
            take = min(avail, n - off)
            messages[-1].append((ti, ci, off, off + take))
            room -= take + _CHUNK_OVERHEAD_MAX
            off += take
            ci += 1
            if off >= n:
                break
    return messages


def _chunk_pieces(ti: int, ci: int, data) -> list:
    body = (_TAG_CH_TENSOR + _varint(ti) if ti else b"") + (_TAG_CH_INDEX + _varint(ci) if ci else b"")
    if len(data):
        body += _TAG_CH_DATA + _varint(len(data))
    return [_TAG_CHUNKS + _varint(len(body) + len(data)) + body, data]


def iter_frame_messages(frame_id: int, tensors: list[EncodedTensor], *, timestamp_ns: int = 0, meta_json: str = "",
                        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, setup: pb.SessionSetup | None = None):
    """Serialized requests carrying one frame, each at most `max_message_bytes` long, made lazily.

    Without `setup` they are `StreamRequest`s (field `frame`); with it, a single `InferRequest`
    (setup + frame), which must then fit in one message (a unary call cannot chunk). Planning (and
    its TooLarge errors) happens now; each message is built only when asked for, so a multi-MB frame
    never holds all its messages in memory at once.
    """
    payloads = [memoryview(t.payload).cast("B") for t in tensors]
    prefix = b""
    if setup is not None:
        sb = setup.SerializeToString()
        prefix = _TAG_SETUP + _varint(len(sb)) + sb
    headers = [t.header(_U32) for t in tensors]
    if setup is not None:  # one message: pack everything, check the size below
        plan = [[(ti, 0, 0, len(p)) for ti, p in enumerate(payloads)]]
        size = len(prefix) + _ENVELOPE_MAX + _part_header(frame_id, 0, 1, True, timestamp_ns, meta_json,
                                                           headers).ByteSize()
        size += sum(len(p) + _CHUNK_OVERHEAD_MAX for p in payloads)
        if size > max_message_bytes:
            raise TooLarge(f"frame {frame_id}: about {size} bytes exceed the message limit of {max_message_bytes} "
                           "(a unary call cannot chunk: use the stream)")
    else:
        base = max_message_bytes - _ENVELOPE_MAX
        bound_first = _part_header(frame_id, _U32, _U32, True, timestamp_ns, meta_json, headers).ByteSize()
        bound_other = _part_header(frame_id, _U32, _U32, False, 0, "", []).ByteSize()
        plan = _plan_chunks([len(p) for p in payloads], base - bound_first, base - bound_other)
    counts = [0] * len(tensors)
    for msg in plan:
        for ti, _, _, _ in msg:
            counts[ti] += 1
    for h, c in zip(headers, counts):
        h.chunk_count = c

    def build():
        for k, msg in enumerate(plan):
            hdr = _part_header(frame_id, k, len(plan), k == 0, timestamp_ns, meta_json, headers).SerializeToString()
            pieces = [hdr]
            for ti, ci, a, b in msg:
                pieces.extend(_chunk_pieces(ti, ci, payloads[ti][a:b]))
            body_len = sum(len(p) for p in pieces)
            yield b"".join([prefix, _TAG_FRAME, _varint(body_len), *pieces])  # the one copy of the payload

    return build()


def frame_messages(frame_id: int, tensors: list[EncodedTensor], **kwargs) -> list[bytes]:
    """`iter_frame_messages` as a list."""
    return list(iter_frame_messages(frame_id, tensors, **kwargs))


# ----------------------------------------------------------------------------------------------
# receiving


def _read_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise WireError("truncated message (varint runs past the end)")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("malformed message (varint longer than 10 bytes)")


def _fields(buf: memoryview, start: int, end: int):
    """Yield (field number, wire type, value, field start, field end); LEN values are (start, end)."""
    pos = start
    while pos < end:
        fstart = pos
        key, pos = _read_varint(buf, pos, end)
        number, wt = key >> 3, key & 7
        if number == 0:
            raise WireError("malformed message (field number 0)")
        if wt == 0:
            value, pos = _read_varint(buf, pos, end)
        elif wt == 2:
            n, pos = _read_varint(buf, pos, end)
            if n > end - pos:
                raise WireError(f"truncated message (field {number} announces {n} bytes, {end - pos} left)")
            value = (pos, pos + n)
            pos += n
        elif wt == 1 or wt == 5:
            size = 8 if wt == 1 else 4
            if size > end - pos:
                raise WireError("truncated message (fixed-size field runs past the end)")
            value = None
            pos += size
        else:
            raise WireError(f"malformed message (unsupported wire type {wt} in field {number})")
        yield number, wt, value, fstart, pos


def _parse_chunk(buf: memoryview, start: int, end: int) -> tuple[int, int, memoryview]:
    tensor = index = 0
    data = buf[start:start]
    for number, wt, value, _, _ in _fields(buf, start, end):
        if number in (_F_CH_TENSOR, _F_CH_INDEX):
            if wt != 0 or value > _U32:
                raise WireError("malformed chunk (tensor/index must be uint32 varints)")
            if number == _F_CH_TENSOR:
                tensor = value
            else:
                index = value
        elif number == _F_CH_DATA:
            if wt != 2:
                raise WireError("malformed chunk (data must be bytes)")
            data = buf[value[0]:value[1]]
    return tensor, index, data


@dataclass
class PartView:
    """One received FramePart: its protobuf header (all fields but chunks) and chunk views into the message."""

    header: pb.FramePart
    chunks: list[tuple[int, int, memoryview]]


def _parse_frame_part(buf: memoryview, start: int, end: int) -> PartView:
    spans, chunks = [], []
    for number, wt, value, fstart, fend in _fields(buf, start, end):
        if number == _F_CHUNKS:
            if wt != 2:
                raise WireError("malformed frame (chunks must be messages)")
            chunks.append(_parse_chunk(buf, *value))
        else:
            spans.append(buf[fstart:fend])
    try:
        header = pb.FramePart.FromString(b"".join(spans))
    except DecodeError as exc:
        raise WireError(f"malformed frame header ({exc})") from None
    return PartView(header, chunks)


def _parse_envelope(data) -> tuple[pb.SessionSetup | None, PartView | None]:
    buf = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
    setup_span = frame_span = None
    for number, wt, value, _, _ in _fields(buf, 0, len(buf)):
        if number in (_F_SETUP, _F_FRAME) and wt != 2:
            raise WireError(f"malformed request (field {number} must be a message)")
        if number == _F_SETUP:
            setup_span = value
        elif number == _F_FRAME:
            frame_span = value
    setup = None
    if setup_span is not None:
        try:
            setup = pb.SessionSetup.FromString(bytes(buf[setup_span[0]:setup_span[1]]))
        except DecodeError as exc:
            raise WireError(f"malformed session set-up ({exc})") from None
    frame = _parse_frame_part(buf, *frame_span) if frame_span is not None else None
    return setup, frame


def parse_stream_request(data) -> tuple[str, pb.SessionSetup | PartView]:
    """('setup', SessionSetup) or ('frame', PartView) from a serialized StreamRequest."""
    setup, frame = _parse_envelope(data)
    if setup is not None and frame is not None:
        raise WireError("a stream request carries both a set-up and a frame (it must be one or the other)")
    if setup is not None:
        return "setup", setup
    if frame is not None:
        return "frame", frame
    raise WireError("empty stream request (neither set-up nor frame)")


def parse_infer_request(data) -> tuple[pb.SessionSetup, PartView]:
    setup, frame = _parse_envelope(data)
    if setup is None or frame is None:
        raise WireError("an infer request needs both `setup` and `frame`")
    return setup, frame


@dataclass
class Frame:
    """A complete, validated frame."""

    frame_id: int
    timestamp_ns: int
    meta_json: str
    tensors: list[ReceivedTensor]
    checked: object = None  # what the assembler's `check_header` returned for part 0 (the server: the clean meta)

    @property
    def encoded_bytes(self) -> int:
        return sum(len(t.payload) for t in self.tensors)


@dataclass
class _PartialFrame:
    """A frame being reassembled from its FrameParts: the header, and how far each tensor's chunks have come."""

    header: pb.FramePart
    next_part: int = 0
    tensor: int = 0  # tensor whose chunks are arriving
    chunk: int = 0  # next expected chunk index of that tensor
    filled: list[int] = field(default_factory=list)
    buffers: list = field(default_factory=list)
    checked: object = None  # what check_header returned for part 0


def validate_headers(fp: pb.FramePart, max_frame_bytes: int) -> None:
    names = set()
    total = 0
    for i, h in enumerate(fp.tensors):
        where = f"frame {fp.frame_id}, tensor {i} ({h.name!r})"
        if not h.name:
            raise WireError(f"frame {fp.frame_id}, tensor {i}: empty name")
        if h.name in names:
            raise WireError(f"{where}: name appears twice")
        names.add(h.name)
        if h.dtype not in ALLOWED_DTYPES:
            raise WireError(f"{where}: dtype {h.dtype!r} not allowed (allowed: {', '.join(sorted(ALLOWED_DTYPES))})")
        if any(d < 0 for d in h.shape):
            raise WireError(f"{where}: negative dimension in shape {list(h.shape)}")
        if h.chunk_count < 1:
            raise WireError(f"{where}: chunk_count must be at least 1")
        total += h.encoded_length
    if total > max_frame_bytes:
        raise TooLarge(f"frame {fp.frame_id}: {total} payload bytes exceed the server's frame limit of {max_frame_bytes}")


class FrameAssembler:
    """Reassembles frames from parts in stream order; raises WireError on anything out of place.

    `check_header(frame_part)`, when given, sees part 0's tensor headers before any reassembly buffer is
    allocated and raises to refuse them (the server checks names, dtypes and announced shapes against what
    the session's split can need there); what it returns travels with the frame (`Frame.checked`).
    `discard()` drops a half-received frame's buffers at once and says
    how many bytes they held (the server then trims them from the heaps, core/allocator.py).
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, check_header=None):
        self.max_frame_bytes = max_frame_bytes
        self.check_header = check_header
        self._pending: _PartialFrame | None = None
        self._last_id: int | None = None

    def discard(self) -> int:
        """Forget the frame being reassembled; returns the bytes of the reassembly buffers dropped with it."""
        p, self._pending = self._pending, None
        if p is None:
            return 0
        return sum(b.nbytes for b in p.buffers if isinstance(b, np.ndarray))

    @property
    def incomplete(self) -> str | None:
        """A description of the frame still waiting for parts, or None."""
        p = self._pending
        if p is None:
            return None
        return (f"frame {p.header.frame_id} incomplete: got {p.next_part} of {p.header.part_count} parts "
                f"(missing parts {p.next_part}..{p.header.part_count - 1})")

    def add(self, part: PartView) -> Frame | None:
        h = part.header
        p = self._pending
        if p is None:
            if self._last_id is not None and h.frame_id <= self._last_id:
                raise WireError(f"frame {h.frame_id} after frame {self._last_id}: frame ids must increase "
                                "(duplicated or out-of-order frame)")
            if h.part != 0:
                raise WireError(f"frame {h.frame_id}: part {h.part} arrived before part 0 (missing or out-of-order part)")
            if h.part_count < 1:
                raise WireError(f"frame {h.frame_id}: part_count must be at least 1")
            validate_headers(h, self.max_frame_bytes)
            checked = self.check_header(h) if self.check_header is not None else None
            p = _PartialFrame(header=h, filled=[0] * len(h.tensors), buffers=[None] * len(h.tensors),
                              checked=checked)
            self._pending = p
        else:
            fid = p.header.frame_id
            if h.frame_id != fid:
                raise WireError(f"{self.incomplete}; part {h.part} of frame {h.frame_id} arrived instead")
            if h.part < p.next_part:
                raise WireError(f"frame {fid}: part {h.part} duplicated")
            if h.part > p.next_part:
                raise WireError(f"frame {fid}: part {h.part} arrived but part {p.next_part} is missing (out of order)")
            if h.part_count != p.header.part_count:
                raise WireError(f"frame {fid}: part {h.part} says {h.part_count} parts, part 0 said {p.header.part_count}")
            if len(h.tensors) or h.meta_json:
                raise WireError(f"frame {fid}: part {h.part} repeats the frame header (only part 0 may carry it)")
        for ti, ci, data in part.chunks:
            self._add_chunk(p, ti, ci, data)
        p.next_part += 1
        if p.next_part < p.header.part_count:
            return None
        return self._finish(p)

    def _add_chunk(self, p: _PartialFrame, ti: int, ci: int, data: memoryview) -> None:
        fid, hs = p.header.frame_id, p.header.tensors
        if ti >= len(hs):
            raise WireError(f"frame {fid}: chunk for tensor {ti} but the frame has {len(hs)} tensors")
        if ti < p.tensor or (ti == p.tensor and ci < p.chunk):
            raise WireError(f"frame {fid}: chunk {ci} of tensor {ti} ({hs[ti].name!r}) duplicated or out of order")
        if ti > p.tensor:
            if p.chunk < hs[p.tensor].chunk_count:
                raise WireError(f"frame {fid}: tensor {p.tensor} ({hs[p.tensor].name!r}) is missing chunks "
                                f"{p.chunk}..{hs[p.tensor].chunk_count - 1}")
            if ti > p.tensor + 1:
                raise WireError(f"frame {fid}: tensor {p.tensor + 1} ({hs[p.tensor + 1].name!r}) is missing (no chunk)")
            p.tensor, p.chunk = ti, 0
        h = hs[ti]
        if ci != p.chunk:
            raise WireError(f"frame {fid}: tensor {ti} ({h.name!r}) chunk {ci} arrived but chunk {p.chunk} is missing")
        if ci >= h.chunk_count:
            raise WireError(f"frame {fid}: tensor {ti} ({h.name!r}) chunk {ci} beyond its chunk_count {h.chunk_count}")
        n = len(data)
        if p.filled[ti] + n > h.encoded_length:
            raise WireError(f"frame {fid}: tensor {ti} ({h.name!r}) chunks exceed its encoded_length {h.encoded_length}")
        if h.chunk_count == 1:
            p.buffers[ti] = data  # zero copy: a view into the received message
        else:
            if p.buffers[ti] is None:
                p.buffers[ti] = np.empty(h.encoded_length, dtype=np.uint8)  # no zero-fill, writable
            p.buffers[ti][p.filled[ti]:p.filled[ti] + n] = np.frombuffer(data, np.uint8)  # the one copy here
        p.filled[ti] += n
        p.chunk += 1

    def _finish(self, p: _PartialFrame) -> Frame:
        hdr = p.header
        fid, hs = hdr.frame_id, hdr.tensors
        if hs:
            last = len(hs) - 1
            if p.tensor < last or p.chunk < hs[p.tensor].chunk_count:
                t = p.tensor if p.chunk < hs[p.tensor].chunk_count else p.tensor + 1
                raise WireError(f"frame {fid}: all {hdr.part_count} parts received but tensor {t} "
                                f"({hs[t].name!r}) is missing chunks")
        tensors = []
        for ti, h in enumerate(hs):
            if p.filled[ti] != h.encoded_length:
                raise WireError(f"frame {fid}: tensor {ti} ({h.name!r}) has {p.filled[ti]} bytes, "
                                f"encoded_length says {h.encoded_length}")
            buf = p.buffers[ti]
            payload = memoryview(b"") if buf is None else (memoryview(buf) if isinstance(buf, np.ndarray) else buf)
            tensors.append(ReceivedTensor(h.name, h.dtype, tuple(int(d) for d in h.shape), int(h.codec_id),
                                          dict(h.codec_params), payload))
        self._pending = None
        self._last_id = fid
        return Frame(int(fid), int(hdr.timestamp_ns), hdr.meta_json, tensors, p.checked)
