"""deploy/scripts/compose.sh without a reachable Docker engine: one line that says what to do, exit 2,
never docker-compose's 20-line traceback."""

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_no_engine_gives_one_line_hint(tmp_path):
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path / 'no-engine.sock'}",
           "SPLITINFER_DOCKER_RUN": str(tmp_path / "no-private-engine")}
    r = subprocess.run(["bash", str(REPO / "deploy" / "scripts" / "compose.sh"), "ps"], env=env,
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2, r
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    if shutil.which("docker") and shutil.which("docker-compose"):
        assert "no Docker engine answers" in lines[0] and "start_dockerd.sh" in lines[0], lines[0]
        assert str(tmp_path / "no-engine.sock") in lines[0]
    else:
        assert "is not installed" in lines[0] and "apt-get install" in lines[0], lines[0]
