"""`splitinfer export triton`: every config.pbtxt parses with Triton's own ModelConfig protobuf
(tritonclient.grpc.model_config_pb2, in .venv-oip), names and dims agree with the ONNX files, and the
ensemble, run step by step as its config wires it (onnxruntime), gives the whole model's outputs."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import onnx
import pytest

from oip_helpers import ROOT, require_oip_venv

PARSE = r"""
import json, sys, pathlib
from google.protobuf import text_format, json_format
from tritonclient.grpc import model_config_pb2
out = {}
for cfg in sorted(pathlib.Path(sys.argv[1]).glob("*/config.pbtxt")):
    msg = text_format.Parse(cfg.read_text(), model_config_pb2.ModelConfig())
    out[cfg.parent.name] = json_format.MessageToDict(msg, preserving_proto_field_name=True)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    from splitinfer.common.cli import main

    out = tmp_path_factory.mktemp("triton")
    assert main(["export", "triton", "-a", "nanodet", "-r", "9", "60", "114", "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def configs(repo):
    python = require_oip_venv()
    proc = subprocess.run([str(python), "-c", PARSE, str(repo)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_layout_and_configs_parse_with_tritons_protobuf(repo, configs):
    assert set(configs) == {f"nanodet_r{r}{s}" for r in (9, 60, 114) for s in ("", "_part1", "_part2")}
    for name, cfg in configs.items():
        assert cfg["name"] == name == (repo / name).name
        if name.endswith(("_part1", "_part2")):
            assert cfg["platform"] == "onnxruntime_onnx" and cfg["backend"] == "onnxruntime"
            assert cfg["instance_group"][0]["kind"] == "KIND_CPU"
            graph = onnx.load(str(repo / name / "1" / "model.onnx"), load_external_data=False).graph
            for key, values in (("input", graph.input), ("output", graph.output)):
                assert [t["name"] for t in cfg[key]] == [v.name for v in values]
                assert [[int(d) for d in t["dims"]] for t in cfg[key]] == [
                    [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
                    for v in values]  # -1 where the part leaves a dimension open
                assert all(t["data_type"] == "TYPE_FP32" for t in cfg[key])
        else:
            assert cfg["platform"] == "ensemble"
            assert (repo / name / "1").is_dir()  # Triton wants the version folder, even empty


def test_ensemble_wiring_gives_the_whole_models_outputs(repo, configs):
    from splitinfer.common.assets import default_model_path
    from splitinfer.common.core.runtime import make_session

    whole = make_session(default_model_path(), device="cpu", threads=1)
    x = np.random.default_rng(0).standard_normal((1, 3, 416, 416)).astype(np.float32)
    reference = dict(zip(whole.output_names, whole.run({whole.input_names[0]: x})))
    for r in (9, 60, 114):  # 114: Part I already makes one model output (Identity_2:0), taken from Part I
        ens = configs[f"nanodet_r{r}"]
        tensors = {ens["input"][0]["name"]: x}
        for step in ens["ensemble_scheduling"]["step"]:
            sess = make_session(str(repo / step["model_name"] / "1" / "model.onnx"), device="cpu", threads=1)
            feeds = {k: tensors[v] for k, v in step["input_map"].items()}  # produced earlier or an input
            for k, v in zip(sess.output_names, sess.run(feeds)):
                if k in step["output_map"]:
                    tensors[step["output_map"][k]] = v
        for out in ens["output"]:
            assert np.allclose(tensors[out["name"]], reference[out["name"]], rtol=1e-4, atol=1e-5), (r, out["name"])


def test_refuses_a_split_without_part2(tmp_path, capsys):
    from splitinfer.common.cli import main
    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.assets import default_model_path

    n = len(load_model(default_model_path()).graph.node)
    assert main(["export", "triton", "-r", str(n), "-o", str(tmp_path / "x")]) == 2
    assert "nothing to serve" in capsys.readouterr().err
