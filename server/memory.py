"""Give memory the process freed back to the system now, after the rare events that free a lot of it.

Why: `wire.tune_allocator` makes glibc keep freed multi-MB buffers mapped (so each frame's messages do not
page-fault), and each thread's arena keeps its own. That is right for the steady flow of frames, but after a
half-received frame was abandoned, or a Part II was built (graph copies, the reference run) and others
evicted, the freed memory would stay resident although nothing uses it. `release_free_memory` (glibc
`malloc_trim`) hands it back; it costs milliseconds, so it is called only after such events. No protobuf
here: the model repository (also used under KServe's environment) calls it.
"""

from __future__ import annotations


def release_free_memory() -> bool:
    """Trim free memory from every heap of the allocator; False where not glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        return bool(ctypes.CDLL(name).malloc_trim(0))
    except (OSError, AttributeError):
        return False
