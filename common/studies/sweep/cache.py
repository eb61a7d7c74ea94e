"""The sweep's on-disk cache: activations (.npz, never pickled) and finished rows (JSON), written atomically.

Why: activations are the hand-off to worker processes (a page-cache read costs far less than a model
run) and let a resumed sweep skip the model entirely; a row file lets an interrupted sweep resume.
Defined terms: an *activation file* holds, for one frame, every tensor some requested split sends
plus the model outputs (the anchor), tagged with the frame's content sha; a *row file* holds one
(split, codec)'s per-image bytes, times and detections under a *row key* (model sha, data
fingerprint, family, score threshold).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.common.studies.sweep.config import FORMAT
from splitinfer.common.studies.sweep.data import read_frames
from splitinfer.common.studies.sweep.splits import slug

_NAMES_KEY = "__names__"
_META_KEY = "__meta__"
_FP_KEY = "__fingerprint__"


def atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _exposed_model(model, graph, names):
    """A copy of the model whose graph outputs also include `names` (crossing tensors), typed where known."""
    from onnx import helper

    from splitinfer.common.core.onnx_io import with_outputs

    exposed = [n for n in names if n not in graph.input_names]
    types = {}
    for n in exposed:
        try:
            types[n] = helper.np_dtype_to_tensor_dtype(np.dtype(graph.tensor_info(n).dtype))
        except TypeError:
            pass
    return with_outputs(model, exposed, elem_types=types)


def _savez(path, arrays: dict) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append '.npz' to a plain name
        np.savez(f, **arrays)


def activation_path(act_dir: Path, name: str) -> Path:
    """One file per frame; the hash keeps names that differ only in odd characters apart."""
    return act_dir / f"{slug(name)}-{hashlib.sha1(name.encode()).hexdigest()[:8]}.npz"


def load_activations(path: Path, sha: str, names=None):
    """(arrays, meta) from an activation file, or None when absent, stale or lacking a tensor."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z[_FP_KEY]) != sha:
                return None
            stored = [str(s) for s in z[_NAMES_KEY]]
            index = {n: i for i, n in enumerate(stored)}
            want = stored if names is None else list(names)
            if any(n not in index for n in want):
                return None
            arrays = {n: z[f"t{index[n]}"] for n in want}
            meta = json.loads(str(z[_META_KEY]))
        return arrays, meta
    except Exception:
        return None  # a torn or foreign file: recompute it


def compute_activations(model, graph, family, items, needed: list[str], act_dir: Path, progress=True) -> dict:
    """Make sure every frame has an .npz holding `needed` (crossing tensors + model outputs).

    Frames already cached (same content sha, all tensors present) are skipped. Returns
    {"computed": n, "cached": m, "seconds": s}.
    """
    from splitinfer.common.core.runtime import keep_feeds, make_session

    todo = [it for it in items if load_activations(activation_path(act_dir, it[0]), it[1], needed) is None]
    stats = {"computed": len(todo), "cached": len(items) - len(todo), "seconds": 0.0}
    if not todo:
        return stats
    t0 = time.perf_counter()
    session = make_session(_exposed_model(model, graph, needed), device="cpu")
    outputs = [n for n in needed if n not in graph.input_names]
    frames = read_frames(todo)
    if progress:
        from splitinfer.common.core.progress import bar

        frames = bar(frames, total=len(todo), desc="activations", unit="img", leave=False)
    for name, sha, image in frames:
        feeds, meta = family.preprocess(image)
        try:
            values = session.ort.run(outputs, keep_feeds(feeds, session.input_names))
        except Exception as exc:
            raise UserError(f"{name}: the whole model fails on this input ({exc})") from None
        arrays = {n: np.asarray(feeds[n]) for n in needed if n in graph.input_names}
        arrays.update(zip(outputs, values))
        payload = {f"t{i}": np.ascontiguousarray(arrays[n]) for i, n in enumerate(needed)}
        payload[_NAMES_KEY] = np.array(needed)
        payload[_META_KEY] = np.array(json.dumps(meta))
        payload[_FP_KEY] = np.array(sha)
        atomic_write(activation_path(act_dir, name), lambda tmp: _savez(tmp, payload))
    stats["seconds"] = time.perf_counter() - t0
    return stats


def row_key_hash(model_sha, data_fp, family, score_threshold) -> str:
    text = json.dumps([FORMAT, model_sha, data_fp, family, float(score_threshold)])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def row_path(rows_dir: Path, rank: int, codec_spec: str) -> Path:
    return rows_dir / f"r{rank:05d}__{slug(codec_spec)}.json"


def load_row(path: Path, key: dict):
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return d if d.get("key") == key else None


def codec_fingerprint(codec) -> str:
    """sha256 (16 hex digits) of the source files that make a codec's bytes: its module and its base
    classes' (a sequential codec's: sequence.py, which frames the stream), the codec modules it imports
    (video_pack for video, fq for fqi), the modules of its stages (chained specs) and the registry's shared
    helpers. A row stores it, so editing a codec recomputes its
    rows instead of mixing old and new bitstreams."""
    import inspect
    import sys

    files, todo = set(), [codec]
    while todo:
        c = todo.pop()
        mods = [k.__module__ for k in type(c).__mro__ if k.__module__.startswith("splitinfer.")]
        for mod in (*mods, *_codec_helpers(type(c).__module__), "splitinfer.common.codecs"):
            path = inspect.getsourcefile(sys.modules[mod]) if mod in sys.modules else None
            if path:
                files.add(path)
        todo.extend(getattr(c, "stages", None) or [])
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(Path(path).name.encode() + b"\0" + Path(path).read_bytes())
    return h.hexdigest()[:16]



def _codec_helpers(module: str) -> list[str]:
    """The other codec modules a codec's module uses (imported as modules, or names taken from them)."""
    import sys
    import types

    mod = sys.modules.get(module)
    out = []
    for value in vars(mod).values() if mod is not None else ():
        name = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
        if isinstance(name, str) and name.startswith("splitinfer.common.codecs.") and name != module:
            out.append(name)
    return sorted(set(out))
