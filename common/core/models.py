"""One resolver for model specs: what file a user means by `nanodet`, `models/ssd/` or `ssd.onnx`.

Why: five commands each turned a model spec into a path their own way (bundled ids in some, folders in
others). `find_model` is that one rule; `splitinfer.common.families.resolve_model` adds the family,
and commands with extra names (survey models of `analyze`) try those first, then call this.
Defined terms: *model spec* (an .onnx path, a model folder holding `model.onnx`, or the id of a bundled
model, `common/assets/models/<id>/model.onnx`), *recorded family* (the `splitinfer.family` metadata
entry our exporters write, else `family` in a `model.json` beside the file).
"""

from __future__ import annotations

import json
from pathlib import Path

from splitinfer.common.assets import MODELS_DIR
from splitinfer.common.core.errors import UserError


def bundled_model_ids() -> list[str]:
    return sorted(d.name for d in MODELS_DIR.iterdir() if (d / "model.onnx").is_file()) if MODELS_DIR.is_dir() else []


def find_model(spec, what: str = "") -> Path:
    """The .onnx file of a model spec; UserError naming the spec when there is none."""
    p = Path(spec)
    text = str(spec)
    if p.is_dir() and (p / "model.onnx").is_file():
        return p / "model.onnx"
    if p.is_file():
        return p
    if not p.exists() and "/" not in text and (MODELS_DIR / text / "model.onnx").is_file():
        return MODELS_DIR / text / "model.onnx"
    extra = f", or {what}" if what else ""
    raise UserError(f"model not found: {spec} (not a file, a folder with model.onnx, or a bundled model id"
                    f"{extra}; bundled: {', '.join(bundled_model_ids()) or 'none'})")


def recorded_family(path=None, model=None) -> str | None:
    """The family name a model records (metadata of `model`, else of the file at `path`; then a
    `model.json` beside `path`), or None."""
    if model is None and path is not None:
        try:
            import onnx

            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise UserError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    props = {q.key: q.value for q in model.metadata_props} if model is not None else {}
    if props.get("splitinfer.family"):
        return props["splitinfer.family"]
    info_path = Path(path).with_name("model.json") if path is not None else None
    if info_path is not None and info_path.is_file():
        try:
            return str(json.loads(info_path.read_text())["family"])
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{info_path}: expected JSON with a \"family\" entry") from None
    return None
