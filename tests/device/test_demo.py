"""`splitinfer demo`: the network process started as an OS process, the UE at a split, the table whose
agreement column comes from agreement.py."""

import pytest

from splitinfer.common.cli import main

pytestmark = pytest.mark.timeout(180)


def test_demo_prints_a_row_per_split_and_codec_with_the_agreement(capsys):
    code = main(["demo", "--images", "1", "--splits", "120", "--codecs", "none,float16"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = {line.split()[2]: line for line in out.splitlines() if line.strip().startswith("120 ")}
    assert set(rows) == {"none", "float16"}, out
    # rank 120 with a lossless codec: the server's Part II gives the whole model's detections
    assert rows["none"].rstrip().endswith(("yes", "yes, to float rounding")), rows["none"]
    assert rows["float16"].split()[5] == "2.00"  # raw / encoded bytes
    assert "network process stopped (exit code 0)" in out


def test_no_sequence_codecs_leave_the_sequential_rows_out(capsys):
    """`--sequence-codecs ''`, as its help says: no sequential rows and no pan in the footer."""
    code = main(["demo", "--images", "1", "--splits", "120", "--codecs", "none", "--sequence-codecs", ""])
    out = capsys.readouterr().out
    assert code == 0, out
    assert any(line.strip().startswith("120 ") for line in out.splitlines()), out
    assert "seq:" not in out and "slow pan" not in out


def test_demo_runs_a_sequential_codec_over_a_pan_in_order(capsys):
    """The sequential rows: one stream of pan frames coded in order (one keyframe, then predicted frames), lossless
    dzstd equal to the anchor on every frame."""
    code = main(["demo", "--images", "1", "--splits", "120", "--codecs", "none", "--sequence-codecs", "dzstd",
                 "--pan-frames", "5"])
    out = capsys.readouterr().out
    assert code == 0, out
    seq = [line for line in out.splitlines() if line.strip().startswith("60 ") and "dzstd" in line]
    assert len(seq) == 1, out
    assert "(seq: 1/5 key)" in seq[0], seq[0]
    assert seq[0].rstrip().endswith(("yes", "yes, to float rounding")), seq[0]
    assert "5 frames of a slow pan" in out
