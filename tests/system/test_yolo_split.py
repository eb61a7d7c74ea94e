"""Trained YOLOv3-tiny split between the two processes: `serve` and `device` as real OS processes.

The model folder comes from `models import darknet` (weights from the package registry, see
tests/darknet_fixtures.py). At lossless splits (`none`) every frame's detections must equal the whole model's
(the results CSV's `Equal_to_anchor` is `yes` or `rounding`), at rank 14 (one tensor) and 23 (three).
"""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from splitinfer.common.assets import IMAGES_DIR
from tests.darknet_fixtures import import_yolov3_tiny

pytestmark = pytest.mark.timeout(600)


def test_yolov3_tiny_split_through_both_processes_equals_the_whole_model(tmp_path):
    from splitinfer.experiments.server_process import ServerProcess

    repo = tmp_path / "models"
    import_yolov3_tiny(repo / "yolov3_tiny")
    images = tmp_path / "images"
    images.mkdir()
    for name in ("dog.jpg", "person.jpg", "giraffe.jpg"):
        (images / name).write_bytes((IMAGES_DIR / name).read_bytes())
    srv = ServerProcess(repo, threads=1, device="cpu")
    try:
        for split in (14, 23):
            out = tmp_path / f"s{split}"
            r = subprocess.run([sys.executable, "-m", "splitinfer.common.cli", "device", "--server", srv.address,
                                "-anchor", str(repo / "yolov3_tiny"), "--split", str(split), "-encode_algo", "none",
                                "-s", str(images), "-loop", "1", "-no_GPU_anchor", "--threads", "1", "--no-overlay",
                                "-results_dir", str(out)], capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr[-2000:]
            rows = list(csv.DictReader(open(out / "results.csv")))
            assert len(rows) == 3 and all(row["Model"] == "yolov3_tiny" for row in rows)
            assert {row["Equal_to_anchor"] for row in rows} <= {"yes", "rounding"}, rows
            assert int(rows[0]["Crossing_tensors"]) == (1 if split == 14 else 3)
            dog = (out / "predictions" / "dog.txt").read_text().split()
            assert {"dog", "bicycle", "truck"} <= set(dog[0::6])  # the trained model's objects came back
    finally:
        assert srv.stop() == 0, "\n".join(srv.stderr_tail)
