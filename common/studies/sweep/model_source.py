"""Which model a sweep or study runs: a bundled model id, a model folder, an .onnx file or `zoo:NAME`, with the
`raw` family (families/raw.py) where the user asks for it or the model's family is unknown.

Why here: the fallback to `raw` is the sweep's choice (a sweep of any image model reports the fidelity of its
outputs); the other commands refuse a model whose family is unknown.
"""

from __future__ import annotations

from pathlib import Path

from splitinfer.common.core.errors import UserError
from splitinfer.common.families.raw import NAME, for_model

ZOO_PREFIX = "zoo:"


def resolve_model_or_raw(spec: str, family: str | None):
    """(ONNX path, family) like `resolve_model`, with `family='raw'` or a model whose family is unknown
    falling back to the raw pseudo-family. `zoo:NAME` is a model of the splitability zoo (`zoo.py`:
    torchvision classifiers and detectors), exported into its cache on first use."""
    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.families import resolve_model

    if spec.startswith(ZOO_PREFIX):
        from splitinfer.common.models import zoo

        spec = str(zoo.model_path(spec[len(ZOO_PREFIX):]))

    if family == NAME:
        path = _model_file(spec)
        return path, for_model(load_model(path), path)
    try:
        return resolve_model(spec, family)
    except UserError as exc:
        if family is None and "family unknown" in str(exc):
            path = _model_file(spec)
            return path, for_model(load_model(path), path)
        raise


def _model_file(spec: str) -> Path:
    """An .onnx file, a model folder (model.onnx inside) or a bundled model id."""
    from splitinfer.common.assets import MODELS_DIR

    p = Path(spec)
    if p.is_dir():
        p = p / "model.onnx"
    elif not p.exists() and "/" not in spec:
        p = MODELS_DIR / spec / "model.onnx"
    if not p.is_file():
        raise UserError(f"model not found: {spec} (not an .onnx file, a model folder or a bundled model id)")
    return p
