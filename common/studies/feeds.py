"""Feeds for the size analysis: a real photo made into the model's inputs (the family's preprocessing, else a resize).

Defined terms: *generic feeds* (a plain resize of the photo to each image-like input, RGB, floats in [0, 1]
for float inputs), *family feeds* (the model family's own preprocessing, used when it yields the wanted size).
"""

from __future__ import annotations

import numpy as np
import onnx

from splitinfer.common.core.errors import UserError
from splitinfer.common.studies.inputs import (graph_inputs, input_dims, model_family, nominal_input_size,
                                              resolve_input_shapes, spatial_axes)
from splitinfer.common.studies.static_types import np_dtype


def load_image(image) -> tuple[np.ndarray, str]:
    """(BGR uint8 image, label) from a path, an array, or None (the first bundled photo)."""
    from splitinfer.common.core.images import read_image

    if isinstance(image, np.ndarray):
        from splitinfer.common.families import check_image

        return check_image(image), "array"
    if image is None:
        from splitinfer.common.assets import bundled_images

        found = bundled_images()
        if not found:
            raise UserError("no bundled image found; pass --image FILE")
        image = found[0]
    return read_image(image), str(image)


def generic_feeds(model: onnx.ModelProto, image_bgr: np.ndarray, input_shapes: dict) -> dict:
    """Feeds for image-like inputs from a photo resized to the input size (RGB; floats in [0, 1])."""
    import cv2

    feeds = {}
    for vi in graph_inputs(model):
        dims = list(input_shapes.get(vi.name, input_dims(vi)))
        if any(not isinstance(d, int) for d in dims):
            raise UserError(f"input {vi.name!r} has unresolved dimensions {dims}; give --input-size HxW")
        dtype = np_dtype(vi.type.tensor_type.elem_type)
        if dtype is None or dtype.kind in "OUS":
            raise UserError(f"input {vi.name!r}: unsupported element type for an image")
        axes = spatial_axes(dims)
        if axes is None:
            feeds[vi.name] = np.zeros(dims, dtype=dtype)
            continue
        h, w = dims[axes[0]], dims[axes[1]]
        chan_axis = next(a for a in range(len(dims)) if a not in axes and not (len(dims) == 4 and a == 0))
        c = dims[chan_axis]
        img = cv2.resize(image_bgr, (w, h), interpolation=cv2.INTER_LINEAR)
        img = img[:, :, ::-1]  # RGB, as torchvision models expect
        if c == 1:
            img = img.mean(axis=2, keepdims=True)
        elif c == 4:
            img = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, img.dtype)], axis=2)
        arr = img.astype(np.float32) / 255.0 if dtype.kind == "f" else img
        if chan_axis < axes[0]:
            arr = np.transpose(arr, (2, 0, 1))
        if len(dims) == 4:
            arr = arr[None]
        feeds[vi.name] = np.ascontiguousarray(arr.astype(dtype))
    return feeds


def image_feeds(model: onnx.ModelProto, image_bgr: np.ndarray, size: tuple[int, int] | None = None,
                model_path=None) -> tuple[dict, str]:
    """Feeds from a real photo: the model family's own preprocessing when it yields the wanted size,
    else a plain resize (`generic_feeds`). Returns (feeds, how) with how 'family:<name>' or 'resize'."""
    fam_name = model_family(model, model_path)
    if fam_name:
        try:
            from splitinfer.common.families import family_for_model, get_family

            fam = family_for_model(model_path, fam_name) if model_path else get_family(fam_name)
            fam_feeds, _ = fam.preprocess(image_bgr)
        except UserError:
            fam_feeds = None
        if fam_feeds is not None:
            wanted = resolve_input_shapes(model, size) if size is not None else None
            names = {vi.name for vi in graph_inputs(model)}
            if set(fam_feeds) == names and (wanted is None or all(
                    list(np.shape(fam_feeds[k])) == wanted[k] for k in names)):
                return fam_feeds, f"family:{fam_name}"
    if size is None:
        size = nominal_input_size(model) or image_bgr.shape[:2]
    return generic_feeds(model, image_bgr, resolve_input_shapes(model, size)), "resize"
