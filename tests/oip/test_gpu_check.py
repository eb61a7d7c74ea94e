"""bench/gpu_check.sh fails clearly where there is no GPU: one line naming the missing piece, exit code 2,
at each stage a machine without CUDA can reach (no nvidia-smi; a GPU listed but onnxruntime without CUDA)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _run(path_dirs, tmp_path):
    env = {**os.environ, "PATH": os.pathsep.join(map(str, path_dirs))}
    return subprocess.run([shutil.which("bash"), str(SCRIPT), str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


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


def test_gpu_listed_but_onnxruntime_without_cuda(tmp_path):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime here has CUDA")
    b = _bin_without_nvidia(tmp_path)
    fake = b / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: Fake GPU (UUID: GPU-0)'\n")
    fake.chmod(0o755)
    proc = _run([b], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "onnxruntime has no CUDAExecutionProvider" in proc.stderr and "scripts/setup.sh" in proc.stderr
    assert "GPU 0: Fake GPU" in proc.stdout
