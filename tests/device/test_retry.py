"""retry.py: the backoff, the option checks and how failures are classified; the client honours the
reconnect budget against an absent server (a real closed port, real gRPC)."""

import socket
import time

import pytest

from splitinfer.common.core.errors import UserError
from splitinfer.device.retry import RetryPolicy, RpcFailure


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap():
    policy = RetryPolicy(backoff_initial_s=0.1, backoff_max_s=1.0)
    delays = policy.delays()
    got = [next(delays) for _ in range(8)]
    nominal = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    for d, n in zip(got, nominal):
        assert 0.75 * n <= d <= 1.25 * n, (got, nominal)


def test_options_are_checked_and_the_setup_gets_at_least_180_s():
    p = RetryPolicy.from_options(timeout_s=5, reconnect_s=2, max_attempts=4)
    assert (p.frame_timeout_s, p.reconnect_s, p.max_attempts, p.setup_timeout_s) == (5, 2, 4, 180.0)
    assert RetryPolicy.from_options(300, 0, 1).setup_timeout_s == 300
    for bad, word in (((0, 1, 1), "--timeout"), ((1, -1, 1), "--reconnect-s"), ((1, 1, 0), "--max-attempts")):
        with pytest.raises(UserError, match=word):
            RetryPolicy.from_options(*bad)


def test_failures_are_classified():
    assert RpcFailure("UNAVAILABLE", "gone", "h:1").transient
    assert RpcFailure("DEADLINE_EXCEEDED", "slow", "h:1").transient
    refused = RpcFailure("INVALID_ARGUMENT", "bad tensor", "h:1")
    assert not refused.transient and refused.message == "server h:1 refused: INVALID_ARGUMENT: bad tensor"
    assert RpcFailure("UNAVAILABLE", "gone", "h:1", transient=False).transient is False
    assert RpcFailure("UNAVAILABLE", "Ssl handshake failed: certificate verify failed", "h:1").tls_failure


@pytest.mark.parametrize("budget", [0.0, 1.5])
def test_the_client_waits_for_an_absent_server_exactly_its_budget(budget):
    from splitinfer.device.client import UEClient

    policy = RetryPolicy(reconnect_s=budget, frame_timeout_s=0.5, backoff_initial_s=0.1)
    client = UEClient(f"127.0.0.1:{closed_port()}", retry=policy)
    try:
        t0 = time.monotonic()
        with pytest.raises(UserError, match=f"not reachable within {budget:g} s"):
            client.wait_ready()
        elapsed = time.monotonic() - t0
    finally:
        client.close()
    assert budget <= elapsed < budget + 1.5, elapsed


def test_a_unary_call_to_an_absent_server_is_a_transient_failure():
    from splitinfer.device.client import UEClient

    client = UEClient(f"127.0.0.1:{closed_port()}", retry=RetryPolicy(frame_timeout_s=2))
    try:
        with pytest.raises(RpcFailure) as info:
            client.call_infer(b"")
    finally:
        client.close()
    assert info.value.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED") and info.value.transient
