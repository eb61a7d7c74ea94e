"""Split-point x codec sweep: bytes, codec times and mAP for every (split, codec), fast and resumable.

Why it is fast: the naive way splits the model and runs Part I and Part II from the image for every
(split, codec). Here each image goes through the whole model ONCE, with every crossing tensor of every
requested split (and Part I's final outputs) exposed as extra graph outputs; those activations are
cached as .npz files (never pickled). Per (split, codec) only encode, decode and Part II remain, run
as independent tasks (one image batch, one split, one codec) on a local process pool or a Ray cluster.

Why activations are cached on disk rather than recomputed: they are the hand-off to the worker
processes (a file read from the page cache costs far less than a model run, and no pickled arrays
cross process boundaries), and a resumed sweep skips the model run entirely.

Resume: each finished (split, codec) row is written atomically as one JSON file under
`<cache>/rows/<key>/`, where the key hashes the model's sha256, the data fingerprint (sha256 of every
image file), the family and the post-processing score threshold. A row file holds per-image bytes,
times and detections, not mAP: mAP (absolute against `--gt`, relative against the whole-model anchor)
is recomputed from the stored detections at the end of every run, so changing the ground truth or the
anchor threshold never invalidates finished rows. Rows whose batches were only partly done when the
sweep stopped are recomputed.

Timings: encode/decode/Part II times are measured inside the workers, with one onnxruntime thread per
pool or Ray worker (per-core figures) and onnxruntime's default threads when tasks run in this process
(`workers=0`); on a shared machine they include contention.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from splitinfer.common.core.errors import UserError

FORMAT = 1
DEFAULT_CODECS = ("none", "float16", "nnc:-38", "nnc:-26", "nnc:-18", "nnc:-14", "nnc:-10", "nnc:-6", "nnc:-4",
                  "nnc:0")
DEFAULT_SCORE_THRESHOLD = 0.05  # COCO evaluation convention: keep low-score boxes for the PR curve
DEFAULT_ANCHOR_THRESHOLD = 0.5
DEFAULT_BATCH = 16
DEFAULT_NUM_SPLITS = 6
_NAMES_KEY = "__names__"
_META_KEY = "__meta__"
_FP_KEY = "__fingerprint__"


# ----------------------------------------------------------------------------------------------
# configuration and results


@dataclass
class SweepConfig:
    """What to sweep. `splits`: ranks or node names (None = `DEFAULT_NUM_SPLITS` automatic ranks)."""

    model: str
    data: str
    splits: list | None = None
    codecs: list[str] = field(default_factory=lambda: list(DEFAULT_CODECS))
    family: str | None = None
    gt: str | None = None
    out_dir: str | None = None
    cache_dir: str | None = None
    workers: int | None = None  # None: os.cpu_count(); 0: in this process
    ray_address: str | None = None  # None: local process pool; 'local': start a local Ray instance
    batch_size: int = DEFAULT_BATCH
    max_images: int | None = None
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    anchor_threshold: float = DEFAULT_ANCHOR_THRESHOLD
    resume: bool = True


@dataclass
class SweepRow:
    """One (split, codec): sizes are per image (mean), times are ms per image (mean), AP in [0,1]."""

    rank: int
    node: str
    op_type: str
    branches: int
    codec: str
    codec_id: int
    images: int
    raw_bytes: float
    encoded_bytes: float
    ratio: float
    encode_ms: float
    decode_ms: float
    part2_ms: float
    max_abs_err: float
    map: float = math.nan
    map50: float = math.nan
    map75: float = math.nan
    gt_images: int = 0
    rel_map: float = math.nan
    rel_map50: float = math.nan
    rel_map75: float = math.nan
    predictions: int = 0
    cached: bool = False

    @property
    def label(self) -> str:
        return f"r{self.rank} {self.codec}"


@dataclass
class SweepResult:
    model: str  # as given (bundled id or path)
    model_path: str
    model_sha256: str
    family: str
    num_nodes: int
    data: str
    data_fingerprint: str
    images: list[str]
    gt: str | None
    score_threshold: float
    anchor_threshold: float
    splits: list[dict]
    codecs: list[str]
    rows: list[SweepRow]
    anchor: dict
    stats: dict
    runner: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["format"] = FORMAT
        d["rows"] = [{k: _json_num(v) for k, v in asdict(r).items()} for r in self.rows]
        d["anchor"] = {k: _json_num(v) for k, v in self.anchor.items()}
        return d


def _json_num(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def _num(v) -> float:
    return math.nan if v is None or v == "" else float(v)


def load_results(path) -> dict:
    """A sweep's results.json (or the folder holding it) as a dict with `rows` as `SweepRow`s."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise UserError(f"sweep results not found: {path} (run `splitinfer sweep` first; it writes results.json)")
    try:
        data = json.loads(path.read_text())
        rows = []
        for r in data["rows"]:
            kw = {k: r[k] for k in SweepRow.__dataclass_fields__ if k in r}
            for k in ("map", "map50", "map75", "rel_map", "rel_map50", "rel_map75", "max_abs_err"):
                kw[k] = _num(kw.get(k))
            rows.append(SweepRow(**kw))
        data["rows"] = rows
        if "model_sha256" not in data or "num_nodes" not in data:
            raise KeyError("model_sha256")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: not a sweep results file ({type(exc).__name__}: {exc})") from None
    return data


# ----------------------------------------------------------------------------------------------
# splits


def _crossing_bytes(graph, names) -> int | None:
    total = 0
    for n in names:
        info = graph.tensor_info(n)
        if info.shape is None or info.dtype is None or any(not isinstance(d, int) for d in info.shape):
            return None
        try:
            total += int(np.prod(info.shape, dtype=np.int64)) * np.dtype(info.dtype).itemsize
        except TypeError:
            return None
    return total


def sent_names(graph, rank: int, crossing: list[str]) -> list[str]:
    """What Part I sends at a rank: the crossing tensors plus the model outputs it already made."""
    cross = set(crossing)
    return list(crossing) + [o for o in dict.fromkeys(graph.output_names)
                             if o not in cross and graph.producer.get(o, -1) < rank]


def auto_splits(graph, count: int = DEFAULT_NUM_SPLITS) -> list[int]:
    """`count` interior ranks spread over the model: in each of `count` equal segments, the rank where
    Part I sends the least data (static sizes; the segment's middle where sizes are unknown)."""
    n = graph.num_nodes
    sets = graph.all_crossing_sets()
    chosen = []
    for k in range(count):
        lo, hi = 1 + (n - 1) * k // count, 1 + (n - 1) * (k + 1) // count
        cands = [r for r in range(lo, max(hi, lo + 1)) if 0 < r < n and sets[r]]
        if not cands:
            continue
        sized = [(b, r) for r in cands if (b := _crossing_bytes(graph, sent_names(graph, r, sets[r]))) is not None]
        chosen.append(min(sized)[1] if sized else cands[len(cands) // 2])
    return sorted(set(chosen))


def resolve_splits(graph, specs) -> list[int]:
    """Ranks from ints / digit strings (a rank) or node names (split before that node)."""
    if not specs:
        return auto_splits(graph)
    ranks = []
    for s in specs:
        if isinstance(s, (int, np.integer)) or (isinstance(s, str) and s.strip().lstrip("-").isdigit()):
            ranks.append(graph.rank_of(int(s), "before"))
        else:
            ranks.append(graph.rank_of(str(s), "before"))
    return list(dict.fromkeys(ranks))


def _codec_specs(specs) -> list:
    from splitinfer.common.codecs import get_codec

    if not specs:
        raise UserError("no codec given (e.g. --codecs none float16 nnc:-38)")
    codecs = [get_codec(s) for s in specs]
    return list({c.spec: c for c in codecs}.values())


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


# ----------------------------------------------------------------------------------------------
# data


def _sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_items(data, max_images: int | None = None) -> list[tuple[str, str, Path, int | None]]:
    """(frame name, content sha256, file, video frame index) for every frame `iter_frames` yields."""
    from splitinfer.common.core.images import _frame_names, frame_count, is_image, is_video, list_images

    data = Path(data)
    if not data.exists():
        raise UserError(f"data not found: {data}")
    if data.is_dir():
        paths = list_images(data)
        if not paths:
            raise UserError(f"{data}: folder holds no images")
        items = [(n, _sha_file(p), p, None) for n, p in zip(_frame_names(paths), paths)]
    elif is_video(data):
        sha = _sha_file(data)
        count = frame_count(data) or 0
        if max_images is not None:
            count = min(count, max_images) if count else max_images
        items = [(f"{data.stem}_{i:06d}", f"{sha}:{i}", data, i) for i in range(count)]
    elif is_image(data):
        items = [(data.stem, _sha_file(data), data, None)]
    else:
        raise UserError(f"{data}: not an image, a folder of images or a video")
    return items[:max_images] if max_images is not None else items


def _fingerprint(items) -> str:
    h = hashlib.sha256()
    for name, sha, _, _ in items:
        h.update(f"{name}\0{sha}\n".encode())
    return h.hexdigest()


def _read_frames(items):
    """Yield (name, sha, BGR image) in order, decoding each video once."""
    from splitinfer.common.core.images import iter_frames, read_image

    video_frames = {}
    for name, sha, path, index in items:
        if index is None:
            yield name, sha, read_image(path)
        else:
            if path not in video_frames:
                video_frames[path] = iter_frames(path)
            _, frame = next(video_frames[path])
            yield name, sha, frame


# ----------------------------------------------------------------------------------------------
# activations: one whole-model run per image, every crossing tensor exposed


def _atomic_write(path: Path, write) -> None:
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
    """A copy of the model whose graph outputs also include `names` (crossing tensors)."""
    import onnx
    from onnx import helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n in have or n in graph.input_names:
            continue
        vi = m.graph.output.add()
        vi.name = n
        dt = graph.tensor_info(n).dtype
        try:
            vi.type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(np.dtype(dt))
        except TypeError:
            pass
    from splitinfer.common.core.onnx_io import cap_ir_version

    return cap_ir_version(m)


def _savez(path, arrays: dict) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append '.npz' to a plain name
        np.savez(f, **arrays)


def _act_path(act_dir: Path, name: str) -> Path:
    """One file per frame; the hash keeps names that differ only in odd characters apart."""
    return act_dir / f"{_slug(name)}-{hashlib.sha1(name.encode()).hexdigest()[:8]}.npz"


def _load_npz(path: Path, sha: str, names=None):
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
    from splitinfer.common.core.runtime import make_session

    todo = [it for it in items if _load_npz(_act_path(act_dir, it[0]), it[1], needed) is None]
    stats = {"computed": len(todo), "cached": len(items) - len(todo), "seconds": 0.0}
    if not todo:
        return stats
    t0 = time.perf_counter()
    session = make_session(_exposed_model(model, graph, needed), device="cpu")
    outputs = [n for n in needed if n not in graph.input_names]
    frames = _read_frames(todo)
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, total=len(todo), desc="activations", unit="img", leave=False)
    for name, sha, image in frames:
        feeds, meta = family.preprocess(image)
        try:
            values = session.ort.run(outputs, {k: v for k, v in feeds.items() if k in session.input_names})
        except Exception as exc:
            raise UserError(f"{name}: the whole model fails on this input ({exc})") from None
        arrays = {n: np.asarray(feeds[n]) for n in needed if n in graph.input_names}
        arrays.update(zip(outputs, values))
        payload = {f"t{i}": np.ascontiguousarray(arrays[n]) for i, n in enumerate(needed)}
        payload[_NAMES_KEY] = np.array(needed)
        payload[_META_KEY] = np.array(json.dumps(meta))
        payload[_FP_KEY] = np.array(sha)
        _atomic_write(_act_path(act_dir, name), lambda tmp: _savez(tmp, payload))
    stats["seconds"] = time.perf_counter() - t0
    return stats


# ----------------------------------------------------------------------------------------------
# tasks: one (image batch, split, codec); run in pool workers, Ray workers or in-process

_SESSIONS: dict = {}


def _init_worker(tmp_root: str | None) -> None:
    """Process-pool initializer: a private temp dir per worker (the nnc codec writes no files, but no
    codec library may share scratch files across workers), and Ctrl-C left to the parent, which stops
    the pool and keeps the rows finished so far."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    base = tempfile.mkdtemp(prefix=f"splitinfer_worker_{os.getpid()}_", dir=tmp_root)
    os.environ["TMPDIR"] = base
    tempfile.tempdir = base


_WARM_CODECS: set = set()


def _part2_session(task, part2_model, feeds: dict):
    """This process's Part II session for the task's split, created and warmed up on first use
    (onnxruntime's first run allocates and plans; it must not count as Part II time)."""
    from splitinfer.common.core.runtime import make_session

    key = task["part2_key"]
    sess = _SESSIONS.get(key)
    if sess is None:
        src = part2_model if part2_model is not None else task["part2_path"]
        sess = make_session(src, device="cpu", threads=task.get("threads", 1) or None)
        sess.ort.run(None, feeds)
        _SESSIONS[key] = sess
    return sess


def _warm_codec(codec) -> None:
    """Pay a codec's one-time costs (nncodec import) before timing it."""
    if codec.spec not in _WARM_CODECS:
        x = np.linspace(-1, 1, 256, dtype=np.float32).reshape(16, 16)
        codec.decode(codec.encode(x), x.dtype, x.shape, trusted=True)
        _WARM_CODECS.add(codec.spec)


def run_task(task: dict, activations: dict | None = None, part2_model=None) -> dict:
    """Encode, decode, run Part II and post-process one batch of images for one (split, codec).

    `activations` ({image: (arrays, meta)}) and `part2_model` (bytes) come from Ray's object store;
    without them the task reads the .npz cache and Part II file named in `task`.
    """
    from splitinfer.common.codecs import get_codec
    from splitinfer.common.families import get_family
    from splitinfer.common.split.graph import SplitPlan, consolidate

    codec = get_codec(task["codec"])
    family = get_family(task["family"])
    plan = SplitPlan.from_manifest(task["plan"])
    sent = plan.part1_outputs
    _warm_codec(codec)
    out = {}
    for name, sha in task["images"]:
        if activations is not None:
            arrays, meta = activations[name]
        else:
            got = _load_npz(_act_path(Path(task["act_dir"]), name), sha, sent)
            if got is None:
                raise RuntimeError(f"activation cache for {name} vanished or changed during the sweep")
            arrays, meta = got
        raw = enc = 0
        t_enc = t_dec = 0.0
        err = 0.0
        decoded = {}
        for n in sent:
            a = arrays[n]
            t0 = time.perf_counter()
            payload = codec.encode(a)
            t1 = time.perf_counter()
            b = codec.decode(payload, a.dtype, a.shape, trusted=True)
            t2 = time.perf_counter()
            t_enc += t1 - t0
            t_dec += t2 - t1
            raw += a.nbytes
            enc += len(payload)
            decoded[n] = np.asarray(b)
            if not codec.lossless and a.dtype.kind == "f" and a.size:
                with np.errstate(all="ignore"):
                    d = np.abs(a - decoded[n])
                err = max(err, float(np.nanmax(d)) if not np.isnan(d).all() else 0.0)
        t0 = time.perf_counter()
        out2 = {}
        if not plan.part2_identity:
            part2_feeds = {n: decoded[n] for n in plan.part2_inputs}
            sess = _part2_session(task, part2_model, part2_feeds)
            t0 = time.perf_counter()
            vals = sess.ort.run(plan.part2_outputs, part2_feeds)
            out2 = dict(zip(plan.part2_outputs, vals))
        t_p2 = time.perf_counter() - t0
        outputs = dict(zip([o for o, _ in plan.consolidation], consolidate(plan, decoded, out2)))
        dets = family.postprocess(outputs, meta, task["score_threshold"])
        out[name] = {"raw": raw, "enc": enc, "encode_s": t_enc, "decode_s": t_dec, "part2_s": t_p2,
                     "max_abs_err": err,
                     "dets": [[d.label, d.x1, d.y1, d.x2, d.y2, d.score] for d in dets]}
    return {"row": task["row"], "batch": task["batch"], "images": out}


# ----------------------------------------------------------------------------------------------
# runners


class _InProcess:
    name = "in-process"

    def run(self, tasks, on_done):
        for t in tasks:
            on_done(run_task(t))

    def close(self, abort: bool = False):
        pass


class _ProcessPool:
    """Local pool of spawned processes (spawn, not fork: onnxruntime's threads do not survive fork)."""

    def __init__(self, workers: int, tmp_root: Path):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.name = f"process pool ({workers} workers)"
        tmp_root.mkdir(parents=True, exist_ok=True)
        self.tmp_root = tmp_root
        self.ex = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                      initializer=_init_worker, initargs=(str(tmp_root),))

    def run(self, tasks, on_done):
        from concurrent.futures import FIRST_COMPLETED, wait

        pending = {self.ex.submit(run_task, t) for t in tasks}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                on_done(f.result())

    def close(self, abort: bool = False):
        if abort:  # stop at once: kill our own workers rather than wait for their running tasks
            procs = list((getattr(self.ex, "_processes", None) or {}).values())
            self.ex.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(timeout=5)
        else:
            self.ex.shutdown(wait=True)
        import shutil

        shutil.rmtree(self.tmp_root, ignore_errors=True)


class _Ray:
    """Ray tasks, one per (image batch, split, codec); data travels through the object store, so
    workers need no shared file system (only splitinfer installed)."""

    def __init__(self, address: str, workers: int | None, act_dir: Path):
        try:
            import ray
        except ImportError:
            raise UserError("--ray-address needs the 'ray' package (pip install 'splitinfer[ray]')") from None
        self.ray = ray
        self.act_dir = act_dir
        self.started = not ray.is_initialized()
        if self.started:
            kw = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
            if address == "local":
                kw["num_cpus"] = workers or os.cpu_count()
            else:
                kw["address"] = address
            try:
                ray.init(**kw)
            except Exception as exc:
                hint = ("; a cluster started with `ray start` (Ray >= 2.59) wants token auth: set "
                        "RAY_AUTH_MODE=token here too" if os.environ.get("RAY_AUTH_MODE") != "token" else "")
                raise UserError(f"cannot connect to Ray at {address!r}: {exc}{hint}") from None
        self.remote = ray.remote(num_cpus=1)(run_task)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        self.name = f"Ray ({address}, {cpus} CPUs)"

    def run(self, tasks, on_done):
        ray = self.ray
        acts, parts = {}, {}
        refs = {}
        for t in tasks:
            akey = (t["rank"], t["batch"])
            if akey not in acts:
                sent = t["plan"]["part1_outputs"]
                batch = {}
                for name, sha in t["images"]:
                    got = _load_npz(_act_path(self.act_dir, name), sha, sent)
                    if got is None:
                        raise RuntimeError(f"activation cache for {name} vanished")
                    batch[name] = got
                acts[akey] = ray.put(batch)
            if t["part2_key"] not in parts:
                parts[t["part2_key"]] = ray.put(Path(t["part2_path"]).read_bytes())
            refs[self.remote.remote(t, acts[akey], parts[t["part2_key"]])] = t
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for r in done:
                on_done(ray.get(r))

    def close(self, abort: bool = False):
        if self.started:
            self.ray.shutdown()


# ----------------------------------------------------------------------------------------------
# the sweep


def _row_key(model_sha, data_fp, family, score_threshold) -> str:
    text = json.dumps([FORMAT, model_sha, data_fp, family, float(score_threshold)])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _row_path(rows_dir: Path, rank: int, codec_spec: str) -> Path:
    return rows_dir / f"r{rank:05d}__{_slug(codec_spec)}.json"


def _load_row(path: Path, key: dict):
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return d if d.get("key") == key else None


def run_sweep(cfg: SweepConfig, progress: bool = True, on_row=None) -> SweepResult:
    """Run (or resume) a sweep and evaluate every row. `on_row(rank, codec)` is called after each
    newly computed row is stored (an exception raised there stops the sweep like Ctrl-C does).

    The local pool starts its workers with 'spawn', so a script calling this needs the usual
    `if __name__ == "__main__":` guard.
    """
    from splitinfer.common.families import resolve_model
    from splitinfer.common.split.graph import SplitGraph, file_sha256
    from splitinfer.common.core.onnx_io import load_model, save_model

    t_start = time.perf_counter()
    model_path, family = resolve_model(str(cfg.model), cfg.family)
    if cfg.batch_size < 1:
        raise UserError(f"batch size must be at least 1 (got {cfg.batch_size})")
    if cfg.workers is not None and cfg.workers < 0:
        raise UserError(f"workers must be 0 (in this process) or more (got {cfg.workers})")
    codecs = _codec_specs(cfg.codecs)
    gt = None
    if cfg.gt:
        from splitinfer.common.eval.evaluation import load_ground_truth

        gt = load_ground_truth(cfg.gt)
    items = data_items(cfg.data, cfg.max_images)
    data_fp = _fingerprint(items)
    model_sha = file_sha256(model_path)
    model = load_model(model_path)
    graph = SplitGraph(model, source_sha256=model_sha)
    ranks = resolve_splits(graph, cfg.splits)
    plans = {r: graph.plan(rank=r) for r in ranks}

    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("sweep_out")
    cache = Path(cfg.cache_dir) if cfg.cache_dir else out_dir / "cache"
    act_dir = cache / "activations" / model_sha[:16]
    key_str = _row_key(model_sha, data_fp, family.name, cfg.score_threshold)
    rows_dir = cache / "rows" / key_str
    parts_dir = cache / "parts" / model_sha[:16]
    for d in (act_dir, rows_dir, parts_dir):
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create cache folder {d}: {exc}") from None

    row_key = {"format": FORMAT, "model_sha256": model_sha, "data": data_fp, "family": family.name,
               "score_threshold": float(cfg.score_threshold)}
    stored: dict[tuple[int, str], dict] = {}
    if cfg.resume:
        for r in ranks:
            for c in codecs:
                d = _load_row(_row_path(rows_dir, r, c.spec), {**row_key, "rank": r, "codec": c.spec})
                if d is not None and set(d["images"]) == {it[0] for it in items}:
                    stored[(r, c.spec)] = d
    todo = [(r, c) for r in ranks for c in codecs if (r, c.spec) not in stored]

    # activations: crossing tensors of the ranks still to do, plus the model outputs (the anchor)
    needed = list(dict.fromkeys([t for r in ranks if any(rr == r for rr, _ in todo) for t in plans[r].part1_outputs]
                                + graph.output_names))
    act_stats = compute_activations(model, graph, family, items, needed, act_dir, progress=progress)
    anchor_preds = {}
    for name, sha, _, _ in items:
        arrays, meta = _load_npz(_act_path(act_dir, name), sha, graph.output_names)
        anchor_preds[name] = family.postprocess(arrays, meta, cfg.score_threshold)

    # Part II files, written once per model and rank
    for r in {r for r, _ in todo}:
        p2 = parts_dir / f"part2_r{r:05d}.onnx"
        if not p2.is_file():
            _, part2 = graph.extract(plans[r])
            _atomic_write(p2, lambda tmp: save_model(part2, tmp))

    workers = (os.cpu_count() or 1) if cfg.workers is None else cfg.workers
    in_process = workers == 0 and not cfg.ray_address  # then Part II may use every core
    batches = [items[i:i + cfg.batch_size] for i in range(0, len(items), cfg.batch_size)]
    tasks = []
    for r, c in todo:
        manifest = plans[r].to_manifest()
        for b, batch in enumerate(batches):
            tasks.append({"row": [r, c.spec], "rank": r, "codec": c.spec, "batch": b, "family": family.name,
                          "images": [[n, s] for n, s, _, _ in batch], "plan": manifest,
                          "act_dir": str(act_dir), "part2_path": str(parts_dir / f"part2_r{r:05d}.onnx"),
                          "part2_key": f"{model_sha[:16]}:{r}", "score_threshold": float(cfg.score_threshold),
                          "threads": 0 if in_process else 1})

    run_id = uuid.uuid4().hex[:12]
    partial: dict[tuple, dict] = {}
    computed: list[tuple[int, str]] = []
    bar = None
    if progress and tasks:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), desc="sweep", unit="task")

    def on_done(res):
        key = (res["row"][0], res["row"][1])
        slot = partial.setdefault(key, {"batches": set(), "images": {}})
        slot["batches"].add(res["batch"])
        slot["images"].update(res["images"])
        if bar is not None:
            bar.update(1)
        if len(slot["batches"]) == len(batches):
            r, spec = key
            doc = {"key": {**row_key, "rank": r, "codec": spec}, "computed_by": run_id,
                   "computed_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "images": slot["images"]}
            _atomic_write(_row_path(rows_dir, r, spec), lambda tmp: Path(tmp).write_text(json.dumps(doc)))
            stored[key] = doc
            computed.append(key)
            del partial[key]
            if bar is not None:
                bar.set_postfix_str(f"rows {len(stored)}/{len(ranks) * len(codecs)}")
            if on_row is not None:
                on_row(r, spec)

    runner = None
    t_tasks = time.perf_counter()
    if tasks:
        if cfg.ray_address:
            runner = _Ray(cfg.ray_address, cfg.workers, act_dir)
        elif workers == 0:
            runner = _InProcess()
        else:
            runner = _ProcessPool(min(workers, len(tasks)), cache / "tmp" / run_id)
        ok = False
        try:
            runner.run(tasks, on_done)
            ok = True
        finally:
            runner.close(abort=not ok)
            if bar is not None:
                bar.close()
    t_tasks = time.perf_counter() - t_tasks

    t_eval = time.perf_counter()
    rows = _evaluate_rows(ranks, codecs, graph, plans, stored, set(computed), anchor_preds, gt,
                          cfg.anchor_threshold, progress)
    anchor = _anchor_metrics(anchor_preds, gt, cfg.anchor_threshold)
    t_eval = time.perf_counter() - t_eval
    splits = [{"rank": r, "node": graph.node_names[r] if r < graph.num_nodes else "(end)",
               "op_type": graph.nodes[r].op_type if r < graph.num_nodes else "end",
               "branches": len(plans[r].crossing), "tensors": plans[r].part1_outputs} for r in ranks]
    stats = {"rows_total": len(ranks) * len(codecs), "rows_cached": len(ranks) * len(codecs) - len(todo),
             "rows_computed": len(computed), "tasks": len(tasks), "activations_computed": act_stats["computed"],
             "activations_cached": act_stats["cached"], "activations_s": round(act_stats["seconds"], 3),
             "tasks_s": round(t_tasks, 3), "evaluate_s": round(t_eval, 3),
             "total_s": round(time.perf_counter() - t_start, 3), "run_id": run_id, "cache": str(cache),
             "cpus": os.cpu_count()}
    return SweepResult(model=str(cfg.model), model_path=str(model_path), model_sha256=model_sha,
                       family=family.name, num_nodes=graph.num_nodes, data=str(cfg.data), data_fingerprint=data_fp,
                       images=[it[0] for it in items],
                       gt=str(cfg.gt) if cfg.gt else None, score_threshold=float(cfg.score_threshold),
                       anchor_threshold=float(cfg.anchor_threshold), splits=splits,
                       codecs=[c.spec for c in codecs], rows=rows, anchor=anchor, stats=stats,
                       runner=runner.name if runner else "(all rows cached)")


def _dets(records: dict) -> dict:
    from splitinfer.common.core.detections import Detection

    return {name: [Detection(d[0], *d[1:]) for d in rec["dets"]] for name, rec in records.items()}


def _abs_map(preds, gt):
    """AP against ground truth on the images that have some (NaN when none has)."""
    from splitinfer.common.eval.evaluation import evaluate_against

    keys = gt.keys
    sub = {k: v for k, v in preds.items() if k in keys}
    if not sub:
        return None
    return evaluate_against(sub, gt, subset=True)


def _anchor_metrics(anchor_preds, gt, anchor_threshold) -> dict:
    d = {"predictions": sum(len(v) for v in anchor_preds.values()),
         "relative_gt_boxes": sum(1 for v in anchor_preds.values() for x in v if x.score >= anchor_threshold),
         "map": math.nan, "map50": math.nan, "map75": math.nan, "gt_images": 0}
    if gt is not None:
        res = _abs_map(anchor_preds, gt)
        if res is not None:
            d.update(map=res.ap, map50=res.ap50, map75=res.ap75, gt_images=res.num_images)
    return d


def _evaluate_rows(ranks, codecs, graph, plans, stored, computed, anchor_preds, gt, anchor_threshold, progress):
    from splitinfer.common.eval.evaluation import evaluate_relative

    pairs = [(r, c) for r in ranks for c in codecs if (r, c.spec) in stored]
    it = pairs
    if progress and len(pairs) > 4:
        from tqdm import tqdm

        it = tqdm(pairs, desc="mAP", unit="row", leave=False)
    rows = []
    for r, c in it:
        recs = stored[(r, c.spec)]["images"]
        preds = _dets(recs)
        n = len(recs)
        raw = sum(x["raw"] for x in recs.values())
        enc = sum(x["enc"] for x in recs.values())
        row = SweepRow(
            rank=r, node=graph.node_names[r] if r < graph.num_nodes else "(end)",
            op_type=graph.nodes[r].op_type if r < graph.num_nodes else "end",
            branches=len(plans[r].crossing), codec=c.spec, codec_id=c.codec_id, images=n,
            raw_bytes=raw / n, encoded_bytes=enc / n, ratio=raw / enc if enc else math.nan,
            encode_ms=1e3 * sum(x["encode_s"] for x in recs.values()) / n,
            decode_ms=1e3 * sum(x["decode_s"] for x in recs.values()) / n,
            part2_ms=1e3 * sum(x["part2_s"] for x in recs.values()) / n,
            max_abs_err=max(x["max_abs_err"] for x in recs.values()),
            predictions=sum(len(v) for v in preds.values()), cached=(r, c.spec) not in computed)
        rel = evaluate_relative(preds, anchor_preds, anchor_threshold)
        row.rel_map, row.rel_map50, row.rel_map75 = rel.ap, rel.ap50, rel.ap75
        if gt is not None:
            res = _abs_map(preds, gt)
            if res is not None:
                row.map, row.map50, row.map75, row.gt_images = res.ap, res.ap50, res.ap75, res.num_images
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# outputs: CSV, JSON, plots, Markdown and HTML report

CSV_COLUMNS = ("rank", "node", "op_type", "branches", "codec", "codec_id", "images", "raw_bytes", "encoded_bytes",
               "ratio", "encode_ms", "decode_ms", "part2_ms", "max_abs_err", "map", "map50", "map75", "gt_images",
               "rel_map", "rel_map50", "rel_map75", "predictions")


def write_csv(result: SweepResult, path) -> Path:
    import csv

    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in result.rows:
            vals = []
            for k in CSV_COLUMNS:
                v = getattr(r, k)
                if isinstance(v, float):
                    v = "" if math.isnan(v) else f"{v:.6g}"
                vals.append(v)
            w.writerow(vals)
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _pct(v) -> float:
    return math.nan if v is None or (isinstance(v, float) and math.isnan(v)) else 100.0 * v


def _metrics(result: SweepResult) -> list[tuple[str, str]]:
    """(row attribute, axis label) of the mAPs to plot: relative always, absolute when measured."""
    out = [("rel_map", "relative mAP@[.5:.95] (%)")]
    if any(not math.isnan(r.map) for r in result.rows):
        out.append(("map", "mAP@[.5:.95] vs ground truth (%)"))
    return out


def _split_label(s: dict) -> str:
    return f"r{s['rank']} {s['op_type']} ({s['branches']} br.)"


def plot_map_by_split(result: SweepResult, path) -> Path:
    """Grouped bars: one group per split, one bar per codec."""
    plt = _plt()
    metrics = _metrics(result)
    ranks = [s["rank"] for s in result.splits]
    by = {(r.rank, r.codec): r for r in result.rows}
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(8, 1.3 * len(ranks) + 3), 3.6 * len(metrics)),
                             squeeze=False)
    cmap = plt.get_cmap("viridis")
    width = 0.8 / max(1, len(result.codecs))
    for ax, (attr, label) in zip(axes[:, 0], metrics):
        for j, codec in enumerate(result.codecs):
            ys = [_pct(getattr(by[(r, codec)], attr)) if (r, codec) in by else math.nan for r in ranks]
            xs = [i - 0.4 + width * (j + 0.5) for i in range(len(ranks))]
            ax.bar(xs, np.nan_to_num(ys), width=width, color=cmap(j / max(1, len(result.codecs) - 1)), label=codec)
        if attr == "map" and not math.isnan(result.anchor.get("map", math.nan)):
            ax.axhline(_pct(result.anchor["map"]), color="red", ls="--", lw=1, label="whole model")
        ax.set_xticks(range(len(ranks)), [_split_label(s) for s in result.splits], rotation=20, ha="right",
                      fontsize=8)
        ax.set_ylabel(label)
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", title="codec")
    axes[0, 0].set_title(f"{Path(result.model).parent.name or result.model}: mAP per split and codec "
                         f"({len(result.images)} images)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _plot_curves(result: SweepResult, path, xattr: str, xlabel: str, title: str) -> Path:
    plt = _plt()
    metrics = _metrics(result)
    fig, axes = plt.subplots(1, len(metrics), figsize=(7.5 * len(metrics), 5), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (attr, label) in zip(axes[0], metrics):
        for i, s in enumerate(result.splits):
            rows = sorted((r for r in result.rows if r.rank == s["rank"]), key=lambda r: getattr(r, xattr))
            xs = [getattr(r, xattr) for r in rows]
            ys = [_pct(getattr(r, attr)) for r in rows]
            ax.plot(xs, ys, "o-", color=cmap(i % 10), ms=4, label=_split_label(s))
            for r, x, y in zip(rows, xs, ys):
                short = r.codec.split(":")[-1] if r.codec.startswith("nnc:") else r.codec.replace("float16", "f16")
                ax.annotate(short, (x, y), fontsize=6, xytext=(2, -8), textcoords="offset points",
                            color=cmap(i % 10))
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3, which="both")
    axes[0, -1].legend(fontsize="small", title="split")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_map_vs_size(result: SweepResult, path) -> Path:
    return _plot_curves(result, path, "encoded_bytes", "compressed bytes per image (log)",
                        "mAP against compressed size, one curve per split")


def plot_map_vs_ratio(result: SweepResult, path) -> Path:
    return _plot_curves(result, path, "ratio", "compression ratio raw/encoded (log)",
                        "mAP against compression ratio, one curve per split")


PLOTS = (("map_by_split.png", plot_map_by_split, "mAP per split and codec"),
         ("map_vs_size.png", plot_map_vs_size, "mAP against compressed size (one curve per split)"),
         ("map_vs_ratio.png", plot_map_vs_ratio, "mAP against compression ratio (one curve per split)"))

_TABLE = (("rank", "rank", "{}"), ("node", "node", "{}"), ("branches", "br.", "{}"), ("codec", "codec", "{}"),
          ("raw_bytes", "raw kB", "kB"), ("encoded_bytes", "sent kB", "kB"), ("ratio", "ratio", "{:.2f}"),
          ("encode_ms", "enc ms", "{:.1f}"), ("decode_ms", "dec ms", "{:.1f}"), ("part2_ms", "Part II ms", "{:.1f}"),
          ("map", "mAP", "pct"), ("map50", "AP50", "pct"), ("rel_map", "rel mAP", "pct"),
          ("rel_map50", "rel AP50", "pct"))


def _cell(row, attr, fmt) -> str:
    v = getattr(row, attr)
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    if fmt == "kB":
        return f"{v / 1e3:,.1f}"
    if fmt == "pct":
        return f"{100 * v:.1f}"
    return fmt.format(v)


def _table_rows(result: SweepResult) -> list[list[str]]:
    return [[_cell(r, a, f) for a, _, f in _TABLE] for r in result.rows]


def summary_lines(result: SweepResult) -> list[str]:
    s, a = result.stats, result.anchor
    gt = (f"{result.gt} ({a['gt_images']} image(s) with ground truth; whole model mAP {_fmt_pct(a['map'])}, "
          f"AP50 {_fmt_pct(a['map50'])})") if result.gt else "none (relative mAP only)"
    return [
        f"model: {result.model} (family {result.family}, {result.num_nodes} nodes, "
        f"sha256 {result.model_sha256[:16]}...)",
        f"data: {result.data} ({len(result.images)} images, fingerprint {result.data_fingerprint[:16]}...)",
        f"ground truth: {gt}",
        f"relative mAP: the whole model's own detections scored >= {result.anchor_threshold} are the ground truth "
        f"({a['relative_gt_boxes']} boxes); predictions kept from score {result.score_threshold}",
        f"splits: {', '.join(str(x['rank']) for x in result.splits)}; codecs: {', '.join(result.codecs)}",
        f"runner: {result.runner} on {s.get('cpus')} CPUs; rows: {s['rows_computed']} computed, "
        f"{s['rows_cached']} from cache; "
        f"activations: {s['activations_computed']} images computed, {s['activations_cached']} cached",
        f"time: total {s['total_s']:.1f} s (activations {s['activations_s']:.1f} s, tasks {s['tasks_s']:.1f} s, "
        f"mAP {s['evaluate_s']:.1f} s)",
    ]


def _fmt_pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def write_report(result: SweepResult, out_dir, plots: list[tuple[str, str]]) -> tuple[Path, Path]:
    """report.md and report.html: summary, the table, the plots."""
    import html

    out_dir = Path(out_dir)
    head = [h for _, h, _ in _TABLE]
    body = _table_rows(result)
    notes = ("Sizes are per image (mean over images) of every tensor Part I sends (crossing tensors plus "
             "model outputs Part I already made); ratio = raw / sent bytes. Times are ms per image on the "
             "sweep machine (one core per pool/Ray worker). mAP = COCO AP@[.5:.95] (pycocotools), AP50 at "
             "IoU 0.5; 'rel' = against the whole model's own detections.")
    md = ["# Split x codec sweep", ""] + [f"- {line}" for line in summary_lines(result)] + ["", notes, ""]
    md += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    md += [""]
    for fname, title in plots:
        md += [f"## {title}", "", f"![{title}]({fname})", ""]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(md))

    e = html.escape
    h = ["<!doctype html><html><head><meta charset='utf-8'><title>Split x codec sweep</title>",
         "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
         "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
         "td:nth-child(2),td:nth-child(4){text-align:left}img{max-width:100%}</style></head><body>",
         "<h1>Split x codec sweep</h1><ul>"]
    h += [f"<li>{e(line)}</li>" for line in summary_lines(result)]
    h += [f"</ul><p>{e(notes)}</p><table><tr>" + "".join(f"<th>{e(x)}</th>" for x in head) + "</tr>"]
    h += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in body]
    h += ["</table>"]
    for fname, title in plots:
        h += [f"<h2>{e(title)}</h2><img src='{e(fname)}' alt='{e(title)}'>"]
    h += ["</body></html>"]
    html_path = out_dir / "report.html"
    html_path.write_text("\n".join(h))
    return md_path, html_path


def write_outputs(result: SweepResult, out_dir, plots: bool = True) -> dict[str, Path]:
    """results.csv, results.json, the three plots and report.md/.html in `out_dir`."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out_dir}: {exc}") from None
    paths = {"csv": write_csv(result, out_dir / "results.csv")}
    paths["json"] = out_dir / "results.json"
    paths["json"].write_text(json.dumps(result.to_dict(), indent=1))
    made = []
    if plots and result.rows:
        for fname, fn, title in PLOTS:
            paths[fname] = fn(result, out_dir / fname)
            made.append((fname, title))
    paths["md"], paths["html"] = write_report(result, out_dir, made)
    return paths


def print_table(result: SweepResult, log=print) -> None:
    head = [h for _, h, _ in _TABLE]
    body = _table_rows(result)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)]
    widths[1] = min(widths[1], 28)
    log("  ".join(h.rjust(w) if i not in (1, 3) else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths))))
    for r in body:
        cells = [c[:widths[i]] for i, c in enumerate(r)]
        log("  ".join(c.rjust(w) if i not in (1, 3) else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))))
