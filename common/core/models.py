"""One resolver for model specs: what file a user means by `nanodet`, `models/ssd/` or `ssd.onnx`, its id
and its family.

Why: five commands each turned a model spec into a path their own way (bundled ids in some, folders in
others), and `device -anchor` and `serve` wanted a model.json where the others read the ONNX metadata, so a
model exported by `models export` worked in one command and was refused by the next, and `device -anchor
./models/x.onnx` asked the server for model id `models`. `resolve` is the one rule for all of them (file,
id, family, model.json); `find_model` its first step; `splitinfer.common.families.resolve_model` adds the
Family object; commands with extra names (survey models of `analyze`) try those first, then call this.
Defined terms: *model spec* (an .onnx path, a model folder holding `model.onnx`, or the id of a bundled
model, `common/assets/models/<id>/model.onnx`), *model.json* (the settings file beside the ONNX file:
`family`, optional `id`, `weights`, server limits), *recorded family* (the `splitinfer.family` metadata
entry our exporters write, else `family` in model.json), *model id* (what a UE names the model by and the
server's repository key: model.json's `id`, else the metadata's `splitinfer.id`, else the folder name of a
`<id>/model.onnx`, else the file stem), *random weights* (an export without trained weights, recorded as
`splitinfer.weights` / model.json `weights` starting with "random").
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

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


def model_json(path) -> dict:
    """The parsed model.json beside the ONNX file at `path` ({} when there is none); UserError naming the
    file when it is not a JSON object."""
    info_path = Path(path).with_name("model.json")
    if not info_path.is_file():
        return {}
    try:
        info = json.loads(info_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{info_path}: not valid JSON ({exc})") from None
    if not isinstance(info, dict):
        raise UserError(f"{info_path}: expected a JSON object (e.g. {{\"family\": \"nanodet\"}})")
    return info


def model_metadata(path) -> dict[str, str]:
    """The ONNX metadata entries (`metadata_props`) of the file at `path`, read once per file version."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise UserError(f"model not found: {p}") from None
    return dict(_metadata(str(p.resolve()), st.st_mtime_ns, st.st_size))


@lru_cache(maxsize=32)
def _metadata(path: str, mtime_ns: int, size: int) -> tuple:
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise UserError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    return tuple((q.key, q.value) for q in model.metadata_props)


def _family_of(info: dict, info_path) -> str | None:
    fam = info.get("family")
    if fam is None:
        return None
    if isinstance(fam, dict):  # a family declared in model.json names itself
        fam = fam.get("name")
    if not isinstance(fam, str) or not fam:
        raise UserError(f"{info_path}: \"family\" must name a family, got {info.get('family')!r}")
    return fam


def model_id_of(path, info: dict | None = None, metadata: dict | None = None) -> tuple[str, str]:
    """(model id, where it came from) for the ONNX file at `path` (see the module docstring)."""
    p = Path(path)
    info = model_json(p) if info is None else info
    if isinstance(info.get("id"), str) and info["id"]:
        return info["id"], f"\"id\" in {p.with_name('model.json')}"
    metadata = model_metadata(p) if metadata is None else metadata
    if metadata.get("splitinfer.id"):
        return metadata["splitinfer.id"], f"metadata splitinfer.id of {p.name}"
    if p.name == "model.onnx" and p.parent.name:
        return p.parent.name, f"folder of {p.parent.name}/model.onnx"
    return p.stem, f"file name {p.name}"


class ResolvedModel(NamedTuple):
    """What a model spec means: the ONNX file, the model id, the family name (None: unknown), model.json."""

    model_path: Path
    model_id: str
    family_name: str | None
    info: dict


def resolve(spec, family: str | None = None, what: str = "") -> ResolvedModel:
    """The one model resolver of every command (detect, sweep, analyze, study, device, serve): the file of
    `spec` (`find_model`), its model id, its family (`family` if given, else the recorded one) and model.json."""
    p = find_model(spec, what)
    info = model_json(p)
    metadata = model_metadata(p)
    model_id, _ = model_id_of(p, info, metadata)
    name = family or metadata.get("splitinfer.family") or _family_of(info, p.with_name("model.json"))
    return ResolvedModel(p, model_id, name, info)


def random_weights(path, info: dict | None = None) -> str | None:
    """The weights note of an export with random weights (metadata `splitinfer.weights`, else model.json
    `weights`), e.g. "random (seed 0, ...)"; None for trained or unknown weights."""
    info = model_json(path) if info is None else info
    note = model_metadata(path).get("splitinfer.weights") or info.get("weights") or ""
    return note if isinstance(note, str) and note.lower().startswith("random") else None


RANDOM_WEIGHTS_WARNING = ("WARNING: {model} has random weights ({note}): its detections are not results "
                          "(structure, bytes and timings are; accuracy is not). Export trained weights with "
                          "`splitinfer models export NAME --weights/--checkpoint`.")


def random_weights_warning(path, info: dict | None = None) -> str | None:
    """One line saying a model has random weights, or None (see `random_weights`)."""
    note = random_weights(path, info)
    return RANDOM_WEIGHTS_WARNING.format(model=Path(path).name if Path(path).name != "model.onnx"
                                         else f"{Path(path).parent.name}/model.onnx", note=note) if note else None


def recorded_family(path=None, model=None) -> str | None:
    """The family name a model records (metadata of `model`, else of the file at `path`; then a
    `model.json` beside `path`), or None."""
    if model is not None:
        props = {q.key: q.value for q in model.metadata_props}
    else:
        props = model_metadata(path) if path is not None else {}
    if props.get("splitinfer.family"):
        return props["splitinfer.family"]
    if path is None:
        return None
    return _family_of(model_json(path), Path(path).with_name("model.json"))


def spec_random_weights_warning(spec) -> str | None:
    """`random_weights_warning` of a model spec, None where the spec names no model file (zoo:, survey names)."""
    try:
        return random_weights_warning(find_model(spec))
    except UserError:
        return None
