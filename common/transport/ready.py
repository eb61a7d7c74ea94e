"""The network process's ready line: the first stdout line saying where it listens (printed by server/main.py).

Why a module of its own: the server prints it and whoever starts the server as an OS process
(`splitinfer.experiments.server_process`, tests) reads it; both import it from here, so neither imports
the other. A *ready line* is `READY_PREFIX HOST:PORT metrics PORT ...` (the ports the server really bound,
so callers may ask for port 0).
"""

from __future__ import annotations

# The network process prints this, then its bound ports, on its first stdout line (server/main.py).
READY_PREFIX = "splitinfer serve: listening on"


def parse_ready(line: str) -> tuple[int, int]:
    """(gRPC port, metrics port) of a ready line; ValueError names what is missing."""
    if not line.startswith(READY_PREFIX):
        raise ValueError(f"not a ready line (expected {READY_PREFIX!r} first): {line[:200]!r}")
    words = line[len(READY_PREFIX):].split()
    try:
        port = int(words[0].rsplit(":", 1)[1])
        metrics_port = int(words[words.index("metrics") + 1])
    except (IndexError, ValueError) as exc:
        raise ValueError(f"ready line without HOST:PORT and 'metrics PORT': {line[:200]!r}") from exc
    return port, metrics_port
