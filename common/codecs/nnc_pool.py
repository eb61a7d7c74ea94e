"""NNC's helper processes: untrusted bitstreams decoded (and our own tensors coded) outside this process.

Why: the deepCABAC decoder (C++) reads the bitstream without bounds checks and takes entry points (raw
offsets) from it, so a hostile or damaged stream can read out of bounds and kill the process. A server
must survive any payload, so decoding runs in a small pool of helper processes (pipes, no pickle): a
crash, a hang past the deadline or a memory blow-up there (address space capped by what the announced
shape needs, whatever the stream claims) becomes a `CodecError` and the helper is replaced. Helpers also
give real parallelism (nncodec holds the GIL). Pool size: $SPLITINFER_NNC_WORKERS (default min(4, CPUs));
each process has its own pool (re-created after fork). Protocol: a `REQUEST` (op 0 decode, 1 encode),
then its body; a `REPLY` (status 0: the values or bitstream follow; 1: a utf-8 error message).
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

import numpy as np

from splitinfer.common.codecs import CodecError
from splitinfer.common.codecs.nnc_core import NAME, core, decode_nnr, encode_nnr

REQUEST = struct.Struct("<BQQQq")  # op (0 decode, 1 encode), body length, values (decode) or rows, cols, QP
REPLY = struct.Struct("<BQ")  # status (0 ok: float32 values follow; 1 error: utf-8 message), length
READY = b"R"
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
            [sys.executable, "-c", "from splitinfer.common.codecs.nnc_pool import worker_main; worker_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
        )
        self.w = self.proc.stdin.fileno()
        self.r = self.proc.stdout.fileno()
        os.set_blocking(self.w, False)
        got = self._read(1, time.monotonic() + _START_TIMEOUT_S)
        if bytes(got) != READY:
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
        self._write(REQUEST.pack(0, memoryview(body).nbytes, n, 0, 0), deadline)
        self._write(body, deadline)
        status, length = REPLY.unpack(self._read(REPLY.size, deadline))
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
        self._write(REQUEST.pack(1, x.nbytes, shape[0], x.size // shape[0], qp), deadline)
        self._write(struct.pack("<B", len(shape)) + struct.pack(f"<{len(shape)}Q", *shape), deadline)
        self._write(x.reshape(-1).view(np.uint8), deadline)
        status, length = REPLY.unpack(self._read(REPLY.size, deadline))
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


class HelperPool:
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
_the_pool: HelperPool | None = None


def helper_pool() -> HelperPool:
    global _the_pool
    with _pool_lock:
        if _the_pool is None or _the_pool.pid != os.getpid():
            size = os.environ.get("SPLITINFER_NNC_WORKERS") or min(4, os.cpu_count() or 1)
            _the_pool = HelperPool(int(size))
        return _the_pool


def _forget_pool_after_fork() -> None:
    """A forked child must not share its parent's helpers (their pipes belong to the parent)."""
    global _the_pool, _pool_lock
    _the_pool = None
    _pool_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


@atexit.register
def _shutdown() -> None:
    pool = _the_pool
    if pool is not None and pool.pid == os.getpid():
        pool.close()


def _read_exact(f, n: int) -> bytes | None:
    data = f.read(n)
    return data if data is not None and len(data) == n else None


def worker_main() -> None:
    """Helper process: requests on stdin, replies on the original stdout; nncodec's prints go nowhere."""
    out = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    core()

    def send(data) -> None:
        view = memoryview(data).cast("B")
        try:
            while view.nbytes:
                view = view[os.write(out, view):]
        except BrokenPipeError:  # the parent went away: nobody is left to answer, so no traceback either
            os._exit(0)

    try:
        import resource

        limits = resource, *resource.getrlimit(resource.RLIMIT_AS)
    except Exception:  # not on this platform
        limits = None
    send(READY)
    stdin = sys.stdin.buffer
    while True:
        head = _read_exact(stdin, REQUEST.size)
        if head is None:
            return
        op, length, n, _cols, qp = REQUEST.unpack(head)
        served = _serve_encode(stdin, send, length, qp) if op == 1 else _serve_decode(stdin, send, length, n, limits)
        if not served:
            return


def _serve_encode(stdin, send, length: int, qp: int) -> bool:
    """Encode our own tensor (trusted input from the parent): ndim u8, dims u64 x ndim, float32 values."""
    ndim = _read_exact(stdin, 1)
    dims = _read_exact(stdin, 8 * ndim[0]) if ndim else None
    body = _read_exact(stdin, length) if dims is not None else None
    if body is None:
        return False
    x = np.frombuffer(body, "<f4").reshape(struct.unpack(f"<{ndim[0]}Q", dims))
    stream = encode_nnr(x, qp)
    send(REPLY.pack(0, len(stream)))
    send(stream)
    return True


def _serve_decode(stdin, send, length: int, n: int, limits) -> bool:
    """Decode an untrusted bitstream of `n` values, the address space capped by what they need."""
    body = _read_exact(stdin, length) if length else b""
    if body is None:
        return False
    if limits is not None:  # a lying stream must not eat the machine: cap memory per request
        resource, base_as, hard_as = limits
        cap = _vm_bytes() + 16 * 4 * n + (512 << 20)
        if hard_as != resource.RLIM_INFINITY:
            cap = min(cap, hard_as)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard_as))
    try:
        values = decode_nnr(body, n)
    except CodecError as exc:
        msg = str(exc).encode()
        send(REPLY.pack(1, len(msg)) + msg)
        return True
    except MemoryError:
        msg = f"{NAME}: corrupt bitstream (decoding it needs more memory than {n} values justify)".encode()
        send(REPLY.pack(1, len(msg)) + msg)
        return True
    finally:
        if limits is not None:
            resource.setrlimit(resource.RLIMIT_AS, (base_as, hard_as))
    values = np.ascontiguousarray(values, dtype="<f4")
    send(REPLY.pack(0, values.nbytes))
    send(values)
    return True


def _vm_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except Exception:
        return 4 << 30
