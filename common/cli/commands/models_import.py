"""`splitinfer models import darknet CFG WEIGHTS [--names FILE] -o DIR`: a darknet YOLO as a model folder.

Why its own module: `models` (models.py) exports with torch; importing needs only onnx, and each way in
stays one small file. The folder holds `model.onnx` (opset 13, IR 7, batch norm folded) and `model.json`
(family `yolo`, layout `darknet`, anchors per head, letterbox, labels), which every command takes
(`detect`, `serve`, `device`, `analyze`, `sweep`, `study`, `export triton`). Converter:
`common/models/darknet.py`. Not a command by itself (no `run`): `models` adds it as `models import`.
"""

from __future__ import annotations

FORMATS = ("darknet",)


def add_parser(sub) -> None:
    imp = sub.add_parser("import", help="convert a detector from another framework into a model folder")
    imp.add_argument("format", choices=FORMATS, help="source format: darknet (.cfg + .weights, YOLOv2-v4)")
    imp.add_argument("cfg", metavar="CFG", help="darknet .cfg file")
    imp.add_argument("weights", metavar="WEIGHTS", help="darknet .weights file")
    imp.add_argument("--names", metavar="FILE", help="class names, one a line (darknet's coco.names = COCO-80)")
    imp.add_argument("-o", "--output", metavar="DIR", required=True, help="model folder to write")


def run_import(args) -> int:
    import time

    from splitinfer.common.models.darknet import import_darknet

    t0 = time.perf_counter()
    out = import_darknet(args.cfg, args.weights, args.output, args.names)
    size = (out / "model.onnx").stat().st_size / 1e6
    print(f"wrote {out}/model.onnx ({size:.1f} MB) and model.json (family yolo, darknet layout) "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0
