"""`nnc[:QP]` (id 8xx = QP -xx): MPEG NNC (ISO/IEC 15938-17) through the `nncodec` 2.1.3 package. Lossy.

Coding settings are those of `nncodec.tensor.encode`'s defaults (uniform quantisation with dependent
quantisation, QP density 2, row skipping, parameter optimisation), so bitstreams are plain NNR
bitstreams that `nncodec.tensor.decode` reads. We drive `nncodec.nnc_core` directly rather than
`nncodec.tensor` because `tensor.encode` writes a `.nnc` file per call and `nncodec.nnc` imports
torch (~10 s, ~1 GB) although coding never uses it.

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

import atexit
import os
import selectors
import struct
import subprocess
import sys
import threading
import time
import zlib

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.common.codecs import (
    Codec, CodecError, from_raw, is_float, le_contiguous, norm_dtype, norm_shape, numel, raw_bytes,
)
from splitinfer.common.codecs.params import parse_int

NAME = "nnc"
DEFAULT_QP = -38
MIN_QP, MAX_QP = -99, 0
HELP = (f"nnc[:QP] (id 8xx = QP -xx, QP in {MIN_QP}..{MAX_QP}, default {DEFAULT_QP}; lossy; "
        "integer/bool tensors exact)")

# nncodec.tensor.encode's defaults
QP_DENSITY = 2
NONWEIGHT_QP = -75
USE_DQ = True
PARAM_OPT = True
ROW_SKIPPING = True
CABAC_UNARY_LENGTH_MINUS1 = 10
TENSOR_ID = "0"

_HEADER = struct.Struct("<3scI")
_MAGIC = b"NNC"
_MODE_NNR = b"N"
_MODE_RAW = b"R"
_MODE_BLOCKS = b"P"
PARALLEL_MIN = 1 << 16  # values; smaller tensors are one in-process bitstream
_BLOCKS_HEAD = struct.Struct("<BH")
_BLOCK = struct.Struct("<II")

_core_lock = threading.Lock()  # serialises in-process nncodec calls (shared state, GIL held anyway)


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
        pool = _pool()
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
        flat = decode_nnr(body, n) if trusted else _pool().decode(body, n)
        return flat.reshape(dims).astype(dt, copy=False)

    def warm_up(self) -> None:
        _core()
        _pool().warm_up()


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

        pool = _pool()
        with cf.ThreadPoolExecutor(min(k, pool.size)) as ex:
            parts = list(ex.map(lambda j: pool.decode(*j), jobs))
    slabs = []
    for (extent, _), flat in zip(index, parts):
        slab_shape = list(shape)
        slab_shape[axis] = extent
        slabs.append(flat.reshape(slab_shape))
    return np.concatenate(slabs, axis=axis).reshape(dims)


# -- nncodec core (in this process) -----------------------------------------------------------------


def _core():
    """nncodec's coding core, imported on first use (numpy + the deepCABAC extension; no torch)."""
    from nncodec.nnc_core import approximator, coder, nnr_model

    return approximator, coder, nnr_model


def encode_nnr(x: np.ndarray, qp: int) -> bytes:
    """NNR bitstream of one float32 tensor (2+ dims) at `qp`, as `nncodec.nnc.compress` makes it."""
    approximator, coder, nnr_model = _core()
    with _core_lock:
        params = {TENSOR_ID: x}
        model = nnr_model.NNRModel(params)
        info = model.model_info
        data = approximator.init_approx_data(params, info, qp_density=QP_DENSITY, scan_order=0)
        approx_info = approximator.ApproxInfo(
            data, info, "uniform", 0, qp, False, not USE_DQ, CABAC_UNARY_LENGTH_MINUS1, 0,
            nonweight_qp=NONWEIGHT_QP, qp_per_tensor=None, int_quant_bw=None,
        ).approx_info
        enc_info = {
            "cabac_unary_length_minus1": CABAC_UNARY_LENGTH_MINUS1,
            "param_opt_flag": PARAM_OPT,
            "partial_data_counter": 0,
            "general_profile_idc": 1,
            "node_id_present_flag": 1,
            "device_id": 0,
            "mps_parent_signalling_enabled_flag": 0,
            "parent_node_id_present_flag": 0,
            "temporal_context_modeling_flag": 0,
            "row_skip_enabled_flag": 1 if ROW_SKIPPING else 0,
            "pre_signalling": 0,
        }
        enc = approximator.approx(approx_info, info, data, enc_info)
        bitstream, _ = coder.encode(enc_info=enc_info, model_info=info, approx_data=enc,
                                    approx_param_base=None, update_base_param=False, tool_if=None)
    return bytes(bitstream)


def _claimed_values(coder, bitstream) -> int:
    """Values the first NNR data unit's header announces (tensor_dimensions), read without decoding data."""
    info = {"parameter_type": {}, "parameter_dimensions": {}, "parameter_index": {}, "block_identifier": {},
            "topology_storage_format": None, "topology_compression_format": None,
            "performance_maps": {"mps": {}, "lps": {}}, "performance_map_flags": {}}
    ndu = coder.decode_ndu_unit_header(bytearray(bitstream), info, hls_stats={})
    dims = ndu.get("tensor_dimensions") if isinstance(ndu, dict) else None
    if dims is None or not 1 <= len(dims) <= 8:
        raise CodecError(f"{NAME}: bitstream announces no tensor dimensions")
    claimed = 1
    for d in dims:
        claimed *= int(d)
    return claimed


def decode_nnr(bitstream, expected: int) -> np.ndarray:
    """Flat float32 values of a one-tensor NNR bitstream, in this process; CodecError if it is not one."""
    approximator, coder, _ = _core()
    model_info = {
        "parameter_type": {}, "parameter_dimensions": {}, "parameter_index": {}, "block_identifier": {},
        "topology_storage_format": None, "topology_compression_format": None,
        "performance_maps": {"mps": {}, "lps": {}},
        "performance_map_flags": {k: {} for k in (
            "mps_sparsification_flag", "lps_sparsification_flag", "mps_pruning_flag", "lps_pruning_flag",
            "mps_unification_flag", "lps_unification_flag", "mps_decomposition_performance_map_flag",
            "lps_decomposition_performance_map_flag")},
    }
    try:
        with _core_lock, np.errstate(all="ignore"):
            claimed = _claimed_values(coder, bitstream)
            if claimed != expected:  # before any value is decoded: the header's size must be the announced one
                raise CodecError(f"{NAME}: bitstream claims {claimed} values but the tensor's shape needs {expected}")
            data = coder.decode(bytearray(bitstream), model_info, oob_dict={}, tool_if=None, hls_stats={},
                                approx_param_base=None, update_base_param=False, return_hls=False)
            approximator.rec(data)
            params = approximator.recompose_params(model_info, data)["parameters"]
    except CodecError:
        raise
    except (Exception, SystemExit) as exc:  # nncodec signals bad streams with assert/KeyError/RuntimeError/exit
        text = " ".join(str(exc).split())[:200]
        raise CodecError(f"{NAME}: corrupt bitstream ({type(exc).__name__}: {text})") from None
    if len(params) != 1:
        raise CodecError(f"{NAME}: bitstream holds {len(params)} tensors, expected 1")
    (values,) = params.values()
    values = np.asarray(values)
    if values.size != expected:
        raise CodecError(f"{NAME}: bitstream holds {values.size} values but the tensor's shape needs {expected}")
    return values.astype(np.float32, copy=False).reshape(-1)


# -- helper processes that decode untrusted bitstreams ---------------------------------------------

_REQ = struct.Struct("<BQQQq")  # op (0 decode, 1 encode), body length, values (decode) or rows, cols, QP
_REP = struct.Struct("<BQ")  # status (0 ok: float32 values follow; 1 error: utf-8 message), length
_READY = b"R"
_START_TIMEOUT_S = 120.0


def _deadline_s(n: int) -> float:
    """Generous: decoding runs at ~4 M values/s; loaded CI machines are slower."""
    return 60.0 + 2.0 * n / 1e6


class _WorkerLost(Exception):
    pass


class _Worker:
    def __init__(self):
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from splitinfer.common.codecs.nnc import _worker_main; _worker_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
        )
        self.w = self.proc.stdin.fileno()
        self.r = self.proc.stdout.fileno()
        os.set_blocking(self.w, False)
        got = self._read(1, time.monotonic() + _START_TIMEOUT_S)
        if bytes(got) != _READY:
            self.kill()
            raise _WorkerLost("did not start")

    def _read(self, n: int, deadline: float, into: bytearray | None = None) -> bytearray:
        buf = into if into is not None else bytearray(n)
        view, pos = memoryview(buf), 0
        with selectors.DefaultSelector() as sel:
            sel.register(self.r, selectors.EVENT_READ)
            while pos < n:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise _WorkerLost("timed out")
                got = os.readv(self.r, [view[pos:n]])
                if got == 0:
                    raise _WorkerLost(self._death())
                pos += got
        return buf

    def _write(self, data, deadline: float) -> None:
        view, pos = memoryview(data).cast("B"), 0
        with selectors.DefaultSelector() as sel:
            sel.register(self.w, selectors.EVENT_WRITE)
            while pos < view.nbytes:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise _WorkerLost("timed out")
                try:
                    pos += os.write(self.w, view[pos:])
                except BlockingIOError:
                    continue
                except (BrokenPipeError, OSError):
                    raise _WorkerLost(self._death()) from None

    def _death(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "closed its pipe"
        return f"died with signal {-code}" if code < 0 else f"exited with status {code}"

    def decode(self, body, n: int) -> np.ndarray:
        deadline = time.monotonic() + _deadline_s(n)
        self._write(_REQ.pack(0, memoryview(body).nbytes, n, 0, 0), deadline)
        self._write(body, deadline)
        status, length = _REP.unpack(self._read(_REP.size, deadline))
        if status == 0:
            if length != 4 * n:
                raise _WorkerLost(f"sent {length} bytes for {n} values")
            out = self._read(length, deadline)
            return np.frombuffer(out, dtype="<f4")
        if length > 1 << 16:
            raise _WorkerLost("sent an oversized error message")
        raise CodecError(bytes(self._read(length, deadline)).decode("utf-8", "replace"))

    def encode(self, x: np.ndarray, qp: int) -> bytes:
        """NNR bitstream of a 2+-dim float32 tensor (sent flattened with its 2-D view's rows x cols)."""
        x = np.ascontiguousarray(x, dtype="<f4")
        deadline = time.monotonic() + 4 * _deadline_s(x.size)
        shape = x.shape
        self._write(_REQ.pack(1, x.nbytes, shape[0], x.size // shape[0], qp), deadline)
        self._write(struct.pack("<B", len(shape)) + struct.pack(f"<{len(shape)}Q", *shape), deadline)
        self._write(x.reshape(-1).view(np.uint8), deadline)
        status, length = _REP.unpack(self._read(_REP.size, deadline))
        if status != 0 or length > 8 * x.nbytes + (1 << 20):
            raise _WorkerLost(f"could not encode ({bytes(self._read(min(length, 1 << 16), deadline))!r})")
        return bytes(self._read(length, deadline))

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except Exception:
                pass

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # EOF: the helper exits on its own
            self.proc.wait(timeout=2)
        except Exception:
            pass
        self.kill()


class _Pool:
    def __init__(self, size: int):
        self.size = max(1, size)
        self.idle: list[_Worker] = []
        self.count = 0
        self.cv = threading.Condition()
        self.pid = os.getpid()

    def _acquire(self) -> _Worker:
        with self.cv:
            while not self.idle and self.count >= self.size:
                self.cv.wait()
            if self.idle:
                return self.idle.pop()
            self.count += 1
        try:
            return _Worker()
        except BaseException as exc:
            with self.cv:
                self.count -= 1
                self.cv.notify()
            if isinstance(exc, (_WorkerLost, OSError)):
                raise CodecError(f"{NAME}: cannot start the decoder helper process ({exc})") from None
            raise

    def _release(self, worker: _Worker, healthy: bool) -> None:
        if not healthy:
            worker.kill()
        with self.cv:
            if healthy:
                self.idle.append(worker)
            else:
                self.count -= 1
            self.cv.notify()

    def decode(self, body, n: int) -> np.ndarray:
        worker = self._acquire()
        healthy = False
        try:
            out = worker.decode(body, n)
            healthy = True
            return out
        except CodecError:
            healthy = True  # the helper reported a bad stream and carries on
            raise
        except _WorkerLost as exc:
            raise CodecError(f"{NAME}: the decoder {exc} on this payload (corrupt bitstream?)") from None
        finally:
            self._release(worker, healthy)

    def encode(self, x: np.ndarray, qp: int) -> bytes:
        """Our own tensor, coded in a helper; if the helper is lost, coded here instead (never lost)."""
        try:
            worker = self._acquire()
        except CodecError:
            return encode_nnr(x, qp)
        healthy = False
        try:
            out = worker.encode(x, qp)
            healthy = True
            return out
        except _WorkerLost:
            return encode_nnr(x, qp)
        finally:
            self._release(worker, healthy)

    def warm_up(self) -> None:
        """Start every helper now (encoding uses them all at once), not on the first frames."""
        workers = []
        try:
            for _ in range(self.size):
                workers.append(self._acquire())
        finally:
            for w in workers:
                self._release(w, True)

    def close(self) -> None:
        with self.cv:
            idle, self.idle = self.idle, []
            self.count -= len(idle)
        for w in idle:
            w.close()


_pool_lock = threading.Lock()
_the_pool: _Pool | None = None


def _pool() -> _Pool:
    global _the_pool
    with _pool_lock:
        if _the_pool is None or _the_pool.pid != os.getpid():
            size = os.environ.get("SPLITINFER_NNC_WORKERS") or min(4, os.cpu_count() or 1)
            _the_pool = _Pool(int(size))
        return _the_pool


def _forget_pool_after_fork() -> None:
    """A forked child must not share its parent's helpers (their pipes belong to the parent)."""
    global _the_pool, _pool_lock, _core_lock
    _the_pool = None
    _pool_lock = threading.Lock()
    _core_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


@atexit.register
def _shutdown() -> None:
    pool = _the_pool
    if pool is not None and pool.pid == os.getpid():
        pool.close()


def _read_exact(f, n: int) -> bytes | None:
    data = f.read(n)
    return data if data is not None and len(data) == n else None


def _worker_main() -> None:
    """Helper process: requests on stdin, replies on the original stdout; nncodec's prints go nowhere."""
    out = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    _core()

    def send(data) -> None:
        view = memoryview(data).cast("B")
        try:
            while view.nbytes:
                view = view[os.write(out, view):]
        except BrokenPipeError:  # the parent went away: nobody is left to answer, so no traceback either
            os._exit(0)

    try:
        import resource

        base_as, hard_as = resource.getrlimit(resource.RLIMIT_AS)
    except Exception:  # not on this platform
        resource = None
    send(_READY)
    stdin = sys.stdin.buffer
    while True:
        head = _read_exact(stdin, _REQ.size)
        if head is None:
            return
        op, length, n, _cols, qp = _REQ.unpack(head)
        if op == 1:  # encode our own tensor (trusted input from the parent)
            ndim = _read_exact(stdin, 1)
            dims = _read_exact(stdin, 8 * ndim[0]) if ndim else None
            body = _read_exact(stdin, length) if dims is not None else None
            if body is None:
                return
            x = np.frombuffer(body, "<f4").reshape(struct.unpack(f"<{ndim[0]}Q", dims))
            stream = encode_nnr(x, qp)
            send(_REP.pack(0, len(stream)))
            send(stream)
            continue
        body = _read_exact(stdin, length) if length else b""
        if body is None:
            return
        if resource is not None:  # a lying stream must not eat the machine: cap memory per request
            cap = _vm_bytes() + 16 * 4 * n + (512 << 20)
            if hard_as != resource.RLIM_INFINITY:
                cap = min(cap, hard_as)
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard_as))
        try:
            values = decode_nnr(body, n)
        except CodecError as exc:
            msg = str(exc).encode()
            send(_REP.pack(1, len(msg)) + msg)
            continue
        except MemoryError:
            msg = f"{NAME}: corrupt bitstream (decoding it needs more memory than {n} values justify)".encode()
            send(_REP.pack(1, len(msg)) + msg)
            continue
        finally:
            if resource is not None:
                resource.setrlimit(resource.RLIMIT_AS, (base_as, hard_as))
        values = np.ascontiguousarray(values, dtype="<f4")
        send(_REP.pack(0, values.nbytes))
        send(values)


def _vm_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except Exception:
        return 4 << 30


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
