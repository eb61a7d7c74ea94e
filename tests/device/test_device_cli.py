"""`splitinfer device` run for real against a network process (an OS process, real gRPC): each form of
the field's infer_onnx_multi.py (TR 26.847 Annex B.3) the UE accepts, checked by what it produced, and
how the UE process stops (exit codes, results written, the wait for an absent server)."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from grpc_helpers import cli, env_one_thread, read_csv, stop_process, wait_for
from splitinfer.common.assets import bundled_images, default_model_path
from splitinfer.common.cli import main

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def server():
    from splitinfer.experiments.server_process import ServerProcess

    srv = ServerProcess(threads=1, device="cpu", env=env_one_thread())
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    src = tmp_path_factory.mktemp("photo")
    shutil.copy(next(p for p in bundled_images() if p.name == "dog.jpg"), src / "dog.jpg")
    return src


def device(server, photo, out, *extra) -> int:
    """The device command in this process: one photo, no anchors, one thread, results under `out`."""
    return main(["device", "--server", server.address, "-s", str(photo), "-results_dir", str(out),
                 "-no_CPU_anchor", "-no_GPU_anchor", "--no-overlay", "--threads", "1", "-encode_algo", "zstd", *extra])


def only_row(path) -> dict:
    rows = read_csv(path)
    assert len(rows) == 1, rows
    return rows[0]


def test_input_source_and_family_long_forms(server, photo, tmp_path):
    out = tmp_path / "out"
    code = main(["device", "--server", server.address, "--input_source", str(photo), "--family", "nanodet",
                 "--split", "120", "-results_dir", str(out), "-no_CPU_anchor", "-no_GPU_anchor", "--no-overlay",
                 "--threads", "1", "-loop", "2"])
    assert code == 0
    row = only_row(out / "results.csv")
    assert row["Source"] == "dog" and row["nb_inference"] == "2" and row["Split_rank"] == "120"
    predictions = out / "predictions" / "dog.txt"
    # predictions_size: bytes of the post-processed predictions (min,avg,max), here those of the file
    assert row["predictions_size"] == ",".join([str(predictions.stat().st_size)] * 3)
    assert "\ndog " in predictions.read_text()


def test_the_summary_says_what_the_uplink_carried(server, photo, tmp_path, capsys):
    """The last line: mean kB per frame sent (the per-frame log's encoded bytes) and the kbit/s that is at
    the frame rate the run achieved."""
    import re

    out = tmp_path / "out"
    assert device(server, photo, out, "--split", "95", "-loop", "3") == 0
    frames = read_csv(out / "results_frames.csv")
    kb = sum(int(r["Encoded_bytes"]) for r in frames) / len(frames) / 1e3
    printed = capsys.readouterr().out
    m = re.search(r"sent ([\d,.]+) kB/frame, ([\d,]+) kbit/s at the ([\d.]+) frames/s achieved", printed)
    assert m, printed
    sent, kbps, fps = (float(g.replace(",", "")) for g in m.groups())
    assert len(frames) == 3 and sent == pytest.approx(kb, abs=0.051) and fps > 0
    assert kbps == pytest.approx(kb * 8 * fps, rel=0.03, abs=1)


def test_processing_units_in_the_tr_case(server, photo, tmp_path, capsys):
    assert device(server, photo, tmp_path / "cpu", "--split", "120", "-PU_partI", "CPU", "-PU_partII", "Cpu") == 0
    row = only_row(tmp_path / "cpu" / "results.csv")
    assert row["UE_provider"] == "cpu" and row["Server_provider"] == "cpu" and row["UE_inference_time_CPU"]
    capsys.readouterr()
    # the server runs Part II on CPU: asking for GPU is refused at set-up, in one line
    assert device(server, photo, tmp_path / "gpu", "--split", "120", "-PU_partII", "GPU") == 2
    err = capsys.readouterr().err
    assert "server runs Part II on cpu, cuda was asked (-PU_partII)" in err and "Traceback" not in err


def test_ref_split_takes_a_label(server, photo, tmp_path, capsys):
    out = tmp_path / "out"
    assert device(server, photo, out, "--split", "60", "-encode_algo", "none", "-ref_split", "split_node_0060") == 0
    row = only_row(out / "results.csv")
    assert row["Ref_split"] == "split_node_0060"
    assert row["Equal_to_ref_split"] == "yes"  # lossless: the server's Part II equals Part II run here
    ref = out / "predictions_split_node_0060" / "dog.txt"
    assert ref.read_text() == (out / "predictions" / "dog.txt").read_text() != ""
    capsys.readouterr()
    assert device(server, photo, tmp_path / "bad", "--split", "60", "-ref_split", "../elsewhere") == 2
    assert "-ref_split '../elsewhere': give a plain label" in capsys.readouterr().err


def test_part_files_without_a_rank(server, photo, tmp_path):
    """-partI/-partII as the field's split script writes them: the cut is read off the files."""
    from splitinfer.common.split.graph import split_model

    parts = tmp_path / "parts"
    p1, p2, manifest, _ = split_model(default_model_path(), rank=60, out_dir=parts)
    out = tmp_path / "with_manifest"
    assert device(server, photo, out, "-partI", str(p1), "-partII", str(p2), "-ref_split", "field") == 0
    row = only_row(out / "results.csv")
    assert row["Split_rank"] == "60" and row["Crossing_tensors"] == "4" and row["Equal_to_ref_split"] in ("yes",
                                                                                                       "rounding")
    manifest.unlink()  # no manifest: the rank whose Part I has exactly the file's outputs
    out = tmp_path / "from_onnx"
    assert device(server, photo, out, "-partI", str(p1)) == 0
    assert only_row(out / "results.csv")["Split_rank"] == "60"


def test_results_filename_is_honoured_as_given(server, photo, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert device(server, photo, tmp_path / "out", "--split", "120", "-results_filename", "field.csv") == 0
    assert only_row(work / "field.csv")["Source"] == "dog"
    assert [r["Status"] for r in read_csv(work / "field_frames.csv")] == ["ok"]
    assert not (tmp_path / "out" / "field.csv").exists() and not (tmp_path / "out" / "results.csv").exists()
    assert (tmp_path / "out" / "predictions" / "dog.txt").is_file()  # -results_dir still hosts the predictions


def test_exit_code_is_1_when_frames_failed(server, photo, tmp_path, capsys):
    """No reply can come within 2 ms at split 60 on this machine: each frame meets its deadline once
    (--max-attempts 1) and is reported failed; the results are written and the exit code says so."""
    out = tmp_path / "out"
    code = device(server, photo, out, "--split", "60", "-loop", "2", "--timeout", "0.002", "--max-attempts", "1")
    assert code == 1
    frames = read_csv(out / "results_frames.csv")
    assert [r["Status"] for r in frames] == ["failed", "failed"], frames
    assert all("DEADLINE_EXCEEDED" in r["Error"] for r in frames)
    row = only_row(out / "results.csv")
    assert row["Frames_failed"] == "2" and row["nb_inference"] == "0"
    assert "2 failed" in capsys.readouterr().out


def test_an_absent_server_is_waited_for_reconnect_s_not_30_s(photo, tmp_path, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    t0 = time.monotonic()
    code = main(["device", "--server", f"127.0.0.1:{port}", "-s", str(photo), "--split", "120",
                 "-results_dir", str(tmp_path), "-no_CPU_anchor", "-no_GPU_anchor", "--threads", "1",
                 "--reconnect-s", "1", "--timeout", "1"])
    elapsed = time.monotonic() - t0
    assert code == 2
    assert f"server 127.0.0.1:{port} not reachable within 1 s" in capsys.readouterr().err
    assert elapsed < 15, elapsed  # building Part I plus the 1 s wait, far from the old fixed 30 s


def test_sigterm_while_lingering_for_metrics_keeps_the_results(server, photo, tmp_path):
    """The results are written before --metrics-linger; SIGTERM then ends the linger: exit 0, not 143."""
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "splitinfer.device.main", "--server", server.address, "-s", str(photo),
            "--split", "120", "-results_dir", str(out), "-no_CPU_anchor", "-no_GPU_anchor", "--no-overlay",
            "--threads", "1", "--metrics-port", "0", "--metrics-linger", "120"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_one_thread())
    try:
        wait_for(lambda: (out / "results.csv").exists() or proc.poll() is not None, 120, "the results file")
        assert proc.poll() is None, "the UE did not linger"
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 10
    finally:
        stop_process(proc)
    assert proc.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr and "results in" in stdout
    assert only_row(out / "results.csv")["nb_inference"] == "1"
    assert [r["Status"] for r in read_csv(out / "results_frames.csv")] == ["ok"]


def test_a_video_streamed_with_a_sequential_codec(server, tmp_path):
    """`device -s clip.avi -encode_algo dzstd`: the clip's frames coded in order on one stream (a keyframe, then
    predicted frames smaller than it), each frame's detections equal to the whole model's (lossless)."""
    import cv2

    from splitinfer.common.core.images import read_image

    img = read_image(next(p for p in bundled_images() if p.name == "dog.jpg"))
    clip = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for k in range(6):  # a static scene with a small moving patch
        frame = cv2.resize(img, (320, 240))
        cv2.rectangle(frame, (10 + 8 * k, 10), (40 + 8 * k, 40), (255, 255, 255), -1)
        w.write(frame)
    w.release()
    out = tmp_path / "out"
    code = main(["device", "--server", server.address, "-s", str(clip), "-results_dir", str(out), "-no_GPU_anchor",
                 "--no-overlay", "--threads", "1", "-encode_algo", "dzstd", "--split", "60", "--in-flight", "2"])
    assert code == 0
    frames = read_csv(out / "results_frames.csv")
    assert [r["Keyframe"] for r in frames] == ["yes"] + ["no"] * 5, frames
    sizes = [int(r["Encoded_bytes"]) for r in frames]
    assert max(sizes[1:]) < sizes[0], sizes
    row = only_row(out / "results.csv")
    assert row["nb_inference"] == "6" and row["Equal_to_anchor"] in ("yes", "rounding"), row
