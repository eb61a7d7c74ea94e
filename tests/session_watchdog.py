"""A last-resort watchdog for the test session: no hang can run CI past its limit without saying where.

Why: pytest-timeout (signal method) fails a test that runs too long by raising inside it, but it cannot
reach a test blocked where no Python code runs again (a C call that never returns, a `finally` waiting on
a child stuck in the kernel), and it is armed once per test. CI then ran until its own limit killed it,
printing nothing about the test. This thread watches from outside: when the running test passes its
timeout plus `GRACE_S`, or the whole session passes `SESSION_LIMIT_S`, it prints the test's id and every
thread's stack to the real stderr and ends the process with exit status 3.

Terms: *limit of a test* = its `@pytest.mark.timeout(N)` or the ini `timeout`, plus `GRACE_S`.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time

import pytest

GRACE_S = float(os.environ.get("SPLITINFER_TEST_GRACE_S", 180))
SESSION_LIMIT_S = float(os.environ.get("SPLITINFER_TEST_SESSION_LIMIT_S", 3000))


def test_limit_s(item) -> float:
    """The timeout that applies to `item` (its marker, else the ini value), plus the grace."""
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        base = float(marker.args[0])
    else:
        base = float(item.config.getini("timeout") or 900)
    return base + GRACE_S


class Watchdog:
    """Watches the running test from a daemon thread; `bite` ends the process with the stacks."""

    def __init__(self, session_limit_s: float = SESSION_LIMIT_S, poll_s: float = 1.0, capture=None):
        self.capture = capture  # pytest's capture manager: suspended first so the words reach the terminal
        self.session_start = time.monotonic()
        self.session_limit_s = session_limit_s
        self.poll_s = poll_s
        self.current: tuple[str, float, float] | None = None  # nodeid, start, limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="test-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def overrun(self, now: float) -> str | None:
        """Why the session must end now, or None."""
        if now - self.session_start > self.session_limit_s:
            where = f" (running: {self.current[0]})" if self.current else ""
            return f"the test session ran past {self.session_limit_s:.0f} s{where}"
        if self.current is not None:
            nodeid, start, limit = self.current
            if now - start > limit:
                return f"{nodeid} ran past {limit:.0f} s (its timeout + {GRACE_S:.0f} s) and pytest-timeout could not end it"
        return None

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            reason = self.overrun(time.monotonic())
            if reason:
                self.bite(reason)

    def bite(self, reason: str) -> None:
        try:
            if self.capture is not None:
                self.capture.suspend_global_capture(in_=False)
        except Exception:  # noqa: BLE001 - the process ends below whatever state capture is in
            pass
        err = sys.__stderr__
        err.write(f"\n\nsplitinfer test watchdog: {reason}; every thread's stack follows, then exit 3\n")
        err.flush()
        faulthandler.dump_traceback(file=err, all_threads=True)
        err.flush()
        os._exit(3)


class WatchdogPlugin:
    def __init__(self, config):
        self.dog = Watchdog(capture=config.pluginmanager.getplugin("capturemanager"))
        self.dog.start()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.dog.current = (item.nodeid, time.monotonic(), test_limit_s(item))
        try:
            yield
        finally:
            self.dog.current = None

    def pytest_unconfigure(self, config):
        self.dog.stop()
