"""Model-family registry: how to feed a detector and how to read its outputs.

A family is what an ONNX file alone does not say: input size, colour order and normalisation, and how raw
outputs become `Detection`s in pixels of the original image. Each module in this package defines one
`FAMILY` object (subclass of `Family`); adding a family is adding one file, discovered like CLI commands.
Families from outside the package are plug-ins: entry points of the group `splitinfer.families` (a module
with `FAMILY`, or a `Family` object), found like the commands' group `splitinfer.commands`. A family set up
for one model (`family_for_model`: its model.json and graph, e.g. YOLO anchors and labels) is `configure`'s
copy; a model.json can also declare a detector with no Python at all (`declared.py`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from splitinfer.common.core.errors import UserError

ENTRY_POINT_GROUP = "splitinfer.families"


class Family:
    """Base of every family. Subclasses set the attributes and implement the two methods.

    `preprocess(image_bgr) -> (feeds, meta)`: feeds maps input names to arrays; meta holds plain
    Python values (ints, floats, lists) only, so it can travel with a frame between processes.
    `postprocess(outputs, meta, score_threshold=None) -> list[Detection]`: outputs maps output names to
    arrays; boxes come back in pixels of the original image, best score first.
    """

    name: str = ""
    labels: tuple[str, ...] = ()
    input_size: tuple[int, int] | None = None  # (width, height) the network sees; None = any size
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    score_threshold: float = 0.3  # default for displays/predictions; evaluation passes its own
    description: str = ""
    detects: bool = True  # False: no detections (the `raw` family; sweeps report fidelity metrics instead)

    def preprocess(self, image_bgr: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
        raise NotImplementedError

    def postprocess(self, outputs: dict[str, np.ndarray], meta: dict, score_threshold: float | None = None):
        raise NotImplementedError

    def configure(self, info: dict, model_path=None) -> "Family":
        """This family set up for one model (its parsed model.json, its ONNX file); most need nothing."""
        return self

    def __repr__(self) -> str:
        return f"<family {self.name}>"


def check_image(image_bgr) -> np.ndarray:
    """Return the image as HxWx3 uint8 BGR; gray or BGRA images are converted, anything else refused."""
    import cv2

    if not isinstance(image_bgr, np.ndarray):
        raise UserError(f"expected an image array, got {type(image_bgr).__name__}")
    img = image_bgr
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise UserError(f"expected an HxWx3 BGR image, got an array of shape {image_bgr.shape}")
    if img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating) and img.size and float(np.nanmax(img)) <= 1.0:
            img = img * 255.0
        img = np.clip(img, 0, 255).astype(np.uint8)
    return img


def require_outputs(family: str, outputs: dict, names) -> None:
    missing = [n for n in names if n not in outputs]
    if missing:
        raise UserError(f"{family} post-processing needs outputs {list(names)}, missing {missing} "
                        f"(got {sorted(outputs)})")


@lru_cache(maxsize=None)
def _registry() -> dict[str, Family]:
    from splitinfer.common.core.plugins import group_plugins, package_plugins

    found: dict[str, Family] = {m.FAMILY.name: m.FAMILY for m in package_plugins(__name__, "FAMILY")
                                if isinstance(m.FAMILY, Family)}
    for obj in group_plugins(ENTRY_POINT_GROUP):
        fam = obj if isinstance(obj, Family) else getattr(obj, "FAMILY", None)
        if not isinstance(fam, Family):
            raise UserError(f"family plug-in {obj!r} of {ENTRY_POINT_GROUP} is not a Family nor a module with FAMILY")
        found.setdefault(fam.name, fam)
    return found


def family_names() -> list[str]:
    return sorted(_registry())


def get_family(name: str) -> Family:
    try:
        return _registry()[name]
    except KeyError:
        raise UserError(f"unknown model family {name!r} (known: {', '.join(family_names())})") from None


def resolve_model(spec: str, family: str | None = None):
    """(ONNX path, Family) for a model spec (`splitinfer.common.core.models.resolve`).

    The family comes from `family` if given, else the one the model records (metadata
    `splitinfer.family`, written by our exporters, else a `model.json` beside the file).
    """
    from splitinfer.common.core.models import resolve

    model = resolve(spec, family)  # the one resolver of every command (file, id, family, model.json)
    return model.model_path, family_for_model(model.model_path, model.family_name, model.info)


def family_for_model(model_path, name: str | None = None, info: dict | None = None) -> Family:
    """The family of the model at `model_path` (`name`, else the one it records), set up by its model.json
    (`info` when the caller has parsed it already). A model.json whose `family` is an object
    (`{"name": ...}`) declares its detector: family `declared`."""
    from splitinfer.common.core.models import recorded_family
    from splitinfer.common.families._geometry import model_info

    info = model_info(model_path) if info is None else info
    name = name or recorded_family(model_path)
    spec = info.get("family")
    if isinstance(spec, dict) and name == spec.get("name") and name not in _registry():
        name = "declared"
    if not name:
        raise UserError(f"{model_path}: model family unknown; pass --family ({', '.join(family_names())})")
    fam = get_family(name)
    return fam if type(fam).configure is Family.configure else fam.configure(info, model_path)
