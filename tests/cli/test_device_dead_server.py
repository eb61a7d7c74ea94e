"""`device` against a server that is not there says at once that it waits, and for how long (issue 19,
section 5: it waited 60 s in silence, even on connection refused), then fails in one line."""

import shutil
import socket
import time

from splitinfer.common.assets import IMAGES_DIR
from splitinfer.common.cli import main


def test_dead_server_wait_is_announced(tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "p").mkdir()
    shutil.copy(IMAGES_DIR / "dog.jpg", tmp_path / "p" / "dog.jpg")
    t0 = time.monotonic()
    code = main(["device", "--server", f"127.0.0.1:{port}", "--reconnect-s", "2", "--timeout", "1", "--split", "60", "-s",
                 str(tmp_path / "p"), "-results_dir", str(tmp_path / "out"), "-no_CPU_anchor", "-no_GPU_anchor"])
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    waiting = [i for i, line in enumerate(lines) if "not answering" in line and "waiting up to 2 s" in line]
    assert waiting, err
    final = [i for i, line in enumerate(lines) if "not reachable within 2 s" in line]
    assert final and waiting[0] < final[0], err
    assert elapsed < 30
