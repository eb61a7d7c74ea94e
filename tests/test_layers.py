"""Import direction: lower layers never import higher ones, `common` never imports `device`/`server`,
`experiments` (what drives both processes) sits above them and never imports `server`.

The contracts live in `.importlinter` (import-linter, a well-kept tool); this test runs them for real and
shows that they bite: an upward import added to the graph makes the same contracts fail.
"""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("splitinfer.common", "splitinfer.device", "splitinfer.server", "splitinfer.experiments")


def _contracts():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / ".importlinter")
    return cfg


def _layers(cfg) -> list[str]:
    return [line.strip() for line in cfg["importlinter:contract:common-layers"]["layers"].splitlines() if line.strip()]


def test_lint_imports_passes_on_the_code():
    proc = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), str(REPO / ".importlinter"),
                           "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 kept, 0 broken" in proc.stdout


def _illegal(graph, layers):
    import grimp

    levels = [grimp.Layer(*[part.strip() for part in layer.split("|")], independent=True) for layer in layers]
    return graph.find_illegal_dependencies_for_layers(layers=levels, containers={"splitinfer.common"})


@pytest.mark.parametrize("importer,imported", [
    ("splitinfer.common.core.errors", "splitinfer.common.studies.sweep"),     # core reaching up to studies
    ("splitinfer.common.codecs.zstd", "splitinfer.common.split.graph"),       # two independent siblings
    ("splitinfer.common.transport.wire", "splitinfer.common.cli"),            # transport reaching the CLI
])
def test_an_upward_import_breaks_the_layers(importer, imported):
    import grimp

    graph = grimp.build_graph(*PACKAGES)
    layers = _layers(_contracts())
    assert not _illegal(graph, layers), "the real code must keep the layers"
    graph.add_import(importer=importer, imported=imported)
    assert _illegal(graph, layers), f"{importer} -> {imported} should break the layers"


def test_common_importing_a_process_is_caught():
    import grimp

    graph = grimp.build_graph(*PACKAGES)
    for process in ("splitinfer.device", "splitinfer.server"):
        assert not graph.chain_exists(importer="splitinfer.common", imported=process, as_packages=True)
    graph.add_import(importer="splitinfer.common.studies.recommend", imported="splitinfer.server.main")
    assert graph.chain_exists(importer="splitinfer.common", imported="splitinfer.server", as_packages=True)


def _package_layers(cfg) -> list:
    import grimp

    lines = [ln.strip() for ln in cfg["importlinter:contract:packages"]["layers"].splitlines() if ln.strip()]
    return [grimp.Layer(*[p.strip() for p in ln.split("|")], independent=True) for ln in lines]


@pytest.mark.parametrize("importer,imported", [
    ("splitinfer.device.main", "splitinfer.experiments.server_process"),   # a process reaching up to experiments
    ("splitinfer.server.main", "splitinfer.experiments.netexp"),
    ("splitinfer.common.core.errors", "splitinfer.experiments.demo"),      # the library reaching up
    ("splitinfer.device.client", "splitinfer.server.session"),             # the two processes
])
def test_nothing_below_imports_experiments_and_processes_stay_apart(importer, imported):
    import grimp

    graph = grimp.build_graph(*PACKAGES)
    layers = _package_layers(_contracts())
    assert not graph.find_illegal_dependencies_for_layers(layers=layers), "the real code must keep the layers"
    graph.add_import(importer=importer, imported=imported)
    assert graph.find_illegal_dependencies_for_layers(layers=layers), f"{importer} -> {imported} should break them"


def test_experiments_importing_the_server_is_caught():
    """experiments may import device (above it), but start the network process by module name only."""
    import grimp

    cfg = _contracts()["importlinter:contract:experiments-start-the-server"]
    assert cfg["source_modules"].strip() == "splitinfer.experiments"
    assert cfg["forbidden_modules"].strip() == "splitinfer.server"
    graph = grimp.build_graph(*PACKAGES)
    assert graph.chain_exists(importer="splitinfer.experiments", imported="splitinfer.device", as_packages=True)
    assert not graph.chain_exists(importer="splitinfer.experiments", imported="splitinfer.server", as_packages=True)
    graph.add_import(importer="splitinfer.experiments.netexp", imported="splitinfer.server.main")
    assert graph.chain_exists(importer="splitinfer.experiments", imported="splitinfer.server", as_packages=True)
