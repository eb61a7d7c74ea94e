"""How hard the UE tries before it reports a frame failed, and how a failed call is classified.

Why a policy object: the UE meets three kinds of trouble (the server is absent or restarting, the server
is frozen, the server refuses) and each frame must end exactly once, answered or failed. Terms:
- transient failure: a status after which the same request may succeed later (UNAVAILABLE,
  DEADLINE_EXCEEDED, CANCELLED, ABORTED), so it is retried; anything else is a refusal and ends the frame.
- reconnect budget (`reconnect_s`, the device's `--reconnect-s`): how long the UE keeps trying to reach a
  server that went away, and how long it waits for one that is not there yet at start.
- attempt: one sending of a frame; after `max_attempts` transient failures the frame is reported failed.
- frame timeout (`--timeout`): the deadline of one frame's reply, and of each call made while waiting.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from splitinfer.common.core.errors import UserError

# Status codes after which the same request may succeed later: the server is gone, restarting, busy or slow.
TRANSIENT = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "ABORTED"})
# gRPC reports a failed certificate check as UNAVAILABLE; these words in its details mean retrying is futile.
TLS_FAILURES = ("handshake failed", "verification check failed", "certificate verify failed")


@dataclass
class RetryPolicy:
    """How hard the UE tries before it reports a frame failed (seconds)."""

    reconnect_s: float = 60.0  # give up when the server stays unreachable this long
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    max_attempts: int = 3  # transient failures one frame may meet before it is reported failed
    frame_timeout_s: float = 120.0  # deadline of one frame's reply (unary: of the call)
    setup_timeout_s: float = 180.0  # deadline of the set-up's answer (the server may build Part II first)

    def __post_init__(self):
        if self.frame_timeout_s <= 0 or self.setup_timeout_s <= 0:
            raise UserError("--timeout must be positive")
        if self.reconnect_s < 0:
            raise UserError("--reconnect-s must not be negative")
        if self.max_attempts < 1:
            raise UserError("--max-attempts must be at least 1")

    @classmethod
    def from_options(cls, timeout_s: float, reconnect_s: float, max_attempts: int) -> "RetryPolicy":
        """The device's --timeout, --reconnect-s and --max-attempts; the set-up may take longer than a
        frame (the server builds Part II first), so its deadline is at least 180 s."""
        return cls(reconnect_s=reconnect_s, max_attempts=max_attempts, frame_timeout_s=timeout_s,
                   setup_timeout_s=max(timeout_s, 180.0))

    def delays(self):
        """Backoff delays: exponential with jitter (so restarted UEs do not reconnect in lockstep)."""
        d = self.backoff_initial_s
        while True:
            yield d * random.uniform(0.75, 1.25)
            d = min(d * 2, self.backoff_max_s)


class RpcFailure(Exception):
    """A failed call, classified: `code` (a grpc.StatusCode name), `transient` (worth retrying)."""

    def __init__(self, code: str, details: str, address: str, transient: bool | None = None):
        self.code, self.details, self.address = code, details, address
        self.transient = code in TRANSIENT if transient is None else transient
        super().__init__(self.message)

    @property
    def message(self) -> str:
        if self.code == "UNAVAILABLE":
            return f"server {self.address} unavailable: {self.details}"
        return f"server {self.address} refused: {self.code}: {self.details}"

    @property
    def tls_failure(self) -> bool:
        """A certificate or handshake problem: reported UNAVAILABLE by gRPC, yet it does not heal."""
        return any(m in self.details.lower() for m in TLS_FAILURES)

    def user_error(self) -> UserError:
        return UserError(self.message)


def classify(exc, address: str, transient: bool | None = None) -> RpcFailure:
    """A grpc.RpcError (or any exception a call raised) as an RpcFailure."""
    code = exc.code() if hasattr(exc, "code") and callable(exc.code) else None
    details = exc.details() if hasattr(exc, "details") and callable(exc.details) else str(exc)
    return RpcFailure(code.name if code is not None else "UNKNOWN", details or "", address, transient)
