"""`nnc[:QP]` (id 8xx = QP -xx): MPEG NNC (ISO/IEC 15938-17) through the `nncodec` 2.1.3 package. Lossy.

Coding settings are those of `nncodec.tensor.encode`'s defaults (uniform quantisation with dependent
quantisation, QP density 2, row skipping, parameter optimisation), so bitstreams are plain NNR
bitstreams that `nncodec.tensor.decode` reads. The codec's parts: `nnc_core.py` (nncodec's coding core
in this process, and why not `nncodec.tensor`), `nnc_pool.py` (the helper processes, see Safety).

What is sent (8-byte header, then the body):
    b"NNC" | mode (b"N" NNR bitstream, b"R" raw little-endian bytes, b"P" blocks) | CRC-32 of the body (uint32 LE)
Blocks (mode b"P", our small container): a large tensor is cut along one axis into K slabs, each coded
as its own standard one-tensor NNR bitstream (what `nncodec.tensor.decode` reads) by K helper
processes at once; the body is `axis u8 | K u16 | K x (slab length along axis u32, bitstream bytes
u32) | the K bitstreams`. Tensors of at least PARALLEL_MIN values are cut when the helper pool has
2+ processes ($SPLITINFER_NNC_WORKERS=1 keeps every tensor one in-process bitstream).
Raw mode keeps things exact where NNC cannot help: integer/bool tensors (nncodec would squeeze int64
into int32), tensors holding NaN/inf, empty tensors, and tiny tensors whose bitstream would be larger
than the raw bytes. The CRC makes a damaged payload fail loudly instead of decoding to wrong values.
1-D and 0-D tensors are coded as 1 x N (nncodec applies the QP only to tensors of 2+ dimensions).

Safety: the deepCABAC decoder (C++) reads the bitstream without bounds checks and takes entry points
(raw offsets) from it, so a hostile or damaged stream can read out of bounds and kill the process
(asserts are compiled out, so in practice it mostly raises, but nothing guarantees it). A server must
survive any payload, so `decode` runs nncodec in a small pool of helper processes (pipes, no pickle):
a crash, a hang past the deadline or a memory blow-up there (address space capped by what the
announced shape needs, whatever the stream claims) becomes a `CodecError` and the helper is replaced.
Before any value is decoded, the NNR data unit header's tensor dimensions must multiply to the
announced number of values. `decode(..., trusted=True)` decodes in-process instead, for
payloads this process made itself (sweeps, benchmarks). Pool size: $SPLITINFER_NNC_WORKERS (default
min(4, CPUs)).

Concurrency: nncodec keeps shared mutable state (mutable default `hls_stats={}` dicts) and its pybind
calls never release the GIL, so in-process coding is serialised by one lock (threads lose nothing);
helper processes give real parallelism for decoding, and each process (e.g. a sweep's pool worker)
has its own lock and pool (re-created after fork). No files are written.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.common.codecs import (
    Codec, CodecError, from_raw, is_float, le_contiguous, norm_dtype, norm_shape, numel, raw_bytes,
)
from splitinfer.common.codecs.nnc_core import NAME, core, decode_nnr, encode_nnr
from splitinfer.common.codecs.nnc_pool import helper_pool
from splitinfer.common.codecs.params import parse_int

ORDER = 5  # its place in codec_names() and the help text (codecs/__init__.py)
DEFAULT_QP = -38
MIN_QP, MAX_QP = -99, 0
HELP = (f"nnc[:QP] (id 8xx = QP -xx, QP in {MIN_QP}..{MAX_QP}, default {DEFAULT_QP}; lossy; "
        "integer/bool tensors exact)")

_HEADER = struct.Struct("<3scI")
_MAGIC = b"NNC"
_MODE_NNR = b"N"
_MODE_RAW = b"R"
_MODE_BLOCKS = b"P"
PARALLEL_MIN = 1 << 16  # values; smaller tensors are one in-process bitstream
_BLOCKS_HEAD = struct.Struct("<BH")
_BLOCK = struct.Struct("<II")


class NncCodec(Codec):
    name = NAME
    lossless = False

    def __init__(self, qp: int = DEFAULT_QP):
        super().__init__(800 - int(qp), {"qp": int(qp)})
        self.qp = int(qp)

    def encode(self, arr) -> bytes:
        return self.encode_many([arr])[0]

    def encode_many(self, arrays) -> list[bytes]:
        """Payloads of several tensors (one frame's), in order, byte for byte those `encode` makes one by one.

        Every bitstream to make (a whole tensor, or one slab of a large one) goes to the helper pool at
        once, largest first, so the helpers stay busy across the tensors of a frame instead of idling while
        the small tensors are coded here one after the other. One bitstream in all (or one helper) is
        coded in this process, with no pipe round trip."""
        arrays = [np.asarray(a) for a in arrays]
        pool = helper_pool()
        plans = [_coding_plan(a, pool.size) for a in arrays]
        jobs = [(i, j, slab) for i, plan in enumerate(plans) if plan is not None for j, slab in enumerate(plan[2])]
        if len(jobs) <= 1 or pool.size < 2:
            streams = {(i, j): encode_nnr(slab, self.qp) for i, j, slab in jobs}
        else:
            import concurrent.futures as cf

            jobs.sort(key=lambda job: -job[2].size)  # largest first: the helpers finish close together
            with cf.ThreadPoolExecutor(min(pool.size, len(jobs))) as ex:  # each thread waits on its helper's pipe
                futures = {(i, j): ex.submit(pool.encode, slab, self.qp) for i, j, slab in jobs}
                streams = {key: f.result() for key, f in futures.items()}
        return [_payload(a, plan, [streams[(i, j)] for j in range(len(plan[2]))] if plan else None)
                for i, (a, plan) in enumerate(zip(arrays, plans))]

    def decode(self, payload, dtype, shape, *, trusted: bool = False):
        dt, dims = norm_dtype(dtype), norm_shape(shape)
        view = memoryview(payload).cast("B")
        if view.nbytes < _HEADER.size:
            raise CodecError(f"{NAME}: payload of {view.nbytes} bytes is shorter than its {_HEADER.size}-byte header")
        magic, mode, crc = _HEADER.unpack_from(view)
        body = view[_HEADER.size:]
        if magic != _MAGIC or mode not in (_MODE_NNR, _MODE_RAW, _MODE_BLOCKS):
            raise CodecError(f"{NAME}: payload does not start with an NNC header (got {bytes(view[:4])!r})")
        if zlib.crc32(body) != crc:
            raise CodecError(f"{NAME}: checksum mismatch, the payload is corrupt")
        if mode == _MODE_RAW:
            return from_raw(body, dt, dims, NAME)
        if not is_float(dt):
            raise CodecError(f"{NAME}: payload is an NNC bitstream but the tensor's dtype is {dt}")
        n = numel(dims)
        if body.nbytes >= n * dt.itemsize:  # the encoder sends such tensors raw: refuse before any helper
            raise CodecError(f"{NAME}: a {body.nbytes}-byte bitstream for {dt}{list(dims)} ({n * dt.itemsize} "
                             "bytes raw) is never sent")
        if mode == _MODE_BLOCKS:
            return _decode_blocks(body, dims, trusted).astype(dt, copy=False)
        flat = decode_nnr(body, n) if trusted else helper_pool().decode(body, n)
        return flat.reshape(dims).astype(dt, copy=False)

    def warm_up(self) -> None:
        core()
        helper_pool().warm_up()


def _pack(mode: bytes, body) -> bytes:
    return _HEADER.pack(_MAGIC, mode, zlib.crc32(body)) + body


def _coding_plan(arr: np.ndarray, helpers: int):
    """How a tensor is coded: None (sent raw), or (float32 2+-dim view, slab axis or None, bitstream inputs).

    Raw: empty, integer/bool or non-finite tensors. Slabs: tensors of PARALLEL_MIN+ values when there are
    2+ helpers, cut into one slab per helper; otherwise the whole tensor is one bitstream."""
    if arr.size == 0 or not is_float(arr.dtype):
        return None
    x = le_contiguous(arr).astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        return None
    x = x.reshape(1, -1) if x.ndim < 2 else x
    axis = _block_axis(x.shape, helpers) if x.size >= PARALLEL_MIN and helpers > 1 else None
    if axis is None:
        return x, None, [x]
    return x, axis, [np.ascontiguousarray(a) for a in np.array_split(x, helpers, axis=axis)]


def _payload(arr: np.ndarray, plan, streams) -> bytes:
    """The payload of one tensor from its plan and coded bitstreams (raw when NNC would not save bytes)."""
    if plan is None:
        return _pack(_MODE_RAW, raw_bytes(arr))
    _, axis, slabs = plan
    if axis is None:
        body, mode = streams[0], _MODE_NNR
    else:
        head = _BLOCKS_HEAD.pack(axis, len(slabs))
        index = b"".join(_BLOCK.pack(a.shape[axis], len(b)) for a, b in zip(slabs, streams))
        body, mode = head + index + b"".join(streams), _MODE_BLOCKS
    if len(body) >= arr.nbytes:
        return _pack(_MODE_RAW, raw_bytes(arr))
    return _pack(mode, body)


# -- blocks: one large tensor coded by several helper processes at once -------------------------------


def _block_axis(shape: tuple[int, ...], k: int) -> int | None:
    """The axis to cut into k slabs (the first with at least k entries among the first two), or None."""
    for axis in (0, 1):
        if axis < len(shape) and shape[axis] >= k:
            return axis
    return None


def _decode_blocks(body, dims: tuple[int, ...], trusted: bool) -> np.ndarray:
    """Parse the container against the announced shape, then decode the slabs concurrently."""
    view = memoryview(body)
    if view.nbytes < _BLOCKS_HEAD.size:
        raise CodecError(f"{NAME}: block container of {view.nbytes} bytes has no header")
    axis, k = _BLOCKS_HEAD.unpack_from(view)
    shape = dims if len(dims) >= 2 else (1, numel(dims))
    if axis > 1 or not 1 <= k <= 256 or shape[axis] < k:
        raise CodecError(f"{NAME}: block container claims {k} slabs along axis {axis}, which does not fit "
                         f"shape {list(dims)}")
    pos = _BLOCKS_HEAD.size + k * _BLOCK.size
    if view.nbytes < pos:
        raise CodecError(f"{NAME}: block container ends inside its index")
    index = [_BLOCK.unpack_from(view, _BLOCKS_HEAD.size + i * _BLOCK.size) for i in range(k)]
    if sum(e for e, _ in index) != shape[axis] or any(e == 0 for e, _ in index):
        raise CodecError(f"{NAME}: block slabs cover {sum(e for e, _ in index)} entries of axis {axis}, "
                         f"the shape has {shape[axis]}")
    if pos + sum(n for _, n in index) != view.nbytes:
        raise CodecError(f"{NAME}: block container announces {sum(n for _, n in index)} bitstream bytes, "
                         f"{view.nbytes - pos} follow")
    per = numel(shape) // shape[axis]
    jobs = []
    for extent, length in index:
        jobs.append((view[pos:pos + length], extent * per))
        pos += length
    if trusted:
        parts = [decode_nnr(b, n) for b, n in jobs]
    else:
        import concurrent.futures as cf

        pool = helper_pool()
        with cf.ThreadPoolExecutor(min(k, pool.size)) as ex:
            parts = list(ex.map(lambda j: pool.decode(*j), jobs))
    slabs = []
    for (extent, _), flat in zip(index, parts):
        slab_shape = list(shape)
        slab_shape[axis] = extent
        slabs.append(flat.reshape(slab_shape))
    return np.concatenate(slabs, axis=axis).reshape(dims)


# -- registry hooks ---------------------------------------------------------------------------------


def _qp(text: str) -> int:
    qp = parse_int(text, "NNC QP")
    if not MIN_QP <= qp <= MAX_QP:
        raise UserError(f"NNC QP {qp} is outside {MIN_QP}..{MAX_QP}")
    return qp


def _available() -> None:
    import importlib.util

    if importlib.util.find_spec("nncodec") is None:
        raise UserError("the nnc codec needs the nncodec package (pip install 'splitinfer[nnc]')")


def from_id(number: int):
    if 800 <= number <= 800 - MIN_QP:
        _available()
        return NncCodec(800 - number)
    return None


def from_param(param):
    qp = DEFAULT_QP if param in (None, "") else _qp(param)
    _available()
    return NncCodec(qp)
