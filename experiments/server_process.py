"""The network-process handle: start `splitinfer.server.main` as a separate OS process, stop it gracefully.

Used by the demo, netexp, tests and benches; it starts the server by module name and never imports it.

Why a separate process rather than a thread: the point of the emulation is two processes that share
nothing but the gRPC connection (own interpreter, own onnxruntime threads, own metrics registry).
The server is asked for port 0 and reports the ports it really bound on its first stdout line, so
no two runs race for a "free" port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque

from splitinfer.common.core.errors import UserError
from splitinfer.common.transport.ready import READY_PREFIX, parse_ready


class ServerProcess:
    """A running `python -m splitinfer.server.main` (context manager; `stop()` sends SIGTERM).

    `argv_prefix` runs it under another command, e.g. `["ip", "netns", "exec", NS]` (netexp); `port` and
    `metrics_port` 0 let the server pick free ones, which it reports.
    """

    def __init__(self, models=None, *, device: str = "cpu", threads: int | None = None, host: str = "127.0.0.1",
                 max_message_mb: float | None = None, extra_args=(), env: dict | None = None,
                 timeout: float = 120.0, cpus: set[int] | None = None, argv_prefix=(), port: int = 0,
                 metrics_port: int = 0):
        args = [*argv_prefix, sys.executable, "-m", "splitinfer.server.main", "--host", host, "--port", str(port),
                "--metrics-port", str(metrics_port), "--device", device]
        if models is not None:
            args += ["--models", str(models)]
        if threads:
            args += ["--threads", str(threads)]
        if max_message_mb:
            args += ["--max-message-mb", str(max_message_mb)]
        args += list(extra_args)
        preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})}, preexec_fn=preexec)
        self.stderr_tail: deque[str] = deque(maxlen=50)
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.host, self.port, self.metrics_port = host, None, None
        line = self._read_ready(timeout)
        self.port, self.metrics_port = parse_ready(line)
        self.ready_line = line
        threading.Thread(target=self._drain_stdout, daemon=True).start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _drain_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_tail.append(line.rstrip())

    def _drain_stdout(self) -> None:
        for _ in self.proc.stdout:
            pass

    def _read_ready(self, timeout: float) -> str:
        result: list[str] = []

        def read():
            for line in self.proc.stdout:
                if line.startswith(READY_PREFIX):
                    result.append(line.strip())
                    return

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout)
        if not result:
            self.kill()
            time.sleep(0.2)
            tail = "\n".join(self.stderr_tail)
            raise UserError(f"network process did not start within {timeout:.0f} s "
                            f"(exit code {self.proc.poll()}): {tail[-1500:]}")
        return result[0]

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the graceful shutdown; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
