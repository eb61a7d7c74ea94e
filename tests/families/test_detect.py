"""`splitinfer detect` (the whole-model anchor), frame sources and overlays, on the bundled photos."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from splitinfer.common.assets import IMAGES_DIR, default_model_path
from splitinfer.common.cli import main
from splitinfer.common.core.detections import Detection, read_predictions
from splitinfer.common.core.errors import UserError
from splitinfer.common.core.images import frame_count, iter_frames, read_image, write_image
from splitinfer.common.eval.overlay import draw_detections, label_color

VIDEO_PHOTOS = ("dog.jpg", "astronaut.jpg", "giraffe.jpg")
FRAMES_PER_PHOTO = 2


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A short real video: each photo held for two frames, 640x480, written with OpenCV."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (640, 480))
    assert writer.isOpened()
    for name in VIDEO_PHOTOS:
        frame = cv2.resize(cv2.imread(str(IMAGES_DIR / name)), (640, 480))
        for _ in range(FRAMES_PER_PHOTO):
            writer.write(frame)
    writer.release()
    return path


def run_detect(*args) -> int:
    return main(["detect", *map(str, args)])


def test_detect_image_writes_predictions_and_overlay(tmp_path, capsys):
    assert run_detect(IMAGES_DIR / "dog.jpg", "-o", tmp_path) == 0
    dets = read_predictions(tmp_path / "dog.txt", with_score=True)
    assert {"dog", "bicycle", "truck"} <= {d.label for d in dets}
    assert all(d.score >= 0.35 for d in dets)  # the family's default threshold
    overlay = read_image(tmp_path / "dog.overlay.jpg")
    original = read_image(IMAGES_DIR / "dog.jpg")
    assert overlay.shape == original.shape
    assert np.abs(overlay.astype(int) - original).mean() > 1  # boxes were drawn
    out = capsys.readouterr().out
    assert "1 frame(s)" in out and "bicycle" in out


def test_detect_threshold_changes_what_is_kept(tmp_path):
    assert run_detect(IMAGES_DIR / "dog.jpg", "-o", tmp_path / "lo", "--threshold", "0.2", "--no-overlay") == 0
    assert run_detect(IMAGES_DIR / "dog.jpg", "-o", tmp_path / "hi", "--threshold", "0.6", "--no-overlay") == 0
    lo, hi = read_predictions(tmp_path / "lo" / "dog.txt"), read_predictions(tmp_path / "hi" / "dog.txt")
    assert len(lo) > len(hi) >= 1 and all(d.score >= 0.6 for d in hi)
    assert not list((tmp_path / "lo").glob("*.jpg"))


def test_detect_video_one_file_per_frame(tmp_path, video):
    assert frame_count(video) == len(VIDEO_PHOTOS) * FRAMES_PER_PHOTO
    assert run_detect(video, "-o", tmp_path) == 0
    txts = sorted(p.name for p in tmp_path.glob("*.txt"))
    assert txts == [f"clip_{i:06d}.txt" for i in range(len(VIDEO_PHOTOS) * FRAMES_PER_PHOTO)]
    assert len(list(tmp_path.glob("*.overlay.jpg"))) == len(txts)
    labels = [{d.label for d in read_predictions(tmp_path / t)} for t in txts]
    assert "bicycle" in labels[0] and "bicycle" in labels[1]
    assert "person" in labels[2] and "person" in labels[3]
    assert "giraffe" in labels[4] and "giraffe" in labels[5]
    first = read_predictions(tmp_path / txts[0])
    assert all(0 <= d.x1 < d.x2 <= 640 and 0 <= d.y1 < d.y2 <= 480 for d in first)  # frame pixels
    assert read_image(tmp_path / "clip_000000.overlay.jpg").shape == (480, 640, 3)


def test_detect_folder_and_max_frames(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for name in ("horses.jpg", "kite.jpg"):
        shutil.copy(IMAGES_DIR / name, src / name)
    (src / "notes.txt").write_text("not an image")
    assert run_detect(src, "-o", tmp_path / "out") == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.txt")) == ["horses.txt", "kite.txt"]
    kite = read_predictions(tmp_path / "out" / "kite.txt")
    assert {"kite", "person"} <= {d.label for d in kite}
    assert run_detect(src, "-o", tmp_path / "one", "--max-frames", "1", "--no-overlay") == 0
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["horses.txt"]


def test_detect_with_onnx_path_and_family(tmp_path):
    model = tmp_path / "nd.onnx"
    shutil.copy(default_model_path(), model)
    assert run_detect(IMAGES_DIR / "astronaut.jpg", "--model", model, "--family", "nanodet", "-o", tmp_path) == 0
    assert "person" in {d.label for d in read_predictions(tmp_path / "astronaut.txt")}
    assert run_detect(IMAGES_DIR / "astronaut.jpg", "--model", model, "-o", tmp_path) == 2  # family unknown
    assert run_detect(IMAGES_DIR / "astronaut.jpg", "--model", model, "--family", "ssd_resnet", "-o", tmp_path) == 2


@pytest.mark.parametrize("case", ["missing", "not_image", "empty_folder", "suffix", "threshold", "model"])
def test_detect_bad_input_is_one_line_exit_2(tmp_path, case):
    bad_image = tmp_path / "broken.jpg"
    bad_image.write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "empty").mkdir()
    (tmp_path / "data.csv").write_text("1,2\n")
    args = {
        "missing": [tmp_path / "nope.jpg"],
        "not_image": [bad_image],
        "empty_folder": [tmp_path / "empty"],
        "suffix": [tmp_path / "data.csv"],
        "threshold": [IMAGES_DIR / "dog.jpg", "--threshold", "2"],
        "model": [IMAGES_DIR / "dog.jpg", "--model", "nonexistent"],
    }[case]
    expect = {"missing": "nope.jpg", "not_image": "broken.jpg", "empty_folder": "no images",
              "suffix": "unsupported file type", "threshold": "--threshold", "model": "nonexistent"}[case]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "splitinfer.common.cli", "detect", *map(str, args),
                           "-o", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("splitinfer detect: error:") and expect in lines[0], lines
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------- images


def test_iter_frames_names_and_errors(tmp_path, video):
    names = [n for n, _ in iter_frames(video, max_frames=3)]
    assert names == ["clip_000000", "clip_000001", "clip_000002"]
    folder = tmp_path / "f"
    folder.mkdir()
    img = read_image(IMAGES_DIR / "chelsea.jpg")
    write_image(folder / "a.jpg", img)
    write_image(folder / "a.png", img)
    write_image(folder / "b.png", img[:, :, 0])  # gray file -> read back as 3 channels
    frames = list(iter_frames(folder))
    assert [n for n, _ in frames] == ["a_jpg", "a_png", "b"]
    assert all(f.shape == img.shape for _, f in frames)
    np.testing.assert_array_equal(frames[1][1], img)  # PNG is lossless
    not_video = tmp_path / "fake.mp4"
    not_video.write_bytes(b"nothing here")
    with pytest.raises(UserError, match="fake.mp4"):
        list(iter_frames(not_video))
    with pytest.raises(UserError, match="source not found"):
        list(iter_frames(tmp_path / "none"))


# ---------------------------------------------------------------------------------------------- overlay


def test_overlay_draws_in_the_label_colour_and_keeps_the_input():
    img = np.full((200, 300, 3), 128, np.uint8)
    before = img.copy()
    det = Detection("dog", 50, 60, 250, 180, 0.87)
    out = draw_detections(img, [det])
    np.testing.assert_array_equal(img, before)
    color = np.array(label_color("dog"))
    assert np.abs(out[120, 50].astype(int) - color).max() <= 2  # left edge, mid-height
    assert np.abs(out[120, 150].astype(int) - 128).max() == 0  # inside the box untouched
    assert (np.abs(out[40:60, 50:150].astype(int) - 128).sum(axis=2) > 0).any()  # tag above the box
    assert label_color("dog") == label_color("dog") != label_color("cat")
