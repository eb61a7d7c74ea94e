"""In-process link shaper for the UE process: a rate and a one-way delay, without `tc`.

Why: on machines where `tc` is not allowed at all (no root, no NET_ADMIN), the UE process can
still emulate a slow uplink. It holds each outgoing message back as a link of `rate_bps` with
propagation delay `delay_s` would: a message's last bit leaves when the link has serialized it
(after the messages before it), and arrives `delay_s` later. Delays do not add up over a stream,
because serialization is queued and propagation overlaps, as on a real link. The real network
under it should be much faster than `rate_bps` (loopback, LAN) for the emulation to hold.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterable, Iterator, TypeVar

from splitinfer.common.core.errors import UserError
from splitinfer.common.core.rates import parse_rate  # noqa: F401  (one rate parser, tc's units; re-exported)

T = TypeVar("T")


def parse_delay(text: str | float) -> float:
    """'20ms', '1.5s', '500us' or a number of milliseconds -> seconds (as tc/netem write delays)."""
    if isinstance(text, (int, float)):
        value = float(text) / 1e3
    else:
        s = str(text).strip().lower()
        try:
            for suffix, scale in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
                if s.endswith(suffix):
                    value = float(s[: -len(suffix)]) * scale
                    break
            else:
                value = float(s) / 1e3
        except ValueError:
            raise UserError(f"bad delay {text!r}: expected e.g. 20ms, 1.5s, 500us") from None
    if value < 0:
        raise UserError(f"bad delay {text!r}: must not be negative")
    return value


class Shaper:
    """A serializing link of `rate_bps` (None = unlimited) and one-way `delay_s`; thread-safe."""

    def __init__(self, rate_bps: float | None = None, delay_s: float = 0.0,
                 clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep):
        if rate_bps is not None and rate_bps <= 0:
            raise UserError(f"shaper rate must be positive, got {rate_bps}")
        if delay_s < 0:
            raise UserError(f"shaper delay must not be negative, got {delay_s}")
        self.rate_bps = rate_bps
        self.delay_s = delay_s
        self._clock, self._sleep = clock, sleep
        self._link_free = 0.0  # when the link finishes serializing what it was given
        self._lock = threading.Lock()
        self.bytes_sent = 0
        self.seconds_held = 0.0

    @property
    def active(self) -> bool:
        return self.rate_bps is not None or self.delay_s > 0

    def release_time(self, nbytes: int, ready: float | None = None) -> float:
        """Book `nbytes` handed over at `ready` (default now); the clock time they reach the far end."""
        with self._lock:
            now = self._clock() if ready is None else ready
            start = max(now, self._link_free)
            done = start + (nbytes * 8.0 / self.rate_bps if self.rate_bps else 0.0)
            self._link_free = done
            self.bytes_sent += nbytes
        return done + self.delay_s

    def pace(self, nbytes: int, ready: float | None = None) -> float:
        """Block until `nbytes` handed over at `ready` (default now) have crossed the link; seconds held."""
        if not self.active:
            return 0.0
        wait = self.release_time(nbytes, ready) - self._clock()
        if wait > 0:
            self._sleep(wait)
        held = max(wait, 0.0)
        self.seconds_held += held
        return held

    def wrap(self, messages: Iterable[T], size: Callable[[T], int] | None = None) -> Iterator[T]:
        """Yield `messages` (e.g. a gRPC request stream) as they would leave the emulated link.

        A pump thread takes each message from `messages` as soon as it exists and books it on the
        link then (its true ready time); this generator hands it on at its arrival time. So
        serialization queues and propagation overlaps as on a real link: a burst of N messages takes
        N serializations plus one delay, not N delays. Size defaults to protobuf's ByteSize().
        """
        size = size or (lambda m: m.ByteSize())
        booked: queue.Queue = queue.Queue()
        end = object()

        def pump():
            try:
                for message in messages:
                    booked.put((self.release_time(size(message)), message))
            except BaseException as exc:  # handed to the consumer
                booked.put((None, exc))
                return
            booked.put((None, end))

        threading.Thread(target=pump, name="shaper-pump", daemon=True).start()
        while True:
            release, message = booked.get()
            if release is None:
                if message is end:
                    return
                raise message
            wait = release - self._clock()
            if wait > 0:
                self._sleep(wait)
                self.seconds_held += wait
            yield message


def from_options(rate: str | float | None, delay: str | float | None) -> Shaper | None:
    """A Shaper from `--shape-rate/--shape-delay` values, or None when neither is given."""
    if rate in (None, "") and delay in (None, ""):
        return None
    return Shaper(parse_rate(rate) if rate not in (None, "") else None,
                  parse_delay(delay) if delay not in (None, "") else 0.0)
