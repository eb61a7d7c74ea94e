"""Output a user reads (issue 19, section 5 cosmetics): map's run table headers stay apart, visualize says
what it wrote in one line without FFmpeg's tag note on stderr, `models list` columns line up."""

import re
from pathlib import Path

from splitinfer.common.cli import main

CLIP = Path(__file__).resolve().parents[2] / "docs" / "study" / "vtest_clip.avi"


def test_map_table_header_columns_apart(tmp_path, capsys):
    gt, runs = tmp_path / "gt", tmp_path / "runs"
    gt.mkdir()
    for run in ("a", "b"):
        (runs / run).mkdir(parents=True)
        for i in range(2):
            (runs / run / f"f{i}.txt").write_text("person 10 10 60 90 0.9\n")
    for i in range(2):
        (gt / f"f{i}.txt").write_text("person 10 10 60 90\n")
    assert main(["map", "--splits-root", str(runs), "--gt", str(gt)]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("run"))
    assert "imagespredictions" not in header and re.search(r"images +predictions +AP", header), header


def test_visualize_one_line_and_no_ffmpeg_note(tmp_path, capfd):
    assert main(["detect", str(CLIP), "-o", str(tmp_path / "det"), "--max-frames", "2", "--no-overlay"]) == 0
    capfd.readouterr()
    assert main(["visualize", str(CLIP), str(tmp_path / "det"), "-o", str(tmp_path / "v.webm"),
                 "--max-frames", "2"]) == 0
    out, err = capfd.readouterr()
    assert "FFMPEG" not in err and "tag 0x" not in err, err
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and "v.webm" in lines[0] and "det" in lines[0], lines
    assert (tmp_path / "v.webm").stat().st_size > 0


def test_models_list_columns_line_up(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out.split("bundled models")[0]
    rows = [line for line in out.splitlines()[1:] if line.strip()]
    starts = {re.search(r"(\d+x\d+|any size)", line).start() for line in rows}
    assert len(rows) >= 4 and len(starts) == 1, rows
