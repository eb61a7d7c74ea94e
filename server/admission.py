"""Admission control: decode and Part II work runs in a few slots, with a bounded queue and a deadline.

Why not gRPC's `maximum_concurrent_rpcs`: past that limit gRPC refuses every call, health checks
included, so a burst of tiny requests (12 clients re-sending a 62-byte NNC call) made the server refuse
all health checks and all good frames. Instead gRPC takes every call (a large thread pool, no limit),
health checks and token refusals never wait on anything, and only the expensive part of a call (decoding,
building or running Part II) asks `Admission.slot()` for one of `slots` places:
- at most `queue` calls wait for a place; one more is refused at once;
- a call waits at most `wait_s` (and never past its own gRPC deadline), then is refused;
both with UNAVAILABLE ("server busy ... retry later": the status clients, the UE included, retry with
backoff; RESOURCE_EXHAUSTED stays for requests too large to ever pass), so a flood turns into fast refusals
rather than threads parked on the NNC helper pool, and every call ends soon. The queue must hold what
legitimate clients can ask at once: each stream has at most one frame in work, so the server's default is
max_streams + 4 x slots.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

from splitinfer.server.errors import unavailable


class Admission:
    def __init__(self, slots: int, queue: int, wait_s: float):
        self.slots = max(1, int(slots))
        self.queue = max(0, int(queue))
        self.wait_s = float(wait_s)
        self._free = threading.Semaphore(self.slots)
        self._lock = threading.Lock()
        self.waiting = 0
        self.refused = 0

    def _acquire(self, timeout: float) -> bool:
        if self._free.acquire(blocking=False):
            return True
        with self._lock:
            if self.waiting >= self.queue:
                self.refused += 1
                return False
            self.waiting += 1
        try:
            got = timeout > 0 and self._free.acquire(timeout=timeout)
        finally:
            with self._lock:
                self.waiting -= 1
        if not got:
            with self._lock:
                self.refused += 1
        return got

    @contextmanager
    def slot(self, what: str = "request", time_remaining: float | None = None):
        """Hold one work slot for the block; UNAVAILABLE when none frees in time."""
        timeout = self.wait_s if time_remaining is None else max(0.0, min(self.wait_s, time_remaining - 0.05))
        t0 = time.monotonic()
        if not self._acquire(timeout):
            raise unavailable(f"server busy: {what} found all {self.slots} work slots taken and "
                            f"{self.waiting}/{self.queue} calls queued for {time.monotonic() - t0:.1f} s; retry later")
        try:
            yield
        finally:
            self._free.release()
