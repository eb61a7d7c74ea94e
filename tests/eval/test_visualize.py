"""Overlays on an image, a folder and a video; side by side with mAP titles; the video round trip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from splitinfer.common.cli import main
from splitinfer.common.eval.datasets import extract_frames
from splitinfer.common.core.detections import Detection, write_predictions
from splitinfer.common.core.errors import UserError
from splitinfer.common.core.images import iter_frames
from splitinfer.common.eval.visualize import frame_names, visualize

W, H = 160, 120


def _image(path, value=90):
    img = np.full((H, W, 3), value, np.uint8)
    cv2.imwrite(str(path), img)
    return path


def _video(path, n):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8, (W, H))
    for i in range(n):
        w.write(np.full((H, W, 3), 20 + 10 * i, np.uint8))
    w.release()
    return path


def test_one_image_draws_boxes_and_gt(tmp_path, capsys):
    src = _image(tmp_path / "a.png")
    write_predictions(tmp_path / "pred.txt", [Detection("dog", 20, 30, 100, 90, 0.9),
                                              Detection("cat", 110, 10, 150, 50, 0.1)])
    write_predictions(tmp_path / "gt.txt", [Detection("dog", 20, 30, 100, 90)], with_score=False)
    out = tmp_path / "o.png"
    assert main(["visualize", str(src), str(tmp_path / "pred.txt"), "--gt", str(tmp_path / "gt.txt"),
                 "-o", str(out)]) == 0
    assert "mAP 100.0" in capsys.readouterr().out
    img = cv2.imread(str(out))
    bar = img.shape[0] - H
    assert img.shape[1] == W and 10 < bar < 60  # the title bar on top
    body = img[bar:]
    assert (body[60, 20] != 90).any() and (body[60, 60] == 90).all()  # box edge drawn, inside untouched
    assert (body[30, 130] == 90).all()  # the 0.1 cat is under the drawing threshold (0.3)


def test_folder_compare_titles_relative_map(tmp_path, capsys):
    src = tmp_path / "imgs"
    src.mkdir()
    for name in ("x", "y"):
        _image(src / f"{name}.jpg")
    anchor, split = tmp_path / "anchor", tmp_path / "s60_nnc-26"
    for name in ("x", "y"):
        write_predictions(anchor / f"{name}.txt", [Detection("car", 10, 10, 110, 110, 0.9)])
    write_predictions(split / "x.txt", [Detection("car", 20, 10, 120, 110, 0.8)])  # IoU 0.818 -> AP 0.7
    write_predictions(split / "y.txt", [Detection("car", 10, 10, 110, 110, 0.85)])  # exact -> AP 1.0
    out = tmp_path / "vis"
    res = visualize(src, anchor, compare=split, out=out)
    # 2 truth boxes; by score: exact (0.85), shifted (0.8). IoU thresholds .50-.80: AP 1; .85-.95: only
    # the exact one matches, recall 0.5 -> 51/101. (7 * 1 + 3 * 51/101) / 10 = 0.8515
    assert res.titles[1] == "s60_nnc-26\nrelative mAP 85.1  AP50 100.0  (2 frames)"
    assert res.titles[0].startswith("anchor\nreference")
    assert res.kind == "dir" and sorted(p.name for p in out.iterdir()) == ["x.png", "y.png"]
    img = cv2.imread(str(out / "x.png"))
    assert img.shape[1] == 2 * W + 8 and img.shape[0] > H
    # errors: predictions that name none of the frames, a missing source
    write_predictions(tmp_path / "other" / "zzz.txt", [])
    with pytest.raises(UserError, match=r"no predictions file matches the frames .* \(expected names like x.txt\)"):
        visualize(src, tmp_path / "other", out=out)
    assert main(["visualize", str(tmp_path / "nope.jpg"), str(anchor)]) == 2
    assert "source not found" in capsys.readouterr().err
    assert main(["visualize", str(src), str(anchor), "-o", str(tmp_path / "one.png")]) == 2
    assert "one picture cannot hold 2 frames" in capsys.readouterr().err


def test_show_is_refused_headless(tmp_path, monkeypatch, capsys):
    src = _image(tmp_path / "a.png")
    write_predictions(tmp_path / "p.txt", [])
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["visualize", str(src), str(tmp_path / "p.txt"), "--show"]) == 2
    assert "--show needs a desktop" in capsys.readouterr().err


def test_video_round_trip(tmp_path, capsys):
    """Frames out, predictions per frame, overlays back into an MP4 OpenCV reads frame for frame."""
    n = 6
    video = _video(tmp_path / "clip.mp4", n)
    frames = extract_frames(video, tmp_path / "frames")
    assert [p.stem for p in frames] == frame_names(video) == [k for k, _ in iter_frames(video)]
    assert [p.stem for p in frames] == [k for k, _ in iter_frames(tmp_path / "frames")]
    anchor, split, gt = tmp_path / "anchor", tmp_path / "split", tmp_path / "gt"
    for i, p in enumerate(frames):
        box = Detection("person", 10 + 10 * i, 20, 60 + 10 * i, 100, 0.9)
        write_predictions(gt / f"{p.stem}.txt", [box], with_score=False)
        write_predictions(anchor / f"{p.stem}.txt", [box])
        # the split run loses the person in every other frame
        write_predictions(split / f"{p.stem}.txt", [box] if i % 2 == 0 else [])
    out = tmp_path / "vis.mp4"
    assert main(["visualize", str(video), str(anchor), "--compare", str(split), "--gt", str(gt),
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "anchor: mAP 100.0" in text and "split: mAP 50.5" in text  # recall 0.5: 51/101
    cap = cv2.VideoCapture(str(out))
    count, sizes = 0, set()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        count += 1
        sizes.add(frame.shape)
    cap.release()
    assert count == n
    (shape,) = sizes
    assert shape[1] == 2 * W + 8 and shape[0] > H
    # the extracted frames, as a folder, into an MP4 too, with a chosen frame rate
    out2 = tmp_path / "frames.mp4"
    res = visualize(tmp_path / "frames", anchor, out=out2, fps=4, max_frames=4)
    cap = cv2.VideoCapture(str(out2))
    assert res.frames == 4 and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4 and cap.get(cv2.CAP_PROP_FPS) == 4
    cap.release()
