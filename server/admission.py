"""Admission control: decode and Part II work runs in a few slots, with a bounded, fair queue and a deadline.

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

Fair share: a call comes with a *key*, its client (the gRPC peer: one connection). A key's *load* is its
calls holding a slot or waiting for one. A freed slot goes to the waiting call whose key holds the fewest
slots, then has the lowest load, then was served longest ago, then came first; and when the queue is full, a newcomer whose key would
still have a lower load than the most loaded waiting key takes the place of that key's newest waiter,
which is refused at once. So clients that keep 16 calls in flight each cannot starve a client with one
frame in flight: its call waits behind at most the calls already holding slots.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

from splitinfer.server.errors import unavailable


class _Ticket:
    __slots__ = ("key", "granted", "evicted")

    def __init__(self, key: str):
        self.key, self.granted, self.evicted = key, False, False


class Admission:
    def __init__(self, slots: int, queue: int, wait_s: float):
        self.slots = max(1, int(slots))
        self.queue = max(0, int(queue))
        self.wait_s = float(wait_s)
        self._cond = threading.Condition()
        self._busy = 0
        self._held: dict[str, int] = {}  # key -> slots it holds
        self._waiters: list[_Ticket] = []  # in arrival order
        self._served: dict[str, int] = {}  # key -> number of its last grant (keys with calls in only)
        self._grants = 0
        self.refused = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _load(self, key: str) -> int:
        return self._held.get(key, 0) + sum(1 for t in self._waiters if t.key == key)

    def _take(self, key: str) -> None:
        self._busy += 1
        self._held[key] = self._held.get(key, 0) + 1
        self._grants += 1
        self._served[key] = self._grants

    def _grant(self) -> None:
        """Hand free slots to waiters: fewest slots held by their key, then lowest load, then the key served
        longest ago, then first come."""
        while self._busy < self.slots and self._waiters:
            order = {id(t): k for k, t in enumerate(self._waiters)}
            best = min(self._waiters, key=lambda t: (self._held.get(t.key, 0), self._load(t.key),
                                                     self._served.get(t.key, 0), order[id(t)]))
            self._waiters.remove(best)
            best.granted = True
            self._take(best.key)
            self._cond.notify_all()

    def _make_room(self, key: str) -> bool:
        """With the queue full: evict the newest waiter of the most loaded key when `key` (with this call)
        would still be less loaded; False when no waiter is more loaded."""
        mine = self._load(key) + 1
        loads = {t.key: self._load(t.key) for t in self._waiters}
        heavy = max(loads, key=loads.get, default=None)
        if heavy is None or loads[heavy] <= mine:
            return False
        victim = next(t for t in reversed(self._waiters) if t.key == heavy)
        self._waiters.remove(victim)
        victim.evicted = True
        self._cond.notify_all()
        return True

    def _acquire(self, key: str, timeout: float) -> bool:
        with self._cond:
            if self._busy < self.slots and not self._waiters:
                self._take(key)
                return True
            if timeout <= 0 or (len(self._waiters) >= self.queue and not self._make_room(key)):
                self.refused += 1
                return False
            ticket = _Ticket(key)
            self._waiters.append(ticket)
            deadline = time.monotonic() + timeout
            while not (ticket.granted or ticket.evicted):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if ticket.granted:
                return True
            if not ticket.evicted:
                self._waiters.remove(ticket)
            self._forget(key)
            self.refused += 1
            return False

    def _release(self, key: str) -> None:
        with self._cond:
            self._busy -= 1
            left = self._held.get(key, 1) - 1
            if left:
                self._held[key] = left
            else:
                self._held.pop(key, None)
            self._grant()
            self._forget(key)

    def _forget(self, key: str) -> None:
        """A key is remembered only while it has calls in (the dicts never grow with past connections)."""
        if key not in self._held and all(t.key != key for t in self._waiters):
            self._served.pop(key, None)

    @contextmanager
    def slot(self, what: str = "request", time_remaining: float | None = None, key: str = ""):
        """Hold one work slot for the block; UNAVAILABLE when none frees in time. `key`: the caller's client
        (its fair share, see the module docstring)."""
        timeout = self.wait_s if time_remaining is None else max(0.0, min(self.wait_s, time_remaining - 0.05))
        t0 = time.monotonic()
        if not self._acquire(key, timeout):
            raise unavailable(f"server busy: {what} found all {self.slots} work slots taken and "
                              f"{self.waiting}/{self.queue} calls queued for {time.monotonic() - t0:.1f} s; "
                              "retry later")
        try:
            yield
        finally:
            self._release(key)
