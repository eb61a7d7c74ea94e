"""Fidelity of Part II's outputs on a model without a family: a small real classifier (onnxruntime,
real codecs), every number recomputed independently from Part I -> codec -> Part II run by hand."""

from __future__ import annotations

import math
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from splitinfer.common.assets import IMAGES_DIR
from splitinfer.common.studies.sweep import SweepConfig, run_sweep

CODECS = ["none", "float16", "nnc:-8"]


def _classifier(path) -> None:
    """Conv-ReLU-Conv(stride 2)-ReLU-GlobalAveragePool-Flatten-Gemm: [1,3,32,32] image -> [1,10] logits."""
    rng = np.random.default_rng(0)

    def init(name, shape, scale):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [h.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
             h.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             h.make_node("GlobalAveragePool", ["r2"], ["g"], name="pool"),
             h.make_node("Flatten", ["g"], ["f"], name="flatten"),
             h.make_node("Gemm", ["f", "w3", "b3"], ["logits"], name="fc", transB=1)]
    inits = [init("w1", (8, 3, 3, 3), 0.4), init("b1", (8,), 0.1), init("w2", (16, 8, 3, 3), 0.3),
             init("b2", (16,), 0.1), init("w3", (10, 16), 1.0), init("b3", (10,), 0.1)]
    graph = h.make_graph(nodes, "tiny_classifier", [h.make_tensor_value_info("image", T.FLOAT, [1, 3, 32, 32])],
                         [h.make_tensor_value_info("logits", T.FLOAT, [1, 10])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    d = tmp_path_factory.mktemp("fid")
    _classifier(d / "tiny.onnx")
    data = d / "data"
    data.mkdir()
    for n in ("dog.jpg", "kite.jpg", "terrain2.png"):
        shutil.copy(IMAGES_DIR / n, data / n)
    res = run_sweep(SweepConfig(model=str(d / "tiny.onnx"), data=str(data), splits=["relu1", "pool"], codecs=CODECS,
                                out_dir=str(d / "out"), workers=0), progress=False)
    return d, data, res


def test_a_model_without_family_runs_as_raw(swept):
    _, _, res = swept
    assert res.family == "raw" and [s["rank"] for s in res.splits] == [1, 4]
    assert len(res.rows) == 6 and all(math.isnan(r.rel_map) for r in res.rows)
    for r in (r for r in res.rows if r.codec == "none"):
        # lossless on the wire; Part II alone may round differently from the whole graph (kernel choice)
        assert r.nmse < 1e-10 and r.psnr_db > 100 and r.cosine == pytest.approx(1.0, abs=1e-9)
        assert r.top1 == 1.0 and r.top5 == 1.0


def test_raw_sweep_report_plots_fidelity(swept, tmp_path):
    from splitinfer.common.studies.sweep import summary_lines, write_outputs

    _, _, res = swept
    paths = write_outputs(res, tmp_path)
    for name in ("map_by_split.png", "map_vs_size.png", "map_vs_ratio.png"):
        assert paths[name].read_bytes()[:4] == b"\x89PNG"
    assert any("fidelity of the model outputs" in line for line in summary_lines(res))
    assert not any("relative mAP" in line for line in summary_lines(res))
    head = next(line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| rank"))
    assert "| NMSE |" in head and "| PSNR dB |" in head


def test_fidelity_equals_a_hand_run_of_the_split(swept):
    """Part I, encode/decode and Part II run by hand on the same frames give the same NMSE, PSNR, cosine
    and top-k agreement as the sweep's rows."""
    from splitinfer.common.codecs import get_codec
    from splitinfer.common.core.images import iter_frames
    from splitinfer.common.core.runtime import make_session
    from splitinfer.common.split.graph import SplitGraph
    from splitinfer.common.families.raw import for_model

    d, data, res = swept
    model = onnx.load(str(d / "tiny.onnx"))
    fam = for_model(model)
    assert fam.input_names == ("image",) and fam.hw == (32, 32)
    whole = make_session(model, device="cpu")
    graph = SplitGraph(model)
    for row in res.rows:
        plan = graph.plan(rank=row.rank)
        p1, p2 = (make_session(m, device="cpu") for m in graph.extract(plan))
        codec = get_codec(row.codec)
        sse = ref = count = 0.0
        peak, cos, top1, top5 = 0.0, [], 0, 0
        for _, img in iter_frames(data):
            feeds, _ = fam.preprocess(img)
            a = whole.run(feeds)[0].astype(np.float64)
            sent = dict(zip(plan.part1_outputs, p1.run(feeds, plan.part1_outputs)))
            dec = {n: codec.decode(codec.encode(v), v.dtype, v.shape) for n, v in sent.items()}
            b = p2.run({n: dec[n] for n in plan.part2_inputs}, ["logits"])[0].astype(np.float64)
            sse += float(np.sum((a - b) ** 2))
            ref += float(np.sum(a * a))
            count += a.size
            peak = max(peak, float(np.abs(a).max()))
            cos.append(float(np.dot(a.ravel(), b.ravel()) / np.linalg.norm(a) / np.linalg.norm(b)))
            top1 += int(np.argmax(a) == np.argmax(b))
            top5 += int(np.argmax(a) in np.argsort(-b.ravel())[:5])
        assert row.nmse == pytest.approx(sse / ref, rel=1e-9, abs=1e-300)
        if sse:
            assert row.psnr_db == pytest.approx(10 * math.log10(peak ** 2 / (sse / count)), rel=1e-9)
        assert row.cosine == pytest.approx(np.mean(cos), rel=1e-9)
        assert row.top1 == top1 / 3 and row.top5 == top5 / 3
    by = {(r.rank, r.codec): r for r in res.rows}
    for rank in (1, 4):
        assert 0 < by[(rank, "float16")].nmse < by[(rank, "nnc:-8")].nmse


def test_a_model_without_image_input_is_one_clear_error(tmp_path):
    from splitinfer.common.core.errors import UserError

    graph = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "vec", [h.make_tensor_value_info("x", T.FLOAT, [1, 4])],
                         [h.make_tensor_value_info("y", T.FLOAT, [1, 4])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "vec.onnx"))
    with pytest.raises(UserError, match=r"vec.onnx: no image input .*inputs: \['x'\]"):
        run_sweep(SweepConfig(model=str(tmp_path / "vec.onnx"), data=str(IMAGES_DIR), codecs=["none"],
                              out_dir=str(tmp_path / "out"), workers=0), progress=False)


def test_study_cli_on_a_raw_classifier(swept, tmp_path, capsys):
    """`splitinfer study --family raw` with NNC and fq ladders: top-1 as quality, PSNR BD-rates from the
    real curves (finite where the PSNR ranges overlap, else the reason), no mAP columns."""
    import csv

    from splitinfer.common.cli import main

    d, data, _ = swept
    out = tmp_path / "study"
    assert main(["study", str(d / "tiny.onnx"), "--family", "raw", "--data", str(data), "--splits", "relu1",
                 "--codecs", "nnc:-38..-8/10", "fq:2..8", "--quality", "top1", "-o", str(out), "--workers", "0",
                 "-q"]) == 0
    stdout = capsys.readouterr().out
    assert "family raw" in stdout and "rel mAP" not in stdout and "top-1 %" in stdout
    with open(out / "study.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["codec"] for r in rows] == ["nnc:-38", "nnc:-28", "nnc:-18", "nnc:-8"] + [f"fq:{b}" for b in range(2, 9)]
    assert all(r["rel_map"] == "" and r["top1"] != "" for r in rows)
    fq = [float(r["psnr_db"]) for r in rows if r["family"] == "fq"]
    assert fq == sorted(fq) and fq[-1] - fq[0] > 20  # each extra bit buys PSNR
    with open(out / "bd_rate.csv") as f:
        bd = {b["quality"]: b for b in csv.DictReader(f)}
    assert set(bd) == {"top1", "psnr_db"}
    psnr = bd["psnr_db"]
    assert (psnr["bd_rate_percent"] != "") == (psnr["note"] == "")
    if psnr["note"] == "":
        assert float(psnr["overlap"]) > 0 and -100 < float(psnr["bd_rate_percent"])


@pytest.mark.slow
def test_study_on_a_zoo_classifier(tmp_path, monkeypatch, capsys):
    """`zoo:resnet18` (torchvision, exported into the zoo cache on first use) is studied as a raw model:
    fidelity and top-1 agreement per codec, no mAP."""
    import csv

    from splitinfer.common.cli import main

    monkeypatch.setenv("SPLITINFER_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert main(["study", "zoo:resnet18", "--data", str(IMAGES_DIR / "dog.jpg"), "--splits", "20",
                 "--codecs", "float16", "fq:4", "-o", str(out), "--workers", "0", "-q"]) == 0
    assert (tmp_path / "cache" / "zoo" / "resnet18.onnx").is_file()
    assert "family raw" in capsys.readouterr().out
    with open(out / "study.csv") as f:
        rows = {r["codec"]: r for r in csv.DictReader(f)}
    assert float(rows["float16"]["psnr_db"]) > float(rows["fq:4"]["psnr_db"]) > 20
    assert rows["float16"]["top1"] == "1" and rows["fq:4"]["top1"] in ("0", "1")


def test_rows_of_an_edited_codec_are_recomputed(swept):
    """A stored row whose codec source fingerprint differs (the codec was edited since) is recomputed;
    the others come from the cache."""
    import json

    from splitinfer.common.codecs import get_codec
    from splitinfer.common.studies.sweep.cache import codec_fingerprint

    d, data, res = swept
    fp = {s: codec_fingerprint(get_codec(s)) for s in ("fq:3", "fq:4", "nnc:-8", "zstd:3", "float16+zstd:3")}
    assert fp["fq:3"] == fp["fq:4"] != fp["nnc:-8"] and fp["float16+zstd:3"] != fp["zstd:3"]
    row = next((d / "out" / "cache" / "rows").rglob("*float16.json"))
    doc = json.loads(row.read_text())
    assert doc["key"]["codec_source"] == codec_fingerprint(get_codec("float16"))
    doc["key"]["codec_source"] = "0" * 16  # as written by an older float16 codec
    row.write_text(json.dumps(doc))
    again = run_sweep(SweepConfig(model=str(d / "tiny.onnx"), data=str(data), splits=["relu1", "pool"],
                                  codecs=CODECS, out_dir=str(d / "out"), workers=0), progress=False)
    assert again.stats["rows_computed"] == 1 and again.stats["rows_cached"] == 5
    assert [r.nmse for r in again.rows] == [r.nmse for r in res.rows]
