"""Split recommendation: the (split, codec) with the least estimated end-to-end latency.

latency(r, codec) = device time of nodes [0, r)          (device profile)
                  + encode time                          (sweep row, per image)
                  + bytes sent x 8 / bandwidth           (sweep row, per image)
                  + decode time                          (sweep row, per image)
                  + server time of nodes [r, N) / speed-up (server profile)

Why per-node profiles rather than timing each Part I/II: one profiled run per side prices every rank
at once (prefix sums), and a server can be emulated from a profile measured elsewhere (a saved JSON)
or by a speed-up factor. Per-node times come from onnxruntime's own profiler (`enable_profiling`),
with graph optimisations off so that each kernel event maps to exactly one ONNX node (fusion would
merge nodes across a cut); nodes are renamed by topological rank in a private copy so that the mapping
never depends on the model's own (possibly empty or duplicate) names. Each node's time is the median
over the profiled runs after one warm-up run; the time between kernels (allocation, scheduling) is
spread over the nodes in proportion, so that all parts add up to the median whole run.

Candidates are the sweep's rows (their accuracy is measured), plus two baselines priced from the
profiles: the whole model on the device (nothing sent) and, unless the sweep covered rank 0, the
whole model on the server (the raw input sent uncompressed). A minimum accuracy and a privacy rule
("the first K nodes stay on the device": rank >= K) filter them; the Pareto front is taken over
(bytes sent: less is better, latency: less, accuracy: more) of the candidates that use the network;
the device-only baseline is printed beside it.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.common.core.runtime import input_names_of, keep_feeds

PROFILE_FORMAT = 1
METRICS = {"rel_map": "relative mAP", "rel_map50": "relative AP50", "map": "mAP", "map50": "AP50"}


@dataclass
class NodeProfile:
    """Median time of every node (topological order) of one model on one side."""

    side: str
    model_sha256: str
    nodes: list[str]
    ops: list[str]
    node_ms: list[float]
    run_ms: float  # median wall time of a whole profiled run
    runs: int
    threads: int  # 0 = onnxruntime's default (all cores)
    provider: str = "cpu"
    host: str = field(default_factory=lambda: os.uname().nodename if hasattr(os, "uname") else "")

    def __post_init__(self):
        raw = np.concatenate([[0.0], np.cumsum(np.asarray(self.node_ms, dtype=np.float64))])
        self.kernel_ms = float(raw[-1])
        # Spread the time between kernels (allocation, scheduling) over the nodes in proportion, so
        # that the parts of a split add up to a measured whole run.
        self.scale = self.run_ms / self.kernel_ms if self.kernel_ms > 0 and self.run_ms > 0 else 1.0
        self._prefix = raw * self.scale

    @property
    def total_ms(self) -> float:
        return float(self._prefix[-1])

    def span_ms(self, lo: int, hi: int) -> float:
        """Time of nodes [lo, hi), scaled so that all nodes together take one measured run."""
        return float(self._prefix[hi] - self._prefix[lo])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["format"] = PROFILE_FORMAT
        return d

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path


def load_profile(path, model_sha256: str | None = None, num_nodes: int | None = None, side: str | None = None
                 ) -> NodeProfile:
    """A saved profile, checked against the model it is used with."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"profile not found: {path}")
    try:
        d = json.loads(path.read_text())
        kw = {k: d[k] for k in ("side", "model_sha256", "nodes", "ops", "node_ms", "run_ms", "runs", "threads")}
        kw["provider"], kw["host"] = d.get("provider", "cpu"), d.get("host", "")
        prof = NodeProfile(**kw)
        if len(prof.node_ms) != len(prof.nodes) or any(not (float(x) >= 0) for x in prof.node_ms):
            raise ValueError("node_ms must hold one non-negative time per node")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: not a node-time profile ({type(exc).__name__}: {exc})") from None
    if num_nodes is not None and len(prof.nodes) != num_nodes:
        raise UserError(f"{path}: profile has {len(prof.nodes)} nodes but the model has {num_nodes}")
    if model_sha256 and prof.model_sha256 != model_sha256:
        raise UserError(f"{path}: profile was measured on a different model (sha256 {prof.model_sha256[:16]}...)")
    if side:
        prof.side = side
    return prof


def profile_model(model_path, feeds: dict, *, side: str = "device", runs: int = 10, threads: int = 0) -> NodeProfile:
    """Per-node times of the whole model from onnxruntime's profiler (CPU), `runs` runs after one warm-up."""
    import onnx
    import onnxruntime as ort

    from splitinfer.common.split.graph import SplitGraph, file_sha256
    from splitinfer.common.core.onnx_io import cap_ir_version, load_model

    if runs < 1:
        raise UserError(f"profile runs must be at least 1 (got {runs})")
    model = load_model(model_path)
    graph = SplitGraph(model)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.node[:]
    for i, n in enumerate(graph.nodes):  # topological order, names = rank
        c = m.graph.node.add()
        c.CopyFrom(n)
        c.name = f"splitinfer_rank_{i}"
    cap_ir_version(m)
    with tempfile.TemporaryDirectory(prefix="splitinfer_profile_") as tmp:
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "prof")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        try:
            sess = ort.InferenceSession(m.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise UserError(f"{model_path}: onnxruntime cannot load the model for profiling: {exc}") from None
        feeds = keep_feeds(feeds, input_names_of(sess))
        for _ in range(runs + 1):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    run_events = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])
    if len(run_events) != runs + 1:
        raise UserError(f"{model_path}: onnxruntime's profile holds {len(run_events)} runs, expected {runs + 1}")
    per_node: list[list[float]] = [[0.0] * runs for _ in graph.nodes]
    prefix, suffix = "splitinfer_rank_", "_kernel_time"
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.startswith(prefix) or not name.endswith(suffix):
            continue
        k = int(name[len(prefix):-len(suffix)])
        run = next((j for j, r in enumerate(run_events) if r["ts"] <= e["ts"] <= r["ts"] + r["dur"]), None)
        if run is None or run == 0:  # the warm-up run does not count
            continue
        per_node[k][run - 1] += e["dur"] / 1e3
    return NodeProfile(side=side, model_sha256=file_sha256(model_path), nodes=list(graph.node_names),
                       ops=[n.op_type for n in graph.nodes], node_ms=[statistics.median(v) for v in per_node],
                       run_ms=statistics.median(e["dur"] / 1e3 for e in run_events[1:]), runs=runs,
                       threads=int(threads or 0))


# ----------------------------------------------------------------------------------------------
# candidates


@dataclass
class Candidate:
    rank: int
    node: str
    codec: str
    sent_bytes: float
    accuracy: float  # in [0, 1]
    device_ms: float
    encode_ms: float
    transfer_ms: float
    decode_ms: float
    server_ms: float
    kind: str = "sweep"  # 'sweep', 'device only', 'server only'

    @property
    def total_ms(self) -> float:
        return self.device_ms + self.encode_ms + self.transfer_ms + self.decode_ms + self.server_ms

    @property
    def label(self) -> str:
        return f"rank {self.rank} ({self.node}) {self.codec}" if self.kind == "sweep" else \
            f"{self.kind} (rank {self.rank}, {self.codec})"


def build_candidates(results: dict, device: NodeProfile, server: NodeProfile, bandwidth_bps: float, *,
                     server_speedup: float = 1.0, metric: str = "rel_map", input_bytes: int | None = None
                     ) -> list[Candidate]:
    """Every sweep row priced at `bandwidth_bps`, plus the device-only / server-only baselines."""
    if metric not in METRICS:
        raise UserError(f"unknown accuracy metric {metric!r} (one of {', '.join(METRICS)})")
    if not server_speedup > 0:
        raise UserError(f"server speed-up must be positive (got {server_speedup})")
    n = len(device.node_ms)
    anchor_acc = 1.0 if metric.startswith("rel_") else _num(results.get("anchor", {}).get(metric))
    cands = []
    for r in results["rows"]:
        acc = getattr(r, metric)
        cands.append(Candidate(
            rank=r.rank, node=r.node, codec=r.codec, sent_bytes=r.encoded_bytes, accuracy=acc,
            device_ms=device.span_ms(0, r.rank), encode_ms=r.encode_ms,
            transfer_ms=r.encoded_bytes * 8e3 / bandwidth_bps, decode_ms=r.decode_ms,
            server_ms=server.span_ms(r.rank, n) / server_speedup))
    cands.append(Candidate(rank=n, node="(end)", codec="-", sent_bytes=0.0, accuracy=anchor_acc,
                           device_ms=device.total_ms, encode_ms=0.0, transfer_ms=0.0, decode_ms=0.0, server_ms=0.0,
                           kind="device only"))
    if input_bytes is not None and not any(r.rank == 0 for r in results["rows"]):
        cands.append(Candidate(rank=0, node="(input)", codec="none", sent_bytes=float(input_bytes),
                               accuracy=anchor_acc, device_ms=0.0, encode_ms=0.0,
                               transfer_ms=input_bytes * 8e3 / bandwidth_bps, decode_ms=0.0,
                               server_ms=server.total_ms / server_speedup, kind="server only"))
    return cands


def _num(v) -> float:
    return math.nan if v is None else float(v)


@dataclass
class Choice:
    best: Candidate | None
    feasible: list[Candidate]
    pareto: list[Candidate]
    excluded_accuracy: int
    excluded_privacy: int


def choose(cands: list[Candidate], *, min_accuracy: float | None = None, keep_first: int = 0) -> Choice:
    """Filter by privacy (rank >= keep_first) and accuracy, pick the least latency, build the Pareto front.

    The device-only baseline competes for `best` but stays off the front: it sends nothing and is exact,
    so it would dominate every split slower than it and leave a front of one line.
    """
    private = [c for c in cands if c.rank >= keep_first]
    ok = [c for c in private if min_accuracy is None or (not math.isnan(c.accuracy) and c.accuracy >= min_accuracy)]
    best = min(ok, key=lambda c: (c.total_ms, c.sent_bytes, -c.accuracy)) if ok else None
    networked = [c for c in ok if c.kind != "device only"]
    return Choice(best=best, feasible=ok, pareto=pareto_front(networked), excluded_accuracy=len(private) - len(ok),
                  excluded_privacy=len(cands) - len(private))


def dominates(a: Candidate, b: Candidate) -> bool:
    """a is at least as good as b on bytes, latency and accuracy, and better on one."""
    acc_a = -1.0 if math.isnan(a.accuracy) else a.accuracy
    acc_b = -1.0 if math.isnan(b.accuracy) else b.accuracy
    no_worse = a.sent_bytes <= b.sent_bytes and a.total_ms <= b.total_ms and acc_a >= acc_b
    better = a.sent_bytes < b.sent_bytes or a.total_ms < b.total_ms or acc_a > acc_b
    return no_worse and better


def pareto_front(cands: list[Candidate]) -> list[Candidate]:
    """Candidates no other candidate dominates, by latency."""
    front = [c for c in cands if not any(dominates(o, c) for o in cands if o is not c)]
    return sorted(front, key=lambda c: (c.total_ms, c.sent_bytes))


def table_lines(cands: list[Candidate], metric: str) -> list[str]:
    head = (f"{'split':<34}{'codec':>9}{'sent kB':>10}{'device':>9}{'encode':>9}{'transfer':>10}{'decode':>9}"
            f"{'server':>9}{'total ms':>10}{METRICS[metric]:>15}")
    lines = [head]
    for c in cands:
        where = f"{c.rank} {c.node}" if c.kind == "sweep" else f"{c.rank} {c.kind}"
        acc = "n/a" if math.isnan(c.accuracy) else f"{100 * c.accuracy:.1f}"
        lines.append(f"{where[:33]:<34}{c.codec:>9}{c.sent_bytes / 1e3:>10.1f}{c.device_ms:>9.1f}{c.encode_ms:>9.1f}"
                     f"{c.transfer_ms:>10.2f}{c.decode_ms:>9.1f}{c.server_ms:>9.1f}{c.total_ms:>10.1f}{acc:>15}")
    return lines


def profile_line(p: NodeProfile, speedup: float = 1.0) -> str:
    threads = "all cores" if not p.threads else f"{p.threads} thread{'s' if p.threads > 1 else ''}"
    extra = f", emulated speed-up x{speedup:g}" if speedup != 1.0 else ""
    share = 100 * p.kernel_ms / p.run_ms if p.run_ms else math.nan
    return (f"{p.side}: whole model {p.run_ms:.1f} ms per run ({threads}, {p.runs} runs, median); kernels "
            f"{p.kernel_ms:.1f} ms ({share:.0f} %), the rest spread over the nodes{extra}")



def json_safe(obj):
    """NaN -> None throughout (JSON has no NaN)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# a whole recommendation (what `splitinfer recommend` runs)


@dataclass
class Inputs:
    """What a recommendation prices: the model, the sweep's results and the preprocessed probe image."""

    model_path: Path
    sha256: str
    results: dict
    num_nodes: int
    feeds: dict
    input_bytes: int  # the raw model input, sent by the whole-model-on-the-server baseline
    image_name: str


def load_inputs(model_path, family, results_path, image_path, keep_first: int = 0) -> Inputs:
    """The model, its sweep results (refused when they were run on another model) and the probe image."""
    from splitinfer.common.core.images import read_image
    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.split.graph import SplitGraph, file_sha256
    from splitinfer.common.studies.sweep import load_results

    sha = file_sha256(model_path)
    results = load_results(results_path)
    if results["model_sha256"] != sha:
        raise UserError(f"{results_path}: the sweep was run on a different model "
                        f"({results['model']}, sha256 {results['model_sha256'][:16]}...)")
    graph = SplitGraph(load_model(model_path), source_sha256=sha)
    if keep_first > graph.num_nodes:
        raise UserError(f"--keep-first {keep_first} exceeds the model's {graph.num_nodes} nodes")
    feeds, _ = family.preprocess(read_image(image_path))
    input_bytes = sum(v.nbytes for k, v in feeds.items() if k in graph.input_names)
    return Inputs(Path(model_path), sha, results, graph.num_nodes, feeds, input_bytes, Path(image_path).name)


def side_profiles(inputs: Inputs, sides: dict, runs: int, save_dir=None, say=print) -> dict:
    """{side: NodeProfile} for `sides` = {"device"/"server": (saved profile path or None, threads)}: loaded
    where a path is given, else profiled here (`runs` runs); saved under `save_dir` when given."""
    profiles = {}
    for side, (path, threads) in sides.items():
        if path:
            profiles[side] = load_profile(path, inputs.sha256, inputs.num_nodes, side)
        else:
            say(f"profiling the {side} side ({runs} runs, image {inputs.image_name})...")
            profiles[side] = profile_model(inputs.model_path, inputs.feeds, side=side, runs=runs, threads=threads)
        if save_dir:
            profiles[side].save(Path(save_dir) / f"{side}_profile.json")
    return profiles


def choice_report(ch: Choice) -> dict:
    """A Choice as JSON-ready dicts (each candidate with its total_ms)."""
    row = lambda c: asdict(c) | {"total_ms": c.total_ms}  # noqa: E731
    return {"best": row(ch.best) if ch.best else None, "pareto": [row(c) for c in ch.pareto],
            "feasible": [row(c) for c in ch.feasible]}


def best_line(b: Candidate, metric: str) -> str:
    """The recommendation in one line: its latency by stage, bytes sent, accuracy."""
    acc = "n/a" if math.isnan(b.accuracy) else f"{100 * b.accuracy:.1f} %"
    return (f"recommended: {b.label}: {b.total_ms:.1f} ms = device {b.device_ms:.1f} + encode {b.encode_ms:.1f}"
            f" + transfer {b.transfer_ms:.2f} + decode {b.decode_ms:.1f} + server {b.server_ms:.1f}; "
            f"sends {b.sent_bytes / 1e3:.1f} kB per image; {METRICS[metric]} {acc}")
