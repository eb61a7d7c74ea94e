"""bench/gpu_check.sh fails clearly where there is no GPU: one line naming the missing piece, exit code 2,
at each stage a machine without CUDA can reach (no nvidia-smi; a GPU listed but onnxruntime without CUDA), with
the Python it is given (PYTHON, the checkout's .venv or the python3 on PATH): no .venv in the checkout needed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _run(path_dirs, tmp_path, script=SCRIPT, **env):
    """The script with only PATH_DIRS on PATH, PYTHON and the like from ENV (no PYTHON unless given)."""
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}
    return subprocess.run([shutil.which("bash"), str(script), str(tmp_path / "out")], cwd=tmp_path, capture_output=True,
                          env={**base, **env, "PATH": os.pathsep.join(map(str, path_dirs))}, text=True, timeout=120)


def _bin_without_nvidia(tmp_path) -> Path:
    """A PATH folder with the tools the script uses, and no nvidia-smi."""
    b = tmp_path / "bin"
    b.mkdir()
    for tool in ("mktemp", "mkdir", "grep", "sed", "seq", "sleep", "kill", "tail", "ls", "head", "cat", "dirname", "bash"):
        found = shutil.which(tool)
        if found:
            (b / tool).symlink_to(found)
    return b


def test_without_nvidia_smi(tmp_path):
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi")
    proc = _run([_bin_without_nvidia(tmp_path)], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["gpu_check: no GPU: nvidia-smi is not installed (this check needs an "
                                                "NVIDIA GPU)"]


def _fake_gpu(tmp_path) -> Path:
    """A PATH folder as above, with an nvidia-smi that lists one GPU."""
    b = _bin_without_nvidia(tmp_path)
    fake = b / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: Fake GPU (UUID: GPU-0)'\n")
    fake.chmod(0o755)
    return b


def _clone_without_venv(tmp_path) -> Path:
    """The script in a checkout of its own, with no .venv beside it (a clone that uses another environment)."""
    clone = tmp_path / "clone"
    (clone / "bench").mkdir(parents=True)
    shutil.copy(SCRIPT, clone / "bench")
    return clone / "bench" / SCRIPT.name


def _without_cuda():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime here has CUDA")


def _stops_at_onnxruntime(proc):
    assert proc.returncode == 2, proc.stderr
    assert "onnxruntime has no CUDAExecutionProvider" in proc.stderr and "scripts/setup.sh" in proc.stderr
    assert "GPU 0: Fake GPU" in proc.stdout


def test_gpu_listed_but_onnxruntime_without_cuda(tmp_path):
    _without_cuda()
    _stops_at_onnxruntime(_run([_fake_gpu(tmp_path)], tmp_path, PYTHON=sys.executable))


def test_the_python_comes_from_PYTHON_or_PATH_not_from_a_venv_in_the_checkout(tmp_path):
    _without_cuda()
    b, script = _fake_gpu(tmp_path), _clone_without_venv(tmp_path)
    _stops_at_onnxruntime(_run([b], tmp_path, script, PYTHON=sys.executable))
    # a relative PYTHON is taken from where the script was started
    (tmp_path / "env" / "bin").mkdir(parents=True)
    (tmp_path / "env" / "bin" / "python").write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    (tmp_path / "env" / "bin" / "python").chmod(0o755)
    _stops_at_onnxruntime(_run([b], tmp_path, script, PYTHON="env/bin/python"))
    # an activated environment of another name: its python3 on PATH
    (tmp_path / "env" / "bin" / "python3").symlink_to("python")
    _stops_at_onnxruntime(_run([tmp_path / "env" / "bin", b], tmp_path, script))
    # none of these: one line saying what to set
    proc = _run([b], tmp_path, script)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["gpu_check: no Python: set PYTHON to the interpreter of the environment "
                                                "with splitinfer (no .venv here, no python3 on PATH)"]
