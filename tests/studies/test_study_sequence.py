"""Study and sweep on sequences: a sequential codec's row codes its frames in order through one encoder/decoder.

Real NanoDet, real dzstd (lossless XOR-with-the-previous-frame + zstd) on a 6-frame video made here from two
bundled photos: A A A | B B B (a scene cut at frame 3). Coded in order by one encoder, the repeated frames are
predicted from an identical reference and cost almost nothing, the first frame and the cut cost a full frame.
Coded out of order, or by a fresh encoder per batch (batch size 2 here), the per-frame bytes would show it:
keyframes at every batch start, or big predicted frames where A and B alternate.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import pytest

from splitinfer.common.cli import main

SPLITS = [46, 95]
CODECS = ["dzstd", "zstd"]  # sequential (lossless inter) and its per-frame counterpart


def _clip(path: Path) -> Path:
    """A A A B B B, lossless (FFV1: a repeated frame decodes to the same pixels; Motion-JPEG does not)."""
    import cv2

    from splitinfer.common.assets import IMAGES_DIR

    a, b = (cv2.resize(cv2.imread(str(IMAGES_DIR / n)), (320, 240)) for n in ("terrain2.png", "dog.jpg"))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10.0, (320, 240))
    for frame in (a, a, a, b, b, b):
        w.write(frame)
    w.release()
    return path


def _study(clip, out, cache, *extra) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["study", "nanodet", "--data", str(clip), "--splits", *map(str, SPLITS), "--codecs", *CODECS,
                   "--batch-size", "2", "-o", str(out), "--cache-dir", str(cache), "-q", *extra])
    assert rc == 0, buf.getvalue()
    with open(out / "study.csv") as f:
        return {(int(r["rank"]), r["codec"]): r for r in csv.DictReader(f)}


def _frames(cache: Path, rank: int, spec_slug: str, n: int = 6) -> list[dict]:
    """The per-frame records, in frame order, of the stored row over `n` frames."""
    docs = [json.loads(p.read_text()) for p in (cache / "rows").glob(f"*/r{rank:05d}__{spec_slug}.json")]
    (images,) = [d["images"] for d in docs if len(d["images"]) == n]
    return [images[k] for k in sorted(images)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Frames 0..2 first (their activations cached), then all six on 2 pool workers: frames 3..5 are read
    from the video alone, so a reader that restarted at frame 0 would feed A where B belongs."""
    tmp = tmp_path_factory.mktemp("seq")
    clip, cache = _clip(tmp / "aaabbb.avi"), tmp / "cache"
    _study(clip, tmp / "first", cache, "--max-images", "3", "--workers", "0")
    rows = _study(clip, tmp / "all", cache, "--workers", "2")
    return tmp, clip, cache, rows


def test_sequential_rows_code_frames_in_order_with_one_encoder(run):
    _, _, cache, rows = run
    for s in SPLITS:
        frames = _frames(cache, s, "dzstd_3_0")
        assert [f["seq"] for f in frames] == list(range(6))  # one stream, in frame order (not 0,1,0,1,0,1)
        assert [f["key"] for f in frames] == [True, False, False, True, False, False]  # 3: the scene cut
        enc = [f["enc"] for f in frames]
        # predicted from an identical reference: < 1 % of a keyframe; the scene cut: a keyframe of its own,
        # no larger than the lone keyframe of that frame would be (a predicted frame was larger there)
        assert max(enc[1], enc[2], enc[4], enc[5]) < 0.01 * min(enc[0], enc[3])
        assert 0.5 * enc[0] < enc[3] < 2 * enc[0]
        row = rows[(s, "dzstd:3:0")]
        assert int(row["keyframes"]) == 2 and int(row["images"]) == 6
        assert float(row["key_kb"]) == pytest.approx((enc[0] + enc[3]) / 2 / 1e3, rel=1e-4)
        assert float(row["predicted_kb"]) == pytest.approx((enc[1] + enc[2] + enc[4] + enc[5]) / 4 / 1e3, rel=1e-4)
        assert float(row["kb_per_frame"]) == pytest.approx(sum(enc) / 6 / 1e3, rel=1e-4)
        assert float(row["kbps"]) == pytest.approx(sum(enc) / 6 * 8 * 10 / 1e3, rel=1e-4)  # the clip's 10 fps
        # lossless either way: the stream decodes bit-exactly, so Part II sees the whole model's tensors
        assert float(row["rel_map"]) == 1.0 and float(row["nmse"]) < 1e-12


def test_per_frame_rows_keep_their_batches(run):
    _, _, cache, rows = run
    for s in SPLITS:
        frames = _frames(cache, s, "zstd_3")
        assert all("key" not in f and "seq" not in f for f in frames)
        row = rows[(s, "zstd:3")]
        assert int(row["keyframes"]) == 6 and row["predicted_kb"] == ""
        # every zstd frame stands alone: the repeated frames cost as much as the first
        enc = [f["enc"] for f in frames]
        assert min(enc) > 0.9 * max(enc)
        # dzstd's keyframe is zstd of the same bytes: the stream's whole gain is in its predicted frames
        assert float(rows[(s, "dzstd:3:0")]["kb_per_frame"]) < 0.5 * float(row["kb_per_frame"])


def test_start_picks_the_window_and_the_stream_starts_there(run, tmp_path):
    tmp, clip, _, _ = run
    cache = tmp_path / "cache"
    rows = _study(clip, tmp_path / "out", cache, "--start", "2", "--max-images", "3", "--workers", "0")
    results = json.loads((tmp_path / "out" / "sweep" / "results.json").read_text())
    assert results["images"] == ["aaabbb_000002", "aaabbb_000003", "aaabbb_000004"]
    frames = _frames(cache, 46, "dzstd_3_0", 3)
    assert [f["seq"] for f in frames] == [0, 1, 2] and [f["key"] for f in frames] == [True, True, False]  # 3: cut
    enc = [f["enc"] for f in frames]
    assert enc[1] > 0.5 * enc[0] > 100 * enc[2]  # frame 3 is the cut, frame 4 repeats it
    assert int(rows[(46, "dzstd:3:0")]["keyframes"]) == 2


def test_start_errors_are_one_line(run, tmp_path, capsys):
    _, clip, _, _ = run
    args = ["study", "nanodet", "--data", str(clip), "--splits", "95", "--codecs", "dzstd", "--workers", "0",
            "-o", str(tmp_path), "-q"]
    assert main(args + ["--start", "6"]) == 2  # the clip has frames 0..5
    err = capsys.readouterr().err.strip()
    assert "no frames from frame 6 on" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as exc:  # argparse: one line, exit 2
        main(args + ["--start", "-1"])
    assert exc.value.code == 2 and "--start: must be >= 0" in capsys.readouterr().err


def test_results_keep_each_frames_bytes_and_keyframes(run):
    """results.json: per-frame bytes in frame order and the keyframes' indices; the study draws them."""
    tmp, _, cache, _ = run
    results = json.loads((tmp / "all" / "sweep" / "results.json").read_text())
    for row in results["rows"]:
        frames = _frames(cache, row["rank"], row["codec"].replace(":", "_"))
        assert row["frame_bytes"] == [f["enc"] for f in frames]
        assert row["key_indices"] == ([0, 3] if row["codec"].startswith("dzstd") else [])  # 3: the scene cut
    png = (tmp / "all" / "frame_kb.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    md = (tmp / "all" / "report.md").read_text()
    assert "![kB of each frame](frame_kb.png)" in md
    # lossless rows keep every detection: both families reach >= 99 % relative mAP, dzstd at the higher ratio
    assert "## Compression ratio at >= 99 % relative mAP" in md
    for s in SPLITS:
        assert f"- r{s}: dzstd: " in md and f"- r{s}: zstd: " in md


def test_default_ladders_compare_every_family():
    """NNC stepped by 4 QPs or finer (a fair anchor), fq's step ladder, and each registered temporal family;
    one family per curve (intra-only and inter video, or fq's modes, never share one)."""
    from splitinfer.common.codecs import codec_names
    from splitinfer.common.studies.ratestudy import codec_family, default_ladders, expand_ladders

    specs = expand_ladders(default_ladders())
    fams = {}
    for spec in specs:
        fams.setdefault(codec_family(spec), []).append(float(spec.split(":")[1]))
    qps = sorted(fams["nnc"])
    assert len(qps) >= 6 and max(b - a for a, b in zip(qps, qps[1:])) <= 4
    assert len(fams["fq:x"]) >= 5
    for name in ("fqi", "video"):
        if name in codec_names():
            (fam,) = [f for f in fams if f.split(":")[0] == name]
            assert len(fams[fam]) >= 5
    assert codec_family("video:30:intra") == "video:intra" != codec_family("video:30")
    assert codec_family("fq:-26:x") == "fq:x" and codec_family("fq:4") == "fq" and codec_family("nnc:-8") == "nnc"
