"""The network process's model repository: models found in its own folder, Part II built and cached per split.

Why model ids and never paths: a client names a model by id only; ids are the names of the folders found
when the repository was scanned (`DIR/<id>/model.onnx` [+ `DIR/<id>/model.json`], or `DIR/<id>.onnx`; the id
and family come from common/core/models.py `resolve`, as in every command), so a client string is
only ever a dictionary key and can never reach the file system. Part II is built with the split engine
the first time a (model, split rank) is asked for, warmed up once, and kept in an LRU cache bounded by count
(`cache_size`) and by estimated memory (`cache_mb`; `Part2.nbytes`: 3 x Part II's ONNX bytes, what an
onnxruntime session holds with its weights, + 4 x the largest frame's raw bytes for activations + 4 MiB;
measured on NanoDet: 41-50 MB for ranks 20-60 where this gives 45-60). After a build, the build's own
scratch memory (graph copies, the reference run) and the evicted sessions' are trimmed from the allocator's
heaps, which the process otherwise keeps (common/core/allocator.py).

Each Part II carries its `SplitBounds` (server/limits.py): open dimensions of the tensors it takes are
bounded by their shapes in one run of the whole model at its input size (done once per model and tensor),
or by model.json's "max_crossing_elements" / "open_dim_slack".
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.server.errors import exhausted, invalid, not_found
from splitinfer.server.limits import is_open, reference_shapes, split_bounds
from splitinfer.common.core.allocator import release_free_memory

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class ModelEntry:
    model_id: str
    path: Path
    family: object
    sha256: str
    graph: object = None  # SplitGraph, built on first use
    settings: dict = field(default_factory=dict)  # model.json
    references: dict = field(default_factory=dict)  # tensor name -> reference shape (server/limits.py)

    @property
    def open_dim_slack(self) -> int:
        return int(self.settings.get("open_dim_slack") or (1 if self.family.input_size else 2))

    @property
    def max_crossing_elements(self) -> int | None:
        value = self.settings.get("max_crossing_elements")
        return int(value) if value else None

    @property
    def input_hw(self):
        if self.family.input_size:
            return tuple(self.family.input_size)
        shape = (self.settings.get("input") or {}).get("shape") if isinstance(self.settings.get("input"), dict) else None
        if isinstance(shape, list) and len(shape) >= 2 and all(isinstance(d, int) and d > 0 for d in shape[-2:]):
            return tuple(shape[-2:])
        return None


@dataclass
class Part2:
    """A ready Part II: the plan, its session (None when Part II has no node) and what frames must carry."""

    model_id: str
    family: object
    plan: object
    session: object
    provider: str
    expected: dict  # name -> TensorInfo (crossing tensors, then Part I's final outputs)
    sha256: str
    bounds: object = None  # SplitBounds: what a frame of this split may announce
    nbytes: int = 0  # estimated memory held (cache accounting)

    @property
    def key(self) -> tuple[str, int]:
        return (self.model_id, self.plan.rank)


class ModelRepository:
    def __init__(self, root, device: str = "auto", threads: int | None = None, require_gpu: bool = False,
                 cache_size: int = 16, cache_mb: float = 512.0):
        self.root = Path(root)
        self.device, self.threads, self.require_gpu = device, threads, require_gpu
        self.cache_size = max(1, int(cache_size))
        self.cache_bytes = max(1, int(cache_mb * (1 << 20)))
        if not self.root.is_dir():
            raise UserError(f"model repository not found (not a folder): {self.root}")
        self.models: dict[str, ModelEntry] = {}
        self.skipped: list[str] = []  # model files without a family: named in the log, not served
        for onnx_path in _model_files(self.root):
            self._add(onnx_path)
        if not self.models:
            raise UserError(f"{self.root}: no models (expected <id>/model.onnx with a family in model.json or in its "
                            f"ONNX metadata splitinfer.family, or <id>.onnx with that metadata)"
                            + (f"; without a family: {', '.join(self.skipped)}" if self.skipped else ""))
        self._lock = threading.Lock()
        self._building: dict[tuple, threading.Lock] = {}
        self._cache: OrderedDict[tuple, Part2] = OrderedDict()

    def _add(self, onnx_path: Path) -> None:
        """One model through the one resolver of every command (common/core/models.py `resolve`)."""
        from splitinfer.common import families
        from splitinfer.common.core.models import resolve
        from splitinfer.common.split.graph import file_sha256

        model = resolve(onnx_path)
        if not model.family_name:
            self.skipped.append(str(onnx_path))
            return
        if not ID_PATTERN.match(model.model_id):
            raise UserError(f"{onnx_path}: model id {model.model_id!r} is not valid (letters, digits, '.', '_', '-')")
        if model.model_id in self.models:
            raise UserError(f"{onnx_path}: model id {model.model_id!r} also names {self.models[model.model_id].path}")
        _check_settings(onnx_path.with_name("model.json"), model.info)
        family = families.family_for_model(onnx_path, model.family_name, model.info)  # set up by its model.json
        self.models[model.model_id] = ModelEntry(model.model_id, onnx_path, family, file_sha256(onnx_path),
                                                 settings=model.info)

    # -- lookup --------------------------------------------------------------------------------------

    def ids(self) -> list[str]:
        return list(self.models)

    def get(self, model_id: str) -> ModelEntry:
        entry = self.models.get(model_id)
        if entry is None:
            shown = model_id if len(model_id) <= 80 else model_id[:80] + "..."
            raise not_found(f"no model {shown!r} in the server's repository (models: {', '.join(self.models)})")
        return entry

    def graph(self, model_id: str):
        """The split engine's analysis of a model (built once)."""
        from splitinfer.common.split.graph import SplitGraph
        from splitinfer.common.core.onnx_io import load_model

        entry = self.get(model_id)
        with self._lock:
            lock = self._building.setdefault(("graph", model_id), threading.Lock())
        with lock:
            if entry.graph is None:
                entry.graph = SplitGraph(load_model(entry.path), source_sha256=entry.sha256)
        return entry.graph

    def check_gpu(self) -> list[str]:
        """With `require_gpu`: prove CUDA really runs each model (UserError otherwise). Returns providers."""
        from splitinfer.common.core.runtime import make_session

        return [make_session(e.path, device=self.device, threads=self.threads, require_gpu=self.require_gpu).provider
                for e in self.models.values()]

    # -- Part II -------------------------------------------------------------------------------------

    def resolve_rank(self, model_id: str, rank: int | None = None, name: str | None = None,
                     flag: str = "before") -> int:
        g = self.graph(model_id)
        try:
            return g.rank_of(rank if name is None else name, flag)
        except UserError as exc:
            raise invalid(f"model {model_id!r}: {exc}") from None

    def part2(self, model_id: str, rank: int | None = None, name: str | None = None, flag: str = "before") -> Part2:
        """Part II for a split given by rank or node name (+ flag), from the cache or built now."""
        r = self.resolve_rank(model_id, rank, name, flag)
        key = (model_id, r)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            lock = self._building.setdefault(key, threading.Lock())
        with lock:  # one build per key; other keys build in parallel
            with self._lock:
                hit = self._cache.get(key)
            built = hit is None
            if built:
                hit = self._build(model_id, r)
            with self._lock:
                self._cache[key] = hit
                self._cache.move_to_end(key)
                evicted = self._evict()
                self._building.pop(key, None)
        if built:
            del evicted  # the sessions evicted go now, then the build's and their memory leaves the process
            release_free_memory()
        return hit

    def _evict(self) -> list:
        """Drop least recently used Part IIs past the count or memory budget (the newest always stays)."""
        evicted = []
        while len(self._cache) > 1 and (len(self._cache) > self.cache_size or self.cached_bytes() > self.cache_bytes):
            evicted.append(self._cache.popitem(last=False)[1])
        return evicted

    def cached_bytes(self) -> int:
        return sum(p.nbytes for p in self._cache.values())

    def cached(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._cache)

    def _build(self, model_id: str, r: int) -> Part2:
        from splitinfer.common.core.runtime import make_session

        entry, g = self.get(model_id), self.graph(model_id)
        try:
            plan = g.plan(rank=r)
            _, part2 = g.extract(plan)
        except UserError as exc:
            raise invalid(f"model {model_id!r}, split {r}: {exc}") from None
        except MemoryError:
            raise exhausted(f"model {model_id!r}, split {r}: not enough memory to build Part II") from None
        expected = {t.name: t for t in plan.crossing}
        for name in plan.part1_final_outputs:
            if name not in expected:
                expected[name] = g.tensor_info(name)
        bounds = split_bounds(f"split {r} of {model_id!r}", expected, self.references(model_id, expected),
                              entry.open_dim_slack, entry.max_crossing_elements)
        session, provider = None, "none"
        if not plan.part2_identity:
            session = make_session(part2, device=self.device, threads=self.threads, require_gpu=self.require_gpu)
            provider = session.provider
            self._warm_up(session, plan, expected, entry.references)
        nbytes = 3 * part2.ByteSize() + 4 * bounds.raw_bytes + (4 << 20)
        return Part2(model_id, entry.family, plan, session, provider, expected, entry.sha256, bounds, nbytes)

    def references(self, model_id: str, expected: dict) -> dict:
        """Reference shapes of the open tensors among `expected` (one whole-model run for those not known yet)."""
        entry = self.get(model_id)
        todo = [n for n, info in expected.items() if is_open(info) and n not in entry.references]
        if todo:
            found = reference_shapes(self.graph(model_id).model, todo, entry.input_hw)
            entry.references.update({n: found.get(n) for n in todo})
        return {n: entry.references.get(n) for n in expected}

    @staticmethod
    def _warm_up(session, plan, expected, references) -> None:
        """One run on zeros, so the first real frame does not pay onnxruntime's lazy initialisation."""
        feeds = {}
        for name in plan.part2_inputs:
            info = expected.get(name)
            shape = info.shape if info is not None and not is_open(info) else references.get(name)
            if info is None or info.dtype is None or shape is None:
                return
            feeds[name] = np.zeros(shape, dtype=np.dtype(info.dtype))
        try:
            session.run(feeds)
        except Exception:  # a warm-up is an optimisation, never a reason to refuse
            pass


PART_FILE = re.compile(r"_part_i+_", re.IGNORECASE)  # split_onnx.py's / our part files are not models


def _model_files(root: Path) -> list[Path]:
    """Model files of a repository: `<id>/model.onnx` folders, and `.onnx` files directly in it (not parts)."""
    found = []
    for sub in sorted(root.iterdir()):
        if sub.is_dir() and (sub / "model.onnx").is_file():
            found.append(sub / "model.onnx")
        elif sub.is_file() and sub.suffix.lower() == ".onnx" and not PART_FILE.search(sub.stem):
            found.append(sub)
    return found


def _check_settings(json_path, info: dict) -> None:
    """model.json's bounds, when given, are positive integers."""
    for key in ("max_crossing_elements", "open_dim_slack"):
        value = info.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserError(f"{json_path}: {key!r} must be a positive integer, got {value!r}")
