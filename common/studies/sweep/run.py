"""`run_sweep`: the sweep as a dozen named steps, each its own function.

Defined terms: the *setup* is everything read from the config before any work (model, family, graph,
ranks and their plans, codecs, frames, ground truth); the *cache* is the folders and row key of
`cache.py`; *todo* are the (rank, codec) rows not found finished in the cache; a *task* is one
(frame batch, rank, codec) (see `tasks.py`).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from splitinfer.common.core.errors import UserError
from splitinfer.common.studies.sweep.cache import (activation_path, atomic_write, codec_fingerprint,
                                                   compute_activations, load_activations, load_row, row_key_hash,
                                                   row_path)
from splitinfer.common.studies.sweep.config import FORMAT, SweepConfig, SweepResult
from splitinfer.common.studies.sweep.data import data_items, fingerprint
from splitinfer.common.studies.sweep.evaluate import anchor_metrics, evaluate_rows
from splitinfer.common.studies.sweep.model_source import resolve_model_or_raw
from splitinfer.common.studies.sweep.runners import make_runner
from splitinfer.common.studies.sweep.splits import codec_list, resolve_splits


@dataclass
class Setup:
    """What the config resolves to before any work is done."""

    model_path: Path
    family: object
    model: object  # onnx.ModelProto
    graph: object  # SplitGraph
    model_sha: str
    ranks: list[int]
    plans: dict
    codecs: list
    items: list
    data_fp: str
    gt: object | None


@dataclass
class Cache:
    """The sweep's cache folders and the key every row file must carry."""

    root: Path
    act_dir: Path
    rows_dir: Path
    parts_dir: Path
    row_key: dict
    codec_sources: dict  # codec spec -> `codec_fingerprint`

    def key_for(self, rank: int, spec: str) -> dict:
        return {**self.row_key, "rank": rank, "codec": spec, "codec_source": self.codec_sources[spec]}


def run_sweep(cfg: SweepConfig, progress: bool = True, on_row=None) -> SweepResult:
    """Run (or resume) a sweep and evaluate every row. `on_row(rank, codec)` is called after each
    newly computed row is stored (an exception raised there stops the sweep like Ctrl-C does).

    The local pool starts its workers with 'spawn', so a script calling this needs the usual
    `if __name__ == "__main__":` guard.
    """
    clock = {"start": time.perf_counter()}
    setup = resolve_setup(cfg)
    cache = open_cache(cfg, setup)
    stored = load_finished_rows(cfg, setup, cache)
    todo = [(r, c) for r in setup.ranks for c in setup.codecs if (r, c.spec) not in stored]
    act_stats = compute_activations(setup.model, setup.graph, setup.family, setup.items,
                                    activation_names(setup, todo), cache.act_dir, progress=progress)
    anchor_preds = anchor_predictions(cfg, setup, cache)
    write_part2_models(setup, cache, todo)
    tasks = make_tasks(cfg, setup, cache, todo)
    collector = RowCollector(cache, stored, n_batches=len(batches_of(cfg, setup)),
                             n_rows=len(setup.ranks) * len(setup.codecs), on_row=on_row, n_cached=len(stored))
    runner_name, clock["tasks"] = run_tasks(cfg, cache, tasks, collector, progress)
    rows, anchor, clock["evaluate"] = evaluate(cfg, setup, stored, collector.computed, anchor_preds, progress)
    return build_result(cfg, setup, cache, rows, anchor, act_stats, tasks, collector, runner_name, clock)


def resolve_setup(cfg: SweepConfig) -> Setup:
    """Check the config and read model, family, splits, codecs, frames and ground truth."""
    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.split.graph import SplitGraph, file_sha256

    model_path, family = resolve_model_or_raw(str(cfg.model), cfg.family)
    if cfg.batch_size < 1:
        raise UserError(f"batch size must be at least 1 (got {cfg.batch_size})")
    if cfg.workers is not None and cfg.workers < 0:
        raise UserError(f"workers must be 0 (in this process) or more (got {cfg.workers})")
    codecs = codec_list(cfg.codecs)
    gt = None
    if cfg.gt:
        from splitinfer.common.eval.evaluation import load_ground_truth

        gt = load_ground_truth(cfg.gt)
    items = data_items(cfg.data, cfg.max_images, cfg.start)
    model_sha = file_sha256(model_path)
    model = load_model(model_path)
    graph = SplitGraph(model, source_sha256=model_sha)
    ranks = resolve_splits(graph, cfg.splits)
    return Setup(model_path=model_path, family=family, model=model, graph=graph, model_sha=model_sha, ranks=ranks,
                 plans={r: graph.plan(rank=r) for r in ranks}, codecs=codecs, items=items,
                 data_fp=fingerprint(items), gt=gt)


def open_cache(cfg: SweepConfig, setup: Setup) -> Cache:
    """The cache folders (created) and the row key: model sha, data fingerprint, family, score threshold."""
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("sweep_out")
    root = Path(cfg.cache_dir) if cfg.cache_dir else out_dir / "cache"
    key_hash = row_key_hash(setup.model_sha, setup.data_fp, setup.family.name, cfg.score_threshold)
    cache = Cache(root=root, act_dir=root / "activations" / setup.model_sha[:16], rows_dir=root / "rows" / key_hash,
                  parts_dir=root / "parts" / setup.model_sha[:16],
                  row_key={"format": FORMAT, "model_sha256": setup.model_sha, "data": setup.data_fp,
                           "family": setup.family.name, "score_threshold": float(cfg.score_threshold)},
                  codec_sources={c.spec: codec_fingerprint(c) for c in setup.codecs})
    for d in (cache.act_dir, cache.rows_dir, cache.parts_dir):
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create cache folder {d}: {exc}") from None
    return cache


def load_finished_rows(cfg: SweepConfig, setup: Setup, cache: Cache) -> dict:
    """{(rank, codec spec): row document} for rows stored complete for exactly these frames."""
    if not cfg.resume:
        return {}
    names = {it[0] for it in setup.items}
    stored = {}
    for r in setup.ranks:
        for c in setup.codecs:
            d = load_row(row_path(cache.rows_dir, r, c.spec), cache.key_for(r, c.spec))
            if d is not None and set(d["images"]) == names:
                stored[(r, c.spec)] = d
    return stored


def activation_names(setup: Setup, todo) -> list[str]:
    """Tensors to expose: what Part I sends at the ranks still to do, plus the model outputs (the anchor)."""
    ranks = {r for r, _ in todo}
    sent = [t for r in setup.ranks if r in ranks for t in setup.plans[r].part1_outputs]
    return list(dict.fromkeys(sent + setup.graph.output_names))


def anchor_predictions(cfg: SweepConfig, setup: Setup, cache: Cache) -> dict:
    """The whole model's detections per frame, from the cached model outputs."""
    preds = {}
    for name, sha, _, _ in setup.items:
        arrays, meta = load_activations(activation_path(cache.act_dir, name), sha, setup.graph.output_names)
        preds[name] = setup.family.postprocess(arrays, meta, cfg.score_threshold)
    return preds


def write_part2_models(setup: Setup, cache: Cache, todo) -> None:
    """Part II of every rank still to do, written once per model and rank."""
    from splitinfer.common.core.onnx_io import save_model

    for r in {r for r, _ in todo}:
        path = part2_path(cache, r)
        if not path.is_file():
            _, part2 = setup.graph.extract(setup.plans[r])
            atomic_write(path, lambda tmp: save_model(part2, tmp))


def part2_path(cache: Cache, rank: int) -> Path:
    return cache.parts_dir / f"part2_r{rank:05d}.onnx"


def batches_of(cfg: SweepConfig, setup: Setup) -> list[list]:
    return [setup.items[i:i + cfg.batch_size] for i in range(0, len(setup.items), cfg.batch_size)]


def worker_count(cfg: SweepConfig) -> int:
    return (os.cpu_count() or 1) if cfg.workers is None else cfg.workers


def make_tasks(cfg: SweepConfig, setup: Setup, cache: Cache, todo) -> list[dict]:
    """One JSON-able task per (frame batch, rank, codec) still to do; a sequential codec's row is ONE task
    holding every frame in order (one encoder/decoder pair codes them as a stream), queued first since it
    is the longest."""
    in_process = worker_count(cfg) == 0 and not cfg.ray_address  # then Part II may use every core
    tasks = []
    for r, c in sorted(todo, key=lambda rc: not rc[1].sequential):
        manifest = setup.plans[r].to_manifest()
        batches = [setup.items] if c.sequential else batches_of(cfg, setup)
        for b, batch in enumerate(batches):
            tasks.append({"row": [r, c.spec], "rank": r, "codec": c.spec, "batch": b, "batches": len(batches),
                          "family": setup.family.name, "model_path": str(setup.model_path),
                          "images": [[n, s] for n, s, _, _ in batch], "plan": manifest,
                          "act_dir": str(cache.act_dir), "part2_path": str(part2_path(cache, r)),
                          "part2_key": f"{setup.model_sha[:16]}:{r}", "score_threshold": float(cfg.score_threshold),
                          "threads": 0 if in_process else 1})
    return tasks


@dataclass
class RowCollector:
    """Gathers task results into rows; a row complete in all its batches is stored at once (atomically),
    so an interrupted sweep keeps it."""

    cache: Cache
    stored: dict
    n_batches: int
    n_rows: int
    on_row: object = None
    n_cached: int = 0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    computed: list = field(default_factory=list)
    partial: dict = field(default_factory=dict)
    bar: object = None
    n_tasks: int = 0
    total_tasks: int = 0

    def __call__(self, res: dict) -> None:
        key = (res["row"][0], res["row"][1])
        slot = self.partial.setdefault(key, {"batches": set(), "images": {}})
        slot["batches"].add(res["batch"])
        slot["images"].update(res["images"])
        self.n_tasks += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"task {self.n_tasks}/{self.total_tasks}", refresh=False)
        if len(slot["batches"]) == res.get("batches", self.n_batches):  # a sequential row: 1
            self.store(key, self.partial.pop(key)["images"])

    def store(self, key: tuple, images: dict) -> None:
        r, spec = key
        doc = {"key": self.cache.key_for(r, spec), "computed_by": self.run_id,
               "computed_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "images": images}
        atomic_write(row_path(self.cache.rows_dir, r, spec), lambda tmp: Path(tmp).write_text(json.dumps(doc)))
        self.stored[key] = doc
        self.computed.append(key)
        if self.bar is not None:
            self.bar.update(1)
            if not self.bar.disable:  # the row as it finishes, above the bar
                self.bar.write(row_line(r, spec, images), file=sys.stderr)
        if self.on_row is not None:
            self.on_row(r, spec)


def run_tasks(cfg: SweepConfig, cache: Cache, tasks: list[dict], collector: RowCollector,
              progress: bool) -> tuple[str, float]:
    """Run every task on the chosen runner; (runner name, seconds). A failure or Ctrl-C stops the
    runner at once; rows stored so far stay."""
    t0 = time.perf_counter()
    if not tasks:
        return "(all rows cached)", 0.0
    if progress:
        from splitinfer.common.core.progress import bar

        # one step per row, with its ETA; quiet off a terminal (core/progress.py)
        collector.bar = bar(total=collector.n_rows - collector.n_cached, desc="sweep", unit="row", dynamic_ncols=True)
    collector.total_tasks = len(tasks)
    runner = make_runner(cfg.ray_address, cfg.workers, worker_count(cfg), len(tasks), cache.act_dir,
                         cache.root / "tmp" / collector.run_id)
    ok = False
    try:
        runner.run(tasks, collector)
        ok = True
    finally:
        runner.close(abort=not ok)
        if collector.bar is not None:
            collector.bar.close()
    return runner.name, time.perf_counter() - t0


def row_line(rank: int, spec: str, images: dict) -> str:
    """A finished row in one line (before mAP, which needs every row): bytes, ratio, codec times."""
    recs = list(images.values())
    n = max(len(recs), 1)
    raw, enc = (sum(x.get(k, 0) for x in recs) for k in ("raw", "enc"))
    ratio = f"{raw / enc:7.2f}x" if enc else "      -"
    return (f"  row split {rank:>4} {spec:<18} {enc / n / 1e3:9.1f} kB/frame  ratio {ratio}  "
            f"encode {1e3 * sum(x.get('encode_s', 0) for x in recs) / n:7.2f} ms  "
            f"decode {1e3 * sum(x.get('decode_s', 0) for x in recs) / n:7.2f} ms  ({len(recs)} frames)")


def evaluate(cfg: SweepConfig, setup: Setup, stored: dict, computed: list, anchor_preds: dict,
             progress: bool) -> tuple[list, dict, float]:
    """(rows, anchor metrics, seconds): mAP of every row and of the whole model."""
    t0 = time.perf_counter()
    rows = evaluate_rows(setup.ranks, setup.codecs, setup.graph, setup.plans, stored, set(computed), anchor_preds,
                         setup.gt, cfg.anchor_threshold, progress, detections=setup.family.detects)
    anchor = anchor_metrics(anchor_preds, setup.gt, cfg.anchor_threshold)
    return rows, anchor, time.perf_counter() - t0


def split_info(setup: Setup, r: int) -> dict:
    g = setup.graph
    return {"rank": r, "node": g.node_names[r] if r < g.num_nodes else "(end)",
            "op_type": g.nodes[r].op_type if r < g.num_nodes else "end",
            "branches": len(setup.plans[r].crossing), "tensors": setup.plans[r].part1_outputs}


def build_result(cfg, setup: Setup, cache: Cache, rows, anchor, act_stats, tasks, collector, runner_name,
                 clock) -> SweepResult:
    total = len(setup.ranks) * len(setup.codecs)
    stats = {"rows_total": total, "rows_cached": collector.n_cached,
             "rows_computed": len(collector.computed), "tasks": len(tasks),
             "activations_computed": act_stats["computed"], "activations_cached": act_stats["cached"],
             "activations_s": round(act_stats["seconds"], 3), "tasks_s": round(clock["tasks"], 3),
             "evaluate_s": round(clock["evaluate"], 3), "total_s": round(time.perf_counter() - clock["start"], 3),
             "run_id": collector.run_id, "cache": str(cache.root), "cpus": os.cpu_count()}
    return SweepResult(model=str(cfg.model), model_path=str(setup.model_path), model_sha256=setup.model_sha,
                       family=setup.family.name, num_nodes=setup.graph.num_nodes, data=str(cfg.data),
                       data_fingerprint=setup.data_fp, images=[it[0] for it in setup.items],
                       gt=str(cfg.gt) if cfg.gt else None, score_threshold=float(cfg.score_threshold),
                       anchor_threshold=float(cfg.anchor_threshold),
                       splits=[split_info(setup, r) for r in setup.ranks], codecs=[c.spec for c in setup.codecs],
                       rows=rows, anchor=anchor, stats=stats, runner=runner_name)
