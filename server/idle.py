"""Cancels streams that wait on their client too long (`serve --stream-idle-s`), one thread for all streams.

Why: a stalled or vanished client would otherwise hold a stream slot (and its half-received frame) forever.
A stream is "busy" while the server works on its set-up or frame (that time never counts) and "idle" from
the moment it waits for the client's next message.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("splitinfer.server")


class IdleWatch:
    """Cancels streams that waited `idle_s` seconds for their client (one thread for all streams); the time
    the server itself works on a stream's set-up or frame does not count."""

    def __init__(self, idle_s: float, on_cancel=None):
        self.idle_s = float(idle_s)
        self.on_cancel = on_cancel
        self._streams: dict[int, list] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, context) -> int:
        key = id(context)
        with self._lock:
            self._streams[key] = [context, time.monotonic()]
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="idle-watch", daemon=True)
                self._thread.start()
        return key

    def touch(self, key: int) -> None:
        """The stream now waits for its client."""
        entry = self._streams.get(key)
        if entry is not None:
            entry[1] = time.monotonic()

    def busy(self, key: int) -> None:
        """The server works on the stream (not idle, however long it takes)."""
        entry = self._streams.get(key)
        if entry is not None:
            entry[1] = None

    def remove(self, key: int) -> None:
        with self._lock:
            self._streams.pop(key, None)

    def _loop(self) -> None:
        while True:
            time.sleep(min(1.0, self.idle_s / 4))
            now = time.monotonic()
            with self._lock:
                stale = [k for k, (_, t) in self._streams.items() if t is not None and now - t > self.idle_s]
                contexts = [self._streams.pop(k)[0] for k in stale]
            for ctx in contexts:
                log.warning("stream idle for more than %.0f s: cancelled", self.idle_s)
                ctx.cancel()
                if self.on_cancel is not None:
                    self.on_cancel()
