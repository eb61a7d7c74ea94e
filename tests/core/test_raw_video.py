"""Raw YUV (`.yuv`, size and pixel format in the name or $SPLITINFER_YUV) and `.y4m` are read everywhere a
video is read (issue 19, section 4: they were `unsupported file type`). The files are written here with
numpy/OpenCV from a real photo, in each layout the MPEG / SFU-HW sequences use."""

import cv2
import numpy as np
import pytest

from splitinfer.common.assets import IMAGES_DIR
from splitinfer.common.cli import main
from splitinfer.common.core.errors import UserError
from splitinfer.common.core.images import frame_count, frame_rate, iter_frames, read_image

W, H = 96, 64


@pytest.fixture(scope="module")
def frames():
    """Three different BGR frames of the bundled dog photo, W x H."""
    img = cv2.resize(read_image(IMAGES_DIR / "dog.jpg"), (W, H), interpolation=cv2.INTER_AREA)
    return [img, np.ascontiguousarray(img[::-1]), np.ascontiguousarray(img[:, ::-1])]


def i420(img):
    return cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420).tobytes()


def planes444(img):
    yuv = cv2.cvtColor(img, cv2.COLOR_BGR2YUV)
    return b"".join(np.ascontiguousarray(yuv[:, :, k]).tobytes() for k in range(3))


def ten_bit(data: bytes) -> bytes:
    return (np.frombuffer(data, np.uint8).astype("<u2") << 2).tobytes()


def _check(path, frames, tol=12.0):
    got = list(iter_frames(path))
    assert [n for n, _ in got] == [f"{path.stem}_{i:06d}" for i in range(len(frames))]
    for (_, a), b in zip(got, frames):
        assert a.shape == (H, W, 3) and a.dtype == np.uint8
        assert np.abs(a.astype(int) - b.astype(int)).mean() < tol  # chroma subsampling costs a little
    assert frame_count(path) == len(frames)


def test_yuv420p_8_and_10_bit_and_444(frames, tmp_path):
    p = tmp_path / f"Clip_{W}x{H}_30.yuv"
    p.write_bytes(b"".join(i420(f) for f in frames))
    _check(p, frames)
    p10 = tmp_path / f"Clip_{W}x{H}_30_10bit.yuv"
    p10.write_bytes(b"".join(ten_bit(i420(f)) for f in frames))
    _check(p10, frames)
    p444 = tmp_path / f"Clip_{W}x{H}_yuv444p.yuv"
    p444.write_bytes(b"".join(planes444(f) for f in frames))
    _check(p444, frames, tol=3.0)


def test_size_from_the_environment(frames, tmp_path, monkeypatch):
    p = tmp_path / "noname.yuv"
    p.write_bytes(b"".join(i420(f) for f in frames))
    with pytest.raises(UserError, match="needs its frame size"):
        list(iter_frames(p))
    monkeypatch.setenv("SPLITINFER_YUV", f"{W}x{H}:yuv420p")
    _check(p, frames)


def test_y4m(frames, tmp_path):
    p = tmp_path / "clip.y4m"
    p.write_bytes(f"YUV4MPEG2 W{W} H{H} F30:1 Ip A1:1 C420jpeg\n".encode()
                  + b"".join(b"FRAME\n" + i420(f) for f in frames))
    _check(p, frames)


def test_wrong_size_is_one_clear_error(frames, tmp_path):
    p = tmp_path / f"Clip_{W + 2}x{H}_30.yuv"
    p.write_bytes(b"".join(i420(f) for f in frames))
    with pytest.raises(UserError, match="not a whole number of"):
        list(iter_frames(p))


def test_detect_device_and_dataset_read_raw_video(frames, tmp_path, capsys):
    yuv = tmp_path / f"Clip_{W}x{H}_30.yuv"
    yuv.write_bytes(b"".join(i420(f) for f in frames))
    y4m = tmp_path / "clip.y4m"
    y4m.write_bytes(f"YUV4MPEG2 W{W} H{H} F30:1 C420\n".encode() + b"".join(b"FRAME\n" + i420(f) for f in frames))
    assert main(["detect", str(yuv), "-o", str(tmp_path / "det"), "--no-overlay", "--max-frames", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "det").glob("*.txt")) == [f"{yuv.stem}_00000{i}.txt" for i in (0, 1)]
    assert main(["device", "-no_split", "-no_GPU_anchor", "-s", str(y4m), "-results_dir", str(tmp_path / "dev"),
                 "--no-overlay"]) == 0
    assert len(list((tmp_path / "dev" / "predictions").glob("clip_*.txt"))) == 3
    assert main(["dataset", "frames", str(yuv), "-o", str(tmp_path / "fr")]) == 0
    assert len(list((tmp_path / "fr").rglob("*.png"))) == 3
    assert "Traceback" not in capsys.readouterr().err


def test_frame_rate_from_the_container_the_y4m_header_or_the_yuv_name(frames, tmp_path):
    """What the study's kbit/s column is computed at: a container's rate, a .y4m F field, the number after the
    size in a raw .yuv name (the SFU-HW spelling); None where nothing says it (photos, a bare .yuv name)."""
    clip = tmp_path / "c.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (W, H))
    for f in frames:
        w.write(f)
    w.release()
    (tmp_path / "Seq_96x64_50.yuv").write_bytes(b"".join(i420(f) for f in frames))
    (tmp_path / "Seq_96x64.yuv").write_bytes(b"".join(i420(f) for f in frames))
    (tmp_path / "s.y4m").write_bytes(f"YUV4MPEG2 W{W} H{H} F30000:1001 C420jpeg\n".encode()
                                     + b"".join(b"FRAME\n" + i420(f) for f in frames))
    assert frame_rate(clip) == pytest.approx(25.0)
    assert frame_rate(tmp_path / "Seq_96x64_50.yuv") == 50.0
    assert frame_rate(tmp_path / "s.y4m") == pytest.approx(29.97, abs=0.01)
    assert frame_rate(tmp_path / "Seq_96x64.yuv") is None
    assert frame_rate(IMAGES_DIR / "dog.jpg") is None and frame_rate(IMAGES_DIR) is None
