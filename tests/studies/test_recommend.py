"""Split recommendation: real onnxruntime profiles of NanoDet and a real (small) sweep."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil

import pytest

from splitinfer.common.assets import IMAGES_DIR, default_model_path
from splitinfer.common.cli import main
from splitinfer.common.core.errors import UserError
from splitinfer.common.studies.recommend import (build_candidates, choose, dominates, load_profile, pareto_front,
                                         profile_model)
from splitinfer.common.studies.sweep import SweepConfig, load_results, run_sweep, write_outputs

N_NODES = 136


@pytest.fixture(scope="module")
def feeds():
    from splitinfer.common.families import get_family
    from splitinfer.common.core.images import read_image

    return get_family("nanodet").preprocess(read_image(IMAGES_DIR / "dog.jpg"))[0]


@pytest.fixture(scope="module")
def profiles(feeds):
    dev = profile_model(default_model_path(), feeds, side="device", runs=3, threads=1)
    srv = profile_model(default_model_path(), feeds, side="server", runs=3, threads=0)
    return dev, srv


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    for n in ("terrain2.png", "dog.jpg"):
        shutil.copy(IMAGES_DIR / n, data / n)
    out = tmp_path_factory.mktemp("sweep")
    res = run_sweep(SweepConfig(model="nanodet", data=str(data), splits=[27, 95], workers=0, out_dir=str(out),
                                codecs=["none", "float16", "nnc:-4", "nnc:0"]), progress=False)
    write_outputs(res, out, plots=False)
    return out


def test_profile_maps_every_node(profiles):
    from splitinfer.common.split.graph import SplitGraph
    from splitinfer.common.core.onnx_io import load_model

    dev, _ = profiles
    graph = SplitGraph(load_model(default_model_path()))
    assert dev.nodes == graph.node_names and dev.ops == [n.op_type for n in graph.nodes]
    assert len(dev.node_ms) == N_NODES and all(t >= 0 for t in dev.node_ms)
    # a CNN spends most kernel time in convolutions; the slowest node is one
    conv = sum(t for t, op in zip(dev.node_ms, dev.ops) if op == "Conv")
    assert conv > 0.4 * dev.kernel_ms
    assert dev.ops[max(range(N_NODES), key=dev.node_ms.__getitem__)] == "Conv"
    # kernels fit inside a run; scaled parts add up to one whole run at every cut
    assert 0 < dev.kernel_ms <= dev.run_ms * 1.05
    for r in (0, 27, 95, N_NODES):
        assert dev.span_ms(0, r) + dev.span_ms(r, N_NODES) == pytest.approx(dev.run_ms)
    assert dev.span_ms(0, 27) < dev.span_ms(0, 95)


def test_profile_save_load_and_checks(profiles, tmp_path):
    dev, _ = profiles
    path = dev.save(tmp_path / "p.json")
    back = load_profile(path, dev.model_sha256, N_NODES)
    assert back.node_ms == dev.node_ms and back.span_ms(10, 50) == pytest.approx(dev.span_ms(10, 50))
    with pytest.raises(UserError, match="different model"):
        load_profile(path, "0" * 64, N_NODES)
    with pytest.raises(UserError, match="has 136 nodes but the model has 7"):
        load_profile(path, None, 7)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(path.read_text()), "node_ms": [-1.0] * N_NODES}))
    with pytest.raises(UserError, match="not a node-time profile"):
        load_profile(bad)
    bad.write_text("{")
    with pytest.raises(UserError, match="bad.json: not a node-time profile"):
        load_profile(bad)


def test_latency_model_choice_privacy_and_front(profiles, sweep_dir):
    dev, srv = profiles
    results = load_results(sweep_dir)
    bw = 1e9
    cands = build_candidates(results, dev, srv, bw, input_bytes=3 * 416 * 416 * 4)
    assert {c.kind for c in cands} == {"sweep", "device only", "server only"} and len(cands) == 8 + 2
    for c in cands:
        assert c.total_ms == pytest.approx(c.device_ms + c.encode_ms + c.transfer_ms + c.decode_ms + c.server_ms)
        assert c.transfer_ms == pytest.approx(c.sent_bytes * 8 / bw * 1e3)
        assert c.device_ms == pytest.approx(dev.span_ms(0, c.rank))
        assert c.server_ms == pytest.approx(srv.span_ms(c.rank, N_NODES))
    by = {(c.rank, c.codec): c for c in cands if c.kind == "sweep"}
    row = next(r for r in results["rows"] if (r.rank, r.codec) == (95, "nnc:-4"))
    assert by[(95, "nnc:-4")].encode_ms == row.encode_ms and by[(95, "nnc:-4")].sent_bytes == row.encoded_bytes

    # no constraint: the least total latency wins
    ch = choose(cands)
    assert ch.best is min(cands, key=lambda c: c.total_ms)
    # accuracy floor: exactly the rows under it drop out (nnc:0 is far from the anchor)
    floor = 0.99
    low = [c for c in cands if c.accuracy < floor]
    assert any(c.codec == "nnc:0" for c in low)
    ch = choose(cands, min_accuracy=floor)
    assert ch.excluded_accuracy == len(low) and all(c.accuracy >= floor for c in ch.feasible)
    # privacy: the first 60 nodes stay on the device
    ch = choose(cands, keep_first=60)
    assert ch.excluded_privacy == 5 and all(c.rank >= 60 for c in ch.feasible)  # rank 27 x 4 + server only
    assert ch.best.rank >= 60
    # the Pareto front: no member dominated; every other networked candidate dominated by a member
    ch = choose(cands)
    net = [c for c in ch.feasible if c.kind != "device only"]
    assert ch.pareto == pareto_front(net) and ch.pareto
    for c in net:
        beaten = [o for o in net if dominates(o, c)]
        assert (c in ch.pareto) == (not beaten)
        if c not in ch.pareto:
            assert any(dominates(p, c) for p in ch.pareto)

    fast = build_candidates(results, dev, srv, bw, server_speedup=4.0)
    for a, b in zip(cands, fast):
        assert b.server_ms == pytest.approx(a.server_ms / 4) and b.device_ms == a.device_ms
    slow_link = build_candidates(results, dev, srv, 1e7)
    assert all(s.transfer_ms == pytest.approx(100 * c.transfer_ms) for s, c in zip(slow_link, cands))
    # at 10 Mbit/s, the best split sends fewer bytes than at 1 Gbit/s or stays on the device
    assert choose(slow_link).best.sent_bytes <= choose(cands).best.sent_bytes


def test_cli_prints_front_and_recommendation(profiles, sweep_dir, tmp_path):
    dev, srv = profiles
    dp, sp = dev.save(tmp_path / "d.json"), srv.save(tmp_path / "s.json")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["recommend", "nanodet", "--results", str(sweep_dir), "--device-profile", str(dp),
                   "--server-profile", str(sp), "--bandwidth", "10M", "1G", "--min-map", "99",
                   "--keep-first", "20", "--server-speedup", "8", "--json", str(tmp_path / "rec.json")])
    out = buf.getvalue()
    assert rc == 0, out
    assert out.count("Pareto front") == 2 and out.count("recommended:") == 2
    rec = json.loads((tmp_path / "rec.json").read_text())
    for label in ("10M", "1G"):
        best = rec["bandwidths"][label]["best"]
        feasible = rec["bandwidths"][label]["feasible"]
        assert best["total_ms"] == min(c["total_ms"] for c in feasible)
        assert all(c["rank"] >= 20 and c["accuracy"] >= 0.99 for c in feasible)


def test_cli_errors(sweep_dir, tmp_path, capsys):
    bad = tmp_path / "results.json"
    data = json.loads((sweep_dir / "results.json").read_text())
    bad.write_text(json.dumps({**data, "model_sha256": "f" * 64}))
    assert main(["recommend", "nanodet", "--results", str(bad)]) == 2
    assert "different model" in capsys.readouterr().err
    assert main(["recommend", "nanodet", "--results", str(tmp_path / "none.json")]) == 2
    assert "sweep results not found" in capsys.readouterr().err
    assert main(["recommend", "nanodet", "--results", str(sweep_dir), "--min-map", "120"]) == 2
    assert main(["recommend", "nanodet", "--results", str(sweep_dir), "--bandwidth", "fast"]) == 2
    assert "bad rate 'fast'" in capsys.readouterr().err


def test_no_feasible_candidate_exits_1(profiles, sweep_dir, tmp_path, capsys):
    """Absolute mAP without ground truth in the sweep: nothing has a measured accuracy."""
    dev, srv = profiles
    rc = main(["recommend", "nanodet", "--results", str(sweep_dir), "--metric", "map", "--min-map", "10",
               "--device-profile", str(dev.save(tmp_path / "d.json")),
               "--server-profile", str(srv.save(tmp_path / "s.json"))])
    assert rc == 1 and "no candidate meets the constraints" in capsys.readouterr().out
    assert math.isnan(load_results(sweep_dir)["rows"][0].map)
