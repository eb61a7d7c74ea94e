"""Shared, expensive test fixtures (exported once per test session)."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: needs a torch export or a large model (tens of seconds); still runs in CI")
    if not hasattr(config, "workerinput"):  # one watchdog per process that runs tests
        from session_watchdog import WatchdogPlugin

        config.pluginmanager.register(WatchdogPlugin(config), "splitinfer-watchdog")


@pytest.fixture(autouse=True)
def stays_time_shared():
    """A test must not leave the test process real-time: SVT-AV1 run as root once turned it SCHED_FIFO 99,
    every process it started later inherited that, and two spinning Docker threads then stopped the machine
    (see codecs/video.py's open_time_shared). Such a test errors here, by name, and the policy is reset."""
    import os

    yield
    realtime = tuple(getattr(os, n) for n in ("SCHED_FIFO", "SCHED_RR") if hasattr(os, n))
    if realtime and os.sched_getscheduler(0) in realtime:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        pytest.fail("this test left the test process with a real-time scheduling policy (reset now)")


@pytest.fixture(scope="session")
def retinanet_onnx(tmp_path_factory) -> Path:
    """torchvision retinanet_resnet50_fpn (random weights, seed 0) exported once per session (~1 min)."""
    from splitinfer.common.models import export as exporters

    return exporters.export_retinanet(tmp_path_factory.mktemp("retinanet") / "retinanet.onnx")


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory) -> Path:
    """A session-wide folder for survey exports (small torchvision classifiers), filled on demand."""
    return tmp_path_factory.mktemp("zoo")
