"""`splitinfer device --protocol oip` (device/oip_client.run_oip_device) against the network
process's OIP endpoint and against a KServe ModelServer: the same results CSV as over our own protocol
(detections, agreement with the anchor, bytes, tensors; times measured and filled in)."""

from __future__ import annotations

import csv
import shutil

import pytest

from oip_helpers import ROOT, KServeProcess
from splitinfer.experiments.server_process import ServerProcess

SAME = ("Source", "Nodes", "Inference_loop", "nb_inference", "intermediate_data_size",
        "encoded_intermediate_data_size", "predictions_size", "predictions", "Model", "Split_rank",
        "Crossing_tensors", "Equal_to_anchor", "Anchor_agreement", "Frames_failed", "UE_provider")
MEASURED = ("UE_inference_time_CPU", "Server_inference_time_CPU", "Transfer_time", "End_to_end_latency",
            "Serialization_time")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    for name in ("dog.jpg", "kite.jpg"):
        shutil.copy(ROOT / "common" / "assets" / "images" / name, d / name)
    return d


def _device(server: str, images, out, codec: str = "none", oip: bool = True) -> list[dict]:
    """`splitinfer device ... --protocol oip|grpc` (the CLI, in this process); the results CSV's rows."""
    from splitinfer.common.cli import main

    code = main(["device", "--server", server, "--protocol", "oip" if oip else "grpc", "--split", "60",
                 "-s", str(images), "-results_dir", str(out), "-no_GPU_anchor", "--threads", "1", "--no-overlay",
                 "-encode_algo", codec])
    assert code == 0
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def test_same_results_csv_over_oip_as_over_our_protocol(images, tmp_path):
    with ServerProcess(threads=1) as srv:
        own = _device(srv.address, images, tmp_path / "own", oip=False)
        via_endpoint = _device(srv.address, images, tmp_path / "oip")
        half = _device(srv.address, images, tmp_path / "half", codec="float16")
    with KServeProcess(["nanodet.r60"]) as ks:
        via_kserve = _device(ks.address, images, tmp_path / "kserve")
    assert [r["Equal_to_anchor"] for r in own] == ["rounding", "rounding"]
    for rows in (via_endpoint, via_kserve):
        assert [{k: r[k] for k in SAME} for r in rows] == [{k: r[k] for k in SAME} for r in own]
        assert all(r[k] for r in rows for k in MEASURED)
    assert [r["Server_provider"] for r in via_endpoint] == ["cpu", "cpu"]
    # FP16 raw contents: half the bytes on the wire, the same objects found
    assert [r["encoded_intermediate_data_size"] for r in half] == ["1052160,1052160,1052160"] * 2
    assert all(r["Anchor_agreement"] == own[i]["Anchor_agreement"] for i, r in enumerate(half))


def test_codecs_an_oip_server_cannot_read_are_refused(images, tmp_path, capsys):
    from splitinfer.common.cli import main

    assert main(["device", "--protocol", "oip", "--server", "127.0.0.1:1", "--split", "60", "-s", str(images),
                 "-results_dir", str(tmp_path / "x"), "-encode_algo", "zstd:3"]) == 2
    assert "raw contents only" in capsys.readouterr().err


def test_part2_provider_asked_for_is_checked(images, tmp_path, capsys):
    from splitinfer.common.cli import main

    with ServerProcess(threads=1) as srv:  # Part II on the CPU here; -PU_partII GPU must be refused
        code = main(["device", "--protocol", "oip", "--server", srv.address, "--split", "60", "-s", str(images),
                     "-results_dir", str(tmp_path / "x"), "-no_GPU_anchor", "-no_CPU_anchor", "-PU_partII", "GPU"])
    assert code == 2 and "-PU_partII" in capsys.readouterr().err
