"""Second half of scripts/convert_nanodet.sh, run with the project interpreter (no TensorFlow).

Checks the tf2onnx output really has the NanoDet interface (one NCHW 416x416 input; per stride 8/16/32 a
[1,N,80] score and a [1,N,44] box-distribution output), writes the committed model with an IR version
onnxruntime accepts, and records where every byte came from (PROVENANCE.json) and under which licences.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx

from splitinfer.common.core.onnx_io import save_model
from splitinfer.common.core.runtime import make_session

INPUT_NAME = "input_1:0"
INPUT_SHAPE = [1, 3, 416, 416]
STRIDES = (8, 16, 32)

APACHE_NOTE = """\
## NanoDet (the network and its COCO-trained weights) - Apache License 2.0

The TF.js graph was generated from NanoDet-m by RangiLyu (`"generatedBy": "https://github.com/RangiLyu/nanodet"`
in `nanodet.json`). NanoDet is Copyright 2020-2021 RangiLyu and is licensed under the Apache License,
Version 2.0 (https://www.apache.org/licenses/LICENSE-2.0). This ONNX file is a format conversion of that
work (TF.js graph -> ONNX with tf2onnx; no retraining, no graph edits beyond the ONNX IR version and the
concrete output shapes recorded in PROVENANCE.json).
"""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


def check_and_fix(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Verify the interface; give the outputs their real (static) shapes, measured with onnxruntime."""
    ins = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if [i.name for i in ins] != [INPUT_NAME] or dims(ins[0]) != INPUT_SHAPE:
        raise SystemExit(f"unexpected inputs: {[(i.name, dims(i)) for i in ins]}")
    sess = make_session(model, device="cpu")
    outs = sess.run({INPUT_NAME: np.zeros(INPUT_SHAPE, np.float32)})
    shapes = {name: list(a.shape) for name, a in zip(sess.output_names, outs)}
    want = sorted([[1, (416 // s) ** 2, 80] for s in STRIDES] + [[1, (416 // s) ** 2, 44] for s in STRIDES])
    if sorted(shapes.values()) != want:
        raise SystemExit(f"unexpected output shapes: {shapes}")
    for out in model.graph.output:
        shape = out.type.tensor_type.shape
        for d, v in zip(shape.dim, shapes[out.name]):
            d.Clear()
            d.dim_value = v
    onnx.checker.check_model(model)
    return shapes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raw", type=Path, required=True)
    ap.add_argument("--package-dir", type=Path, required=True)
    ap.add_argument("--tarball", type=Path, required=True)
    ap.add_argument("--package", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--opset", type=int, required=True)
    ap.add_argument("--tools", required=True, help="JSON of converter tool versions")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()

    pkg_json = json.loads((a.package_dir / "package.json").read_text())
    graph_json = a.package_dir / "models" / "nanodet.json"
    graph_bin = a.package_dir / "models" / "nanodet.bin"
    tfjs = json.loads(graph_json.read_text())

    model = onnx.load(str(a.raw))
    raw_ir = model.ir_version
    shapes = check_and_fix(model)
    a.out.mkdir(parents=True, exist_ok=True)
    onnx_path = save_model(model, a.out / "model.onnx")
    saved = onnx.load(str(onnx_path))

    model_json = {
        "family": "nanodet",
        "name": "NanoDet-m 416x416, COCO-80 (trained weights)",
        "input": {"name": INPUT_NAME, "shape": INPUT_SHAPE, "layout": "NCHW", "channels": "BGR",
                  "mean": [103.53, 116.28, 123.675], "std": [57.375, 57.12, 58.395]},
        "outputs": shapes,
        "labels": "coco80",
        "source": f"npm {a.package}@{a.version} models/nanodet.json + nanodet.bin",
    }
    (a.out / "model.json").write_text(json.dumps(model_json, indent=2) + "\n")

    provenance = {
        "package": a.package,
        "version": a.version,
        "package_license": pkg_json.get("license"),
        "tarball": {"file": a.tarball.name, "sha256": sha256(a.tarball)},
        "inputs": {
            "package/models/nanodet.json": sha256(graph_json),
            "package/models/nanodet.bin": sha256(graph_bin),
        },
        "tfjs_generated_by": tfjs.get("generatedBy"),
        "tfjs_converted_by": tfjs.get("convertedBy"),
        "converter": {"command": f"tf2onnx.convert --tfjs models/nanodet.json --opset {a.opset}",
                      "launcher": "scripts/nanodet_tf2onnx.py (np.product = np.prod for numpy 2)",
                      "versions": json.loads(a.tools)},
        "raw_onnx_sha256": sha256(a.raw),
        "edits": ([f"ir_version {raw_ir} -> {saved.ir_version} (onnxruntime reads <= 13)"]
                  if raw_ir != saved.ir_version else [])
                 + ["graph output shapes set to the static shapes measured with onnxruntime"],
        "reproducibility": "tf2onnx generates node names with counters, so a rebuild is not byte-identical; "
                           "the weights and the computation are",
        "output": {"model.onnx": sha256(onnx_path), "opset": a.opset, "ir_version": saved.ir_version,
                   "bytes": onnx_path.stat().st_size},
        "upstream_model": {"name": "NanoDet-m", "url": "https://github.com/RangiLyu/nanodet", "license": "Apache-2.0"},
        "converted_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rebuild": "bash scripts/convert_nanodet.sh",
    }
    (a.out / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n")

    mit = (a.package_dir / "LICENSE").read_text().strip()
    (a.out / "LICENSES.md").write_text(
        "# Licences of the bundled NanoDet model\n\n"
        f"## {a.package}@{a.version} (the TF.js conversion this file is built from) - "
        f"{pkg_json.get('license')}\n\n```\n{mit}\n```\n\n" + APACHE_NOTE
    )
    shutil.rmtree(a.out / "__pycache__", ignore_errors=True)
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size} bytes, sha256 {provenance['output']['model.onnx']})")
    print(f"outputs: {shapes}")


if __name__ == "__main__":
    main()
