"""`sweep` and `study` on a terminal show a bar that advances per row with an ETA, and each row as it finishes
(issue 19, section 5: a 30-row sweep was silent for 108 s). Forced on with SPLITINFER_PROGRESS=1, as a
terminal would have it; off a terminal (the default under pytest) nothing of it appears."""

import re
import shutil

import pytest

from splitinfer.common.assets import IMAGES_DIR
from splitinfer.common.cli import main

pytestmark = pytest.mark.timeout(300)


@pytest.fixture()
def photo(tmp_path):
    d = tmp_path / "photo"
    d.mkdir()
    shutil.copy(IMAGES_DIR / "dog.jpg", d / "dog.jpg")
    return d


@pytest.mark.parametrize("command,codecs", [("sweep", ["none", "zstd:3"]), ("study", ["fq:4", "fq:6"])])
def test_rows_and_bar_with_eta(command, codecs, photo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SPLITINFER_PROGRESS", "1")
    argv = [command, "nanodet", "--data", str(photo), "--splits", "60", "95", "--codecs", *codecs,
            "--workers", "0", "--no-plots", "-o", str(tmp_path / "out")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    rows = re.findall(r"row split +(\d+) +(\S+) .*kB/frame .*ratio", err)
    assert sorted(rows) == sorted((r, c) for r in ("60", "95") for c in codecs), err[-2000:]
    assert re.search(r"sweep: +\d+%.*\d+/4 \[[0-9:]+<[0-9:?]+", err), "a per-row bar with elapsed<ETA"

    monkeypatch.setenv("SPLITINFER_PROGRESS", "0")
    assert main(argv + ["--fresh"]) == 0
    assert "row split" not in capsys.readouterr().err
