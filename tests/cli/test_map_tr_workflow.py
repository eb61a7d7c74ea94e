"""The TR workflow's accuracy (issue 19, section 2): `map` scores the frames that were predicted and says how
many ground-truth frames it left out (`--count-unpredicted` counts them as misses), and `device --threshold`
writes predictions at COCO's convention, so `device` + `map` give the AP `detect --threshold 0.05` gives.

Before: `map -v clip.avi -p out/predictions -g gt/` after `device -nb_frames 3` counted the other frames as
misses silently, and `device` cut predictions at the family's display threshold (no option)."""

import re
import shutil

import pytest

from grpc_helpers import env_one_thread
from splitinfer.common.assets import IMAGES_DIR
from splitinfer.common.cli import main

pytestmark = pytest.mark.timeout(300)


def _ap(text: str) -> float:
    return float(re.search(r"AP +([\d.]+)", text.split("vs ground truth", 1)[-1] if "vs ground truth" in text
                           else text).group(1))


def test_map_scores_predicted_frames_and_says_how_many_were_left_out(tmp_path, capsys):
    gt, preds = tmp_path / "gt", tmp_path / "preds"
    gt.mkdir(), preds.mkdir()
    for i in range(10):
        (gt / f"clip_{i:06d}.txt").write_text("person 10 10 60 90\n")
        if i < 3:
            (preds / f"clip_{i:06d}.txt").write_text("person 10 10 60 90 0.9\n")
    (tmp_path / "clip.avi").write_bytes(b"\0")
    argv = ["map", "-v", str(tmp_path / "clip.avi"), "-p", str(preds), "-g", str(gt), "--no_plot"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "7 of 10 ground-truth image(s)" in err and "left out" in err
    assert re.search(r"preds +3 +3 +100\.0", out), out
    assert main(argv + ["--count-unpredicted"]) == 0
    out, err = capsys.readouterr()
    assert "counted as misses" in err
    assert re.search(r"preds +10 +3 +(\d+\.\d)", out) and float(re.search(r"preds +10 +3 +(\d+\.\d)", out)[1]) < 40
    assert main(["map", str(preds), "--gt", str(gt)]) == 0
    assert _ap(capsys.readouterr().out) == 100.0


def test_device_threshold_gives_coco_convention_ap(tmp_path, capsys):
    from splitinfer.experiments.server_process import ServerProcess

    photo = tmp_path / "photo"
    photo.mkdir()
    shutil.copy(IMAGES_DIR / "terrain2.png", photo / "terrain2.png")
    gt = str(IMAGES_DIR / "terrain2_coco.json")
    aps, low = {}, {}
    with ServerProcess(threads=1, device="cpu", env=env_one_thread()) as srv:
        for label, extra in (("display", []), ("coco", ["--threshold", "0.05"])):
            out = tmp_path / label
            assert main(["device", "--server", srv.address, "--split", "60", "-s", str(photo), "-results_dir",
                         str(out), "-no_GPU_anchor", "--no-overlay", "--threads", "1", *extra]) == 0
            scores = [float(line.split()[-1]) for line in (out / "predictions" / "terrain2.txt").read_text().split("\n")
                      if line.strip()]
            low[label] = min(scores)
            capsys.readouterr()
            assert main(["map", str(out / "predictions"), "--gt", gt]) == 0
            out_text, err_text = capsys.readouterr()
            aps[label] = _ap(out_text)
            assert ("device --threshold 0.05" in err_text) == (label == "display"), err_text  # the hint
    assert low["display"] >= 0.3 and low["coco"] < 0.3, low
    assert aps["coco"] > aps["display"] + 20, aps  # 60.5 vs 18.7 on this photo (README)
    assert main(["detect", str(photo / "terrain2.png"), "-o", str(tmp_path / "det"), "--threshold", "0.05",
                 "--no-overlay"]) == 0
    capsys.readouterr()
    assert main(["map", str(tmp_path / "det"), "--gt", gt]) == 0
    assert abs(_ap(capsys.readouterr().out) - aps["coco"]) < 1.0, "device --threshold scores as detect does"
