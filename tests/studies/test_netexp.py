"""Shaped links: the network process and the UE process in two namespaces joined by a tbf-shaped veth
pair, and the UE's in-process shaper; the measured transfer time must match bytes x 8 / rate.

The namespace test needs root (CI runs as root); it is skipped, with the reason, only where
namespaces cannot be made.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time

import pytest

from splitinfer.experiments import netexp
from splitinfer.common.core.errors import UserError
from splitinfer.common.transport.shaper import Shaper, from_options, parse_delay, parse_rate

SPLIT = 9  # NanoDet rank 9: one crossing tensor of 5.5 MB (float32), "several megabytes"


def _netns_count() -> int:
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return len([ln for ln in r.stdout.splitlines() if ln.strip()])


@pytest.fixture(scope="module")
def namespaces():
    reason = netexp.namespaces_unavailable()
    if reason:
        pytest.skip(f"network namespaces cannot be made here: {reason}")


def test_tbf_link_between_namespaces_matches_bytes_over_rate(namespaces, tmp_path):
    before = _netns_count()
    rates = [20e6, 50e6]
    rows = netexp.run_experiment(rates, [SPLIT], frames=3, out_dir=tmp_path, progress=False)
    assert _netns_count() == before, "namespaces left behind"
    assert [(r.rate_mbps, r.split) for r in rows] == [(20.0, SPLIT), (50.0, SPLIT)]
    for r in rows:
        print(f"{r.rate_mbps:g} Mbit/s: {r.encoded_bytes / 1e6:.2f} MB, measured {r.measured_ms:.0f} ms, "
              f"estimate {r.estimate_ms:.0f} ms, ratio {r.ratio:.3f} (plain TCP {r.tcp_ratio:.3f}), drops {r.drops}")
        assert r.encoded_bytes > 4e6, "the crossing tensor should be several megabytes"
        assert r.frames == 3
        assert abs(r.ratio - 1.0) <= 0.15, f"measured {r.measured_ms:.0f} ms vs estimate {r.estimate_ms:.0f} ms"
        assert abs(r.tcp_ratio - 1.0) <= 0.15
        assert r.drops == 0
    # The same bytes take 2.5x longer at 20 than at 50 Mbit/s: the link, not the processes, sets the time.
    slow, fast = rows
    assert slow.encoded_bytes == fast.encoded_bytes
    assert 2.5 * 0.85 <= slow.measured_ms / fast.measured_ms <= 2.5 * 1.15
    netexp.write_csv(rows, tmp_path / "netexp.csv")
    netexp.plot(rows, tmp_path / "netexp.png")
    with open(tmp_path / "netexp.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 2 and {"measured_ms", "estimate_ms", "ratio"} <= set(table[0])
    assert (tmp_path / "netexp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_netns_link_cleans_up_after_errors(namespaces):
    before = _netns_count()
    with pytest.raises(RuntimeError):
        with netexp.NetnsLink() as link:
            link.shape(10e6)
            assert link.qdisc_stats()["kind"] == "tbf"
            raise RuntimeError("boom")
    assert _netns_count() == before


def test_netexp_cli_rejects_bad_options():
    for argv, msg in ((["--rates", "fast"], "bad rate"), (["--splits", "a,b"], "--splits"),
                      (["--frames", "0"], "--frames")):
        r = subprocess.run([sys.executable, "-m", "splitinfer.common.cli", "netexp", *argv],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert msg in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------
# the in-process shaper


def test_parse_rate_and_delay():
    assert parse_rate("50mbit") == 50e6
    assert parse_rate("1.5gbit") == 1.5e9
    assert parse_rate("800kbit") == 800e3
    assert parse_rate("20M") == 20e6
    assert parse_rate(1000) == 1000.0
    assert parse_delay("20ms") == pytest.approx(0.02)
    assert parse_delay("500us") == pytest.approx(0.0005)
    assert parse_delay("1.5s") == pytest.approx(1.5)
    assert parse_delay("7") == pytest.approx(0.007)  # plain numbers are milliseconds
    for bad in ("fast", "-3mbit", "0"):
        with pytest.raises(UserError):
            parse_rate(bad)
    with pytest.raises(UserError):
        parse_delay("soon")
    assert from_options(None, None) is None
    assert from_options("10mbit", None).rate_bps == 10e6


def test_shaper_queues_serialization_and_overlaps_delay():
    """10 x 50 kB at 8 Mbit/s with 50 ms delay: 10 serializations + ONE delay = 0.55 s, not 1.0 s."""
    shaper = Shaper(8e6, 0.05)
    t0 = time.perf_counter()
    arrivals = [time.perf_counter() - t0 for _ in shaper.wrap([bytes(50_000)] * 10, size=len)]
    assert arrivals[0] == pytest.approx(0.05 + 0.05, abs=0.02)
    assert arrivals[-1] == pytest.approx(0.55, rel=0.08)
    assert shaper.bytes_sent == 500_000


def test_shaper_delays_a_slow_producer_by_the_delay_only():
    import queue
    import threading

    shaper, q, enqueued = Shaper(None, 0.08), queue.Queue(), []

    def produce():
        for i in range(4):
            time.sleep(0.1)
            enqueued.append(time.perf_counter())
            q.put(i)
        q.put(None)

    threading.Thread(target=produce, daemon=True).start()
    latencies = [time.perf_counter() - enqueued[i]
                 for i in shaper.wrap(iter(q.get, None), size=lambda m: 1)]
    assert len(latencies) == 4
    for lat in latencies:
        assert lat == pytest.approx(0.08, abs=0.02)


def test_device_with_in_process_shaper_matches_bytes_over_rate(tmp_path):
    """The real UE process with --shape-rate/--shape-delay against the real network process on loopback."""
    from splitinfer.common.assets import bundled_images
    from splitinfer.experiments.server_process import ServerProcess

    with ServerProcess(threads=1) as server:
        address = server.address
        rate, delay = 40e6, 0.03
        argv = [sys.executable, "-m", "splitinfer.common.cli", "device",
                *netexp.device_args(address, bundled_images()[0], SPLIT, "none", 2, tmp_path, "shaped.csv"),
                "--shape-rate", "40mbit", "--shape-delay", "30ms"]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        from splitinfer.device.results import read_results

        row = read_results(tmp_path / "shaped.csv")[-1]
        nbytes, t_avg = row.encoded_bytes.avg, row.transfer_ms.avg
        expected_ms = (nbytes * 8 / rate + delay) * 1e3
        print(f"in-process shaper: {nbytes / 1e6:.2f} MB, measured {t_avg:.0f} ms, expected {expected_ms:.0f} ms")
        assert nbytes > 4e6
        assert abs(t_avg / expected_ms - 1) <= 0.15


def test_server_process_runs_under_an_argv_prefix():
    """netexp starts the network process under `ip netns exec NS`; any prefix command works the same way."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from splitinfer.experiments.server_process import ServerProcess

    with ServerProcess(threads=1, argv_prefix=["env", "SPLITINFER_PREFIX_TEST=1"]) as server:
        assert server.proc.args[:2] == ["env", "SPLITINFER_PREFIX_TEST=1"] and server.port > 0
        with grpc.insecure_channel(server.address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert server.proc.returncode == 0
