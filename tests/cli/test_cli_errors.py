"""Bad input to the tools: unreadable images and videos, files that are not ONNX, wrong families, empty
folders. Each gets one clear line naming the problem, exit code 2, no traceback; where a run had already
produced results (a bad image halfway through a folder), they are kept.

Commands run in this process through the real CLI entry point (`splitinfer.common.cli.main`); the UE's
split mode talks to a real network process.
"""

import shutil

import pytest

from grpc_helpers import read_csv
from splitinfer.common.assets import bundled_images
from splitinfer.common.cli import main

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    paths = {p.name: p for p in bundled_images()}
    (d / "empty").mkdir()
    (d / "not_an_image.jpg").write_text("this is text, not a JPEG\n")
    (d / "truncated.jpg").write_bytes(paths["dog.jpg"].read_bytes()[:3000])
    (d / "not_a_video.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    (d / "not_a_model.onnx").write_bytes(b"\x08\x07garbage that is no ModelProto")
    (d / "text.onnx").write_text("ir_version: 7\n")
    (d / "gt.json").write_text("{ not json")
    mixed = d / "mixed"  # a, then an unreadable image, then c
    mixed.mkdir()
    shutil.copy(paths["dog.jpg"], mixed / "a.jpg")
    (mixed / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    shutil.copy(paths["kite.jpg"], mixed / "c.jpg")
    preds = d / "preds"
    preds.mkdir()
    (preds / "a.txt").write_text("dog 1 2 3\n")  # a column missing
    (d / "goodpreds").mkdir()
    (d / "goodpreds" / "a.txt").write_text("dog 1 2 30 40 0.9\n")
    return d


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("splitinfer ")]
    assert "Traceback" not in captured.err
    return code, errors, captured


def expect_error(capsys, text, *argv):
    code, errors, captured = run_cli(capsys, *argv)
    assert code == 2, (argv, captured.err[-1500:])
    assert len(errors) == 1 and ": error: " in errors[0] and text in errors[0], (argv, errors)
    return errors[0]


CASES = {
    "detect-unreadable-image": ("not a readable image", ["detect", "{d}/not_an_image.jpg", "-o", "{o}"]),
    "detect-truncated-image": ("truncated.jpg: not a readable image", ["detect", "{d}/truncated.jpg", "-o", "{o}"]),
    "detect-unreadable-video": ("not_a_video.mp4: cannot open video", ["detect", "{d}/not_a_video.mp4", "-o", "{o}"]),
    "detect-empty-folder": ("folder holds no images", ["detect", "{d}/empty", "-o", "{o}"]),
    "detect-not-onnx": ("not_a_model.onnx",
                        ["detect", "{d}/mixed", "--model", "{d}/not_a_model.onnx", "--family", "nanodet", "-o", "{o}"]),
    "detect-unknown-family": ("unknown model family 'yolo9000'", ["detect", "{d}/mixed", "--family", "yolo9000", "-o", "{o}"]),
    "detect-wrong-family": ("do not match family ssd_resnet", [
        "detect", "{d}/mixed", "--model", "{m}", "--family", "ssd_resnet", "-o", "{o}"]),
    "device-empty-folder": ("folder holds no images", [
        "device", "-no_split", "-no_GPU_anchor", "-s", "{d}/empty", "-results_dir", "{o}"]),
    "device-unreadable-video": ("cannot open video", [
        "device", "-no_split", "-no_GPU_anchor", "-s", "{d}/not_a_video.mp4", "-results_dir", "{o}"]),
    "device-not-onnx": ("not_a_model.onnx", [
        "device", "-no_split", "-no_GPU_anchor", "-s", "{d}/mixed", "-anchor", "{d}/not_a_model.onnx", "-f", "nanodet",
        "-results_dir", "{o}"]),
    "device-wrong-family": ("do not match family ssd_resnet", [
        "device", "-no_split", "-no_GPU_anchor", "-s", "{d}/mixed", "-f", "ssd_resnet", "-results_dir", "{o}"]),
    "device-missing-source": ("source not found", [
        "device", "-no_split", "-no_GPU_anchor", "-s", "{d}/nowhere", "-results_dir", "{o}"]),
    "split-not-onnx": ("text.onnx: not a readable ONNX model", ["split", "-a", "{d}/text.onnx", "-r", "3"]),
    "split-missing-model": ("not found", ["split", "-a", "{d}/nope.onnx", "-r", "3"]),
    "analyze-not-onnx": ("not a readable ONNX model", ["analyze", "{d}/not_a_model.onnx", "-o", "{o}"]),
    "analyze-unknown-model": ("model not found: nope", ["analyze", "nope", "-o", "{o}"]),
    "sweep-not-onnx": ("not a readable ONNX model", ["sweep", "{d}/not_a_model.onnx", "--family", "nanodet",
                                                     "-o", "{o}", "--workers", "0", "-q"]),
    "sweep-empty-folder": ("folder holds no images", ["sweep", "nanodet", "--data", "{d}/empty", "-o", "{o}",
                                                      "--workers", "0", "-q"]),
    "sweep-unreadable-image": ("b.jpg: not a readable image", [
        "sweep", "nanodet", "--data", "{d}/mixed", "-o", "{o}", "--workers", "0", "--splits", "60", "--codecs", "none",
        "-q", "--no-plots"]),
    "map-empty-folder": ("no .txt files", ["map", "{d}/empty", "--gt", "{d}/preds"]),
    "map-malformed-predictions": ("a.txt:1: expected 5 or 6 fields", ["map", "{d}/preds", "--gt", "{d}/goodpreds"]),
    "map-bad-ground-truth": ("gt.json", ["map", "{d}/goodpreds", "--gt", "{d}/gt.json"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_and_exit_2(case, files, tmp_path, capsys):
    from splitinfer.common.assets import default_model_path

    text, argv = CASES[case]
    argv = [a.format(d=files, o=tmp_path / "out", m=default_model_path()) for a in argv]
    expect_error(capsys, text, *argv)


def test_detect_keeps_what_it_did_before_a_bad_image(files, tmp_path, capsys):
    out = tmp_path / "det"
    line = expect_error(capsys, "b.jpg: not a readable image", "detect", files / "mixed", "-o", out, "--no-overlay")
    assert "mixed/b.jpg" in line
    assert (out / "a.txt").read_text().strip()  # a's detections were written before b stopped the run


def test_device_anchor_mode_keeps_results_before_a_bad_image(files, tmp_path, capsys):
    out = tmp_path / "dev"
    expect_error(capsys, "b.jpg: not a readable image", "device", "-no_split", "-no_GPU_anchor", "-s", files / "mixed",
                 "-results_dir", out, "--no-overlay")
    rows = read_csv(out / "results.csv")
    assert [r["Source"] for r in rows] == ["a"] and rows[0]["predictions"]
    assert (out / "predictions" / "a.txt").read_text().strip()


def test_device_split_mode_keeps_results_before_a_bad_image(files, tmp_path, capsys):
    from splitinfer.experiments.server_process import ServerProcess

    out = tmp_path / "split"
    with ServerProcess(threads=1, device="cpu") as server:
        expect_error(capsys, "b.jpg: not a readable image", "device", "--server", server.address, "-s", files / "mixed",
                     "--split", "120", "-encode_algo", "zstd", "-no_CPU_anchor", "-no_GPU_anchor", "--no-overlay",
                     "--threads", "1", "-results_dir", out)
    assert [(r["Source"], r["Status"]) for r in read_csv(out / "results_frames.csv")] == [("a", "ok")]
    rows = read_csv(out / "results.csv")
    assert [r["Source"] for r in rows] == ["a"] and rows[0]["nb_inference"] == "1"
    assert (out / "predictions" / "a.txt").read_text().strip()
