"""The distribution's shape: one namespace, a working console command, no bare top-level modules."""

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_three_packages_share_one_namespace():
    for name in ("splitinfer.common", "splitinfer.device", "splitinfer.server", "splitinfer.experiments"):
        spec = importlib.util.find_spec(name)
        assert spec is not None, name
    # A bare `common` (or `server`, `device`) must not be importable from site-packages.
    for bare in ("common", "server", "device", "experiments"):
        spec = importlib.util.find_spec(bare)
        if spec is not None:
            origin = Path(spec.origin or next(iter(spec.submodule_search_locations)))
            assert "site-packages" not in str(origin), f"bare top-level {bare!r} installed at {origin}"


def test_console_command_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "splitinfer.common.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for command in ("split", "detect", "serve", "device", "demo", "netexp", "analyze", "map"):
        assert command in out, f"subcommand {command!r} missing from --help"


def test_no_subcommand_prints_help_and_exits_2():
    proc = subprocess.run([sys.executable, "-m", "splitinfer.common.cli"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "usage: splitinfer" in proc.stdout


def test_ci_runs_the_readme_commands():
    readme = (REPO / "README.md").read_text()
    assert "bash scripts/setup.sh" in readme and ".venv/bin/python -m pytest -q" in readme
    ci = (REPO / ".ci/run").read_text()
    assert "scripts/setup.sh" in ci and ".venv/bin/python -m pytest -q" in ci
