"""The C allocator (glibc) tuned for a stream of multi-MB messages, and trimmed after rare large frees.

Why: glibc gives allocations over its mmap threshold back to the kernel on free; a stream of 1-4 MB messages
then pays a page fault per 4 KiB on every message (measured: 2-4x slower framing). `tune_allocator` keeps
freed multi-MB buffers mapped; it is process-wide, so only the process entry points (serve, device, demo,
benchmarks) call it. That is right for the steady flow of frames, but after a half-received frame was
abandoned, or a Part II was built and others evicted, the freed memory would stay resident although nothing
uses it: `release_free_memory` (glibc `malloc_trim`) hands it back; it costs milliseconds, so it is called
only after such events. No protobuf here: the KServe environment's model repository calls it too.
Both return False where the C library is not glibc. `heap_in_use_bytes` (glibc `mallinfo2`) is what the
allocator has handed out and not had back: unlike the resident size, it does not move with freed pages glibc
keeps or with fragmentation, so a leak shows in it and nothing else does (the server exports it as a gauge).
"""

from __future__ import annotations

from functools import lru_cache

MIB = 1 << 20


@lru_cache(maxsize=None)
def _libc():
    """glibc as a ctypes library, or None; looked up once (find_library runs ldconfig in a subprocess)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def tune_allocator() -> bool:
    """Keep freed multi-MB message buffers mapped, so each new message does not page-fault."""
    libc = _libc()
    try:
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 256 * MIB)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except AttributeError:  # no libc, or not glibc
        return False


def release_free_memory() -> bool:
    """Trim free memory from every heap of the allocator."""
    libc = _libc()
    try:
        return bool(libc.malloc_trim(0))
    except AttributeError:
        return False


@lru_cache(maxsize=None)
def _mallinfo2():
    """glibc's mallinfo2 with its result type set, or None (glibc before 2.33, or not glibc)."""
    import ctypes

    fn = getattr(_libc(), "mallinfo2", None)
    if fn is None:
        return None

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                          "fsmblks", "uordblks", "fordblks", "keepcost")]

    fn.restype = MallInfo2
    return fn


def heap_in_use_bytes() -> int | None:
    """Bytes allocated through malloc and not freed (mallinfo2's uordblks + hblkhd), or None where unknown."""
    fn = _mallinfo2()
    if fn is None:
        return None
    info = fn()
    return int(info.uordblks + info.hblkhd)
