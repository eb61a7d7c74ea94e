"""The locks (locks/*.lock, scripts/lock.sh) agree with the declared ranges, and the environments are the locks.

Every declared package is locked, at a version its range allows (requirements*.txt and pyproject.toml, read with
`packaging`); every pin carries hashes; the GPU variant is the CPU lock with onnxruntime-gpu in its place; the
running environment holds exactly the lock's versions, and `pip check` finds nothing but the lines
locks/pip-check-allowed.txt explains, in .venv and .venv-oip."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distributions, version
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

sys.path.insert(0, str(Path(__file__).resolve().parent))
from declared_deps import ROOT, lock_hashes, lock_pins, pyproject, requirements_file  # noqa: E402

LOCKS = ROOT / "locks"
BUILD = requirements_file(ROOT / "requirements-build.txt")
# lock -> what it must satisfy: the requirements files it is compiled from, and pyproject's groups it serves
SOURCES = {
    "requirements.lock": (["requirements.txt"], ("cpu", "nnc", "export", "ray", "test")),
    "requirements-gpu.lock": (["requirements-gpu.txt"], ("gpu", "nnc", "export", "ray", "test")),
    "requirements-oip.lock": (["requirements-oip.txt"], None),
    "tools.lock": (["requirements-tools.txt"], None),
}
LEFT_OUT = {"requirements.lock": {"opencv-python"}, "requirements-gpu.lock": {"opencv-python"}}


def _declared(lock: str) -> dict:
    files, groups = SOURCES[lock]
    reqs = [requirements_file(ROOT / f) for f in files]
    if lock != "tools.lock":
        reqs.append(BUILD)
    if groups is not None:
        reqs.append(pyproject(groups))
    return reqs


def _mismatches(pins: dict[str, Version], declared: list[dict]) -> list[str]:
    problems = []
    for reqs in declared:
        for name, req in reqs.items():
            if name not in pins:
                problems.append(f"{req} is declared but not locked")
            elif not req.specifier.contains(pins[name], prereleases=True):
                problems.append(f"{name}=={pins[name]} is locked, outside the declared {req}")
    return problems


@pytest.mark.parametrize("lock", sorted(SOURCES))
def test_every_declared_package_is_locked_inside_its_range(lock):
    problems = _mismatches(lock_pins(LOCKS / lock), _declared(lock))
    assert not problems, (f"locks/{lock} disagrees with the declared ranges (run scripts/lock.sh):\n"
                          + "\n".join(problems))


def test_the_check_finds_a_pin_outside_its_range_and_a_missing_package():
    pins = dict(lock_pins(LOCKS / "requirements.lock"))
    pins["grpcio-tools"] = Version("1.86.0")  # requirements.txt: grpcio-tools>=1.85,<1.86
    del pins["zstandard"]
    problems = _mismatches(pins, _declared("requirements.lock"))
    assert any(p.startswith("grpcio-tools==1.86.0 is locked, outside") for p in problems), problems
    assert any(p.startswith("zstandard>=0.22 is declared but not locked") for p in problems), problems


@pytest.mark.parametrize("lock", sorted(SOURCES))
def test_every_pin_has_hashes_and_the_lock_says_how_to_remake_it(lock):
    text = (LOCKS / lock).read_text()
    assert "by the following command:\n#\n#    scripts/lock.sh\n" in text and "with Python 3.11" in text
    hashes = lock_hashes(LOCKS / lock)
    assert set(hashes) == set(lock_pins(LOCKS / lock))
    assert all(hashes.values()), [name for name, h in hashes.items() if not h]
    for name in LEFT_OUT.get(lock, ()):
        assert name not in hashes, f"locks/{lock} pins {name}, which the set-up leaves out on purpose"
        assert re.search(rf"^# {name}$", text, re.M), f"locks/{lock} no longer says it leaves out {name}"


def test_gpu_variant_is_the_cpu_lock_with_onnxruntime_gpu():
    cpu, gpu = lock_pins(LOCKS / "requirements.lock"), lock_pins(LOCKS / "requirements-gpu.lock")
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu and "onnxruntime-gpu" not in cpu
    assert {n: v for n, v in gpu.items() if n in cpu and cpu[n] != v} == {}
    # requirements-gpu.txt is written by scripts/lock.sh from requirements.txt, one line changed
    plain = [ln for ln in (ROOT / "requirements.txt").read_text().splitlines() if not ln.startswith("#")]
    made = [ln for ln in (ROOT / "requirements-gpu.txt").read_text().splitlines() if not ln.startswith("#")]
    assert made == [re.sub(r"^onnxruntime(?=[<>=!~ ])", "onnxruntime-gpu[cuda,cudnn]", ln) for ln in plain], (
        "requirements-gpu.txt is stale: run scripts/lock.sh")


def _environment_lock() -> Path:
    try:
        version("onnxruntime-gpu")
        return LOCKS / "requirements-gpu.lock"
    except PackageNotFoundError:
        return LOCKS / "requirements.lock"


def test_this_environment_holds_exactly_the_locked_versions():
    """What scripts/setup.sh installed: every locked package at its locked version (a CI run on a fresh clone
    shows the lock at work; on a developer's machine a re-lock asks for scripts/setup.sh again)."""
    lock = _environment_lock()
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version) for d in distributions()}
    wrong = {name: f"locked {pin}, installed {installed.get(name, 'nothing')}"
             for name, pin in lock_pins(lock).items() if installed.get(name) != pin}
    assert not wrong, f"this environment is not {lock.relative_to(ROOT)}: run scripts/setup.sh\n{wrong}"
    for name in LEFT_OUT.get(lock.name, ()):
        assert name not in installed, f"{name} is installed though the lock leaves it out: run scripts/setup.sh"


def _pip_check(python: Path | str) -> list[str]:
    proc = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    allowed = {ln for ln in (LOCKS / "pip-check-allowed.txt").read_text().splitlines() if ln and not ln.startswith("#")}
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    problems = [ln for ln in lines if ln not in allowed and ln != "No broken requirements found."]
    assert proc.returncode == (1 if problems or set(lines) & allowed else 0), proc.stdout + proc.stderr
    return problems


def test_pip_check_is_clean_in_this_environment():
    assert _pip_check(sys.executable) == []


def test_pip_check_is_clean_in_the_oip_environment():
    python = ROOT / ".venv-oip" / "bin" / "python"
    if not python.exists():
        pytest.skip("needs .venv-oip: run scripts/setup_oip.sh")
    # splitinfer is installed there without its dependencies on purpose (its KServe path needs few of them, and
    # protobuf < 7 for kserve/tritonclient where splitinfer's own stubs need >= 7): pip check names them
    problems = _pip_check(python)
    assert [ln for ln in problems if not ln.startswith("splitinfer ")] == []


def test_the_ultralytics_environment_holds_exactly_its_lock():
    """.venv-ultra (scripts/setup_ultralytics.sh): its own packages are exactly locks/requirements-ultra.lock's
    (scripts/lock_ultralytics.sh), every one hashed; what it imports besides comes from .venv, locked above."""
    lock = LOCKS / "requirements-ultra.lock"
    pins, hashes = lock_pins(lock), lock_hashes(lock)
    assert "ultralytics" in pins and set(hashes) == set(pins) and all(hashes.values()), hashes
    assert not {"torch", "torchvision"} & set(pins), "torch comes from .venv, not a second copy"
    python = ROOT / ".venv-ultra" / "bin" / "python"
    if not python.exists():
        pytest.skip("needs .venv-ultra: run scripts/setup_ultralytics.sh")
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    frozen = subprocess.run([str(python), "-m", "pip", "freeze", "--path", own], capture_output=True, text=True,
                            check=True, timeout=120).stdout
    installed = {canonicalize_name(n): Version(v) for n, v in re.findall(r"^([\w.\-]+)==(\S+)$", frozen, re.M)}
    assert installed == pins, f".venv-ultra is not {lock.relative_to(ROOT)}: run scripts/setup_ultralytics.sh"
