"""Shared pieces of the OIP tests: the second environment, real frames as files, tritonclient as a process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
OIP_PYTHON = ROOT / ".venv-oip" / "bin" / "python"
TRITON_SCRIPT = Path(__file__).with_name("tritonclient_infer.py")
sys.path.insert(0, str(ROOT / "tests"))


def require_oip_venv() -> Path:
    if not OIP_PYTHON.exists():
        pytest.skip("needs .venv-oip (kserve, tritonclient): run scripts/setup_oip.sh")
    return OIP_PYTHON


def frame_files(frame, folder: Path) -> tuple[Path, Path]:
    """A RealFrame as inputs.npz + meta.json (what the .venv-oip processes read)."""
    npz, meta = folder / f"inputs_r{frame.rank}.npz", folder / f"meta_r{frame.rank}.json"
    np.savez(npz, **frame.arrays)
    meta.write_text(frame.meta_json)
    return npz, meta


def tritonclient_infer(address: str, name: str, npz: Path, meta: Path, out: Path, *, half: bool = False,
                       repeat: int = 1, timeout: float = 120.0) -> dict:
    args = [str(require_oip_venv()), str(TRITON_SCRIPT), address, name, str(npz), str(meta), str(out),
            "--repeat", str(repeat)] + (["--half"] if half else [])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def as_rows(dets) -> list[list]:
    return [[d.label, d.x1, d.y1, d.x2, d.y2, d.score] for d in dets]
