"""The network process's model repository: models found in its own folder, Part II built and cached per split.

Why model ids and never paths: a client names a model by id only; ids are the names of the folders found
when the repository was scanned (`DIR/<id>/model.onnx` + `DIR/<id>/model.json`), so a client string is
only ever a dictionary key and can never reach the file system. Part II is built with the split engine
the first time a (model, split rank) is asked for, warmed up once, and kept in a bounded LRU cache.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.server.errors import exhausted, invalid, not_found

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class ModelEntry:
    model_id: str
    path: Path
    family: object
    sha256: str
    graph: object = None  # SplitGraph, built on first use


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

    @property
    def key(self) -> tuple[str, int]:
        return (self.model_id, self.plan.rank)


class ModelRepository:
    def __init__(self, root, device: str = "auto", threads: int | None = None, require_gpu: bool = False,
                 cache_size: int = 16):
        from splitinfer.common.families import get_family
        from splitinfer.common.split.graph import file_sha256

        self.root = Path(root)
        self.device, self.threads, self.require_gpu = device, threads, require_gpu
        self.cache_size = max(1, int(cache_size))
        if not self.root.is_dir():
            raise UserError(f"model repository not found (not a folder): {self.root}")
        self.models: dict[str, ModelEntry] = {}
        for sub in sorted(self.root.iterdir()):
            onnx_path, json_path = sub / "model.onnx", sub / "model.json"
            if not (sub.is_dir() and onnx_path.is_file() and json_path.is_file()):
                continue
            if not ID_PATTERN.match(sub.name):
                raise UserError(f"{sub}: folder name is not a valid model id (letters, digits, '.', '_', '-')")
            try:
                info = json.loads(json_path.read_text())
                family_name = info["family"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise UserError(f"{json_path}: expected JSON with a \"family\" entry ({type(exc).__name__}: {exc})") from None
            self.models[sub.name] = ModelEntry(sub.name, onnx_path, get_family(str(family_name)), file_sha256(onnx_path))
        if not self.models:
            raise UserError(f"{self.root}: no models (expected <id>/model.onnx and <id>/model.json)")
        self._lock = threading.Lock()
        self._building: dict[tuple, threading.Lock] = {}
        self._cache: OrderedDict[tuple, Part2] = OrderedDict()

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
            if hit is None:
                hit = self._build(model_id, r)
            with self._lock:
                self._cache[key] = hit
                self._cache.move_to_end(key)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
                self._building.pop(key, None)
        return hit

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
        session, provider = None, "none"
        if not plan.part2_identity:
            session = make_session(part2, device=self.device, threads=self.threads, require_gpu=self.require_gpu)
            provider = session.provider
            self._warm_up(session, plan, expected)
        return Part2(model_id, entry.family, plan, session, provider, expected, entry.sha256)

    @staticmethod
    def _warm_up(session, plan, expected) -> None:
        """One run on zeros, so the first real frame does not pay onnxruntime's lazy initialisation."""
        feeds = {}
        for name in plan.part2_inputs:
            info = expected.get(name)
            if info is None or info.dtype is None or info.shape is None or not all(isinstance(d, int) for d in info.shape):
                return
            feeds[name] = np.zeros(info.shape, dtype=np.dtype(info.dtype))
        try:
            session.run(feeds)
        except Exception:  # a warm-up is an optimisation, never a reason to refuse
            pass
