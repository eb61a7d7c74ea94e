"""Shared, expensive test fixtures (exported once per test session)."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: needs a torch export or a large model (tens of seconds); still runs in CI")
    if not hasattr(config, "workerinput"):  # one watchdog per process that runs tests
        from session_watchdog import WatchdogPlugin

        config.pluginmanager.register(WatchdogPlugin(config), "splitinfer-watchdog")


@pytest.fixture(scope="session")
def retinanet_onnx(tmp_path_factory) -> Path:
    """torchvision retinanet_resnet50_fpn (random weights, seed 0) exported once per session (~1 min)."""
    from splitinfer.common.models import export as exporters

    return exporters.export_retinanet(tmp_path_factory.mktemp("retinanet") / "retinanet.onnx")


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory) -> Path:
    """A session-wide folder for survey exports (small torchvision classifiers), filled on demand."""
    return tmp_path_factory.mktemp("zoo")
