"""Progress bars never spill into pipes: a command run with stderr piped writes no carriage return,
and the helper follows SPLITINFER_PROGRESS."""

import os
import subprocess
import sys

from splitinfer.common.core import progress


def test_helper_is_quiet_off_a_terminal_and_follows_the_override(monkeypatch):
    monkeypatch.delenv("SPLITINFER_PROGRESS", raising=False)
    assert not progress.enabled()  # pytest captures stderr: not a terminal
    assert progress.bar(range(3)).disable
    monkeypatch.setenv("SPLITINFER_PROGRESS", "1")
    assert progress.enabled() and not progress.bar(range(3)).disable
    assert progress.bar(range(3), disable=True).disable
    monkeypatch.setenv("SPLITINFER_PROGRESS", "0")
    assert not progress.enabled()


def test_detect_over_a_folder_writes_no_carriage_returns_to_a_pipe(tmp_path):
    from splitinfer.common.assets import IMAGES_DIR

    env = {k: v for k, v in os.environ.items() if k != "SPLITINFER_PROGRESS"}
    r = subprocess.run([sys.executable, "-m", "splitinfer.common.cli", "detect", str(IMAGES_DIR), "-o",
                        str(tmp_path / "out")], capture_output=True, timeout=300, env=env)  # bytes: text mode hides \r
    assert r.returncode == 0, r.stderr[-2000:]
    assert b"\r" not in r.stderr and b"\r" not in r.stdout, r.stderr[-500:]
    assert list((tmp_path / "out").glob("*.txt"))
