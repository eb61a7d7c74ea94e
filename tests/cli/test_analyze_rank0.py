"""`analyze` says what rank 0 counts (issue 19, section 2): the input tensor as the model takes it (float32,
4 bytes an element) beside the 8-bit image the TR's anchor row counts, and why branch counts can be lower
than the TR's (constants and shape tensors are not sent)."""

import csv

from splitinfer.common.cli import main


def test_rank0_shows_float_input_and_8bit_image(tmp_path, capsys):
    assert main(["analyze", "nanodet", "--static-only", "--no-plots", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "float32 input tensor" in out and "8-bit image (the TR's anchor row): 0.519 MB" in out  # 416x416x3
    assert "constants" in out and "shape tensors are not sent" in out
    with open(next(tmp_path.glob("*.csv"))) as f:
        rows = list(csv.DictReader(f))
    assert int(rows[0]["sent_bytes"]) == 416 * 416 * 3 * 4
    assert "2.077 MB, float32" in rows[0]["note"] and "8-bit image (the TR's anchor row) 0.519 MB" in rows[0]["note"]
    assert "not sent" in rows[1]["note"]
