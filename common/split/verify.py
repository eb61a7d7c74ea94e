"""Checking a split: Part I then Part II (split/consolidate.py) compared with the whole model, tensor by tensor.

Why bit for bit by default: a cut changes no arithmetic, so a lossless split must match the whole model
exactly. Sessions run with graph optimizations off, because onnxruntime may fuse operators across the
cut in the whole model but not in the parts, which changes float rounding without any error in the
split. `rtol`/`atol` (numpy.allclose) exist for lossy transports between the parts.

Defined terms: *reference* (the whole model's outputs on the same feeds), *consolidated outputs* (the
model's outputs by name, each taken from the part the plan says yields it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from splitinfer.common.core.errors import UserError
from splitinfer.common.core.onnx_io import MAX_ORT_IR_VERSION, cap_ir_version, load_model
from splitinfer.common.split.consolidate import run_session, run_split
from splitinfer.common.split.plan import SplitPlan
from splitinfer.common.split.types import random_feeds


def load_feeds(path) -> dict:
    """Inputs from a .npz file (arrays named like the model inputs); never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"input file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:
        raise UserError(f"{path}: not a .npz file of input arrays ({type(exc).__name__}: {exc})") from None


@dataclass
class VerifyRow:
    name: str
    part: str
    shape: list
    dtype: str
    max_abs_diff: float
    equal: bool


@dataclass
class VerifyReport:
    ok: bool
    rows: list[VerifyRow]
    rtol: float
    atol: float
    seconds: float

    def lines(self) -> list[str]:
        mode = "exact" if self.rtol == 0 and self.atol == 0 else f"rtol={self.rtol} atol={self.atol}"
        out = [f"verify ({mode}): {'OK' if self.ok else 'MISMATCH'} in {self.seconds:.2f} s"]
        for r in self.rows:
            out.append(f"  {r.name} [Part {r.part}] {r.dtype}{r.shape}: max|diff|={r.max_abs_diff:.3g} "
                       f"{'equal' if r.equal else 'DIFFERENT'}")
        return out


def verify_session(model):
    """A CPU session with graph optimizations off (see the module's why); model as proto or path."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UserError(f"onnxruntime cannot load model for verification: {exc}") from None


def reference_outputs(model, feeds: dict) -> dict:
    """Outputs of the whole model (proto or path), to compare many splits against one run."""
    if isinstance(model, onnx.ModelProto):
        model = cap_ir_version(model)
    sess = verify_session(model)
    names = [o.name for o in sess.get_outputs()]
    try:
        return run_session(sess, feeds, names)
    except Exception as exc:
        raise UserError(f"the whole model fails on the verification inputs: {exc}") from None


def compare(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> tuple[float, bool]:
    """(max |a - b|, equal within the tolerance; exact when both are 0; NaN in both places is equal)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return float("inf"), False
    if a.size == 0:
        return 0.0, True
    if a.dtype.kind not in "fciub":
        equal = bool(np.array_equal(a, b))
        return (0.0 if equal else float("inf")), equal
    fa, fb = np.atleast_1d(a).astype(np.float64), np.atleast_1d(b).astype(np.float64)
    diff = np.abs(fa - fb)
    diff[np.isnan(fa) & np.isnan(fb)] = 0.0
    max_diff = float(np.nan_to_num(diff, nan=np.inf).max())
    if rtol == 0 and atol == 0:
        return max_diff, bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    return max_diff, bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))


def _missing_inputs(proto: onnx.ModelProto, feeds: dict) -> list[str]:
    inits = {t.name for t in proto.graph.initializer}
    return [vi.name for vi in proto.graph.input if vi.name not in inits and vi.name not in feeds]


def verify_split(model, plan: SplitPlan, feeds: dict | None = None, rtol: float = 0.0, atol: float = 0.0,
                 parts=None, graph=None, seed: int = 0, reference: dict | None = None) -> VerifyReport:
    """Compare the whole model with Part II(Part I(x)) on onnxruntime (CPU), output by output.

    `model` and `parts` may be protos or paths (paths keep external data and >2 GB models working).
    Inputs: `feeds`, else random ones (`random_feeds`, `seed`). `reference`: whole-model outputs
    already computed on the same feeds (saves one run when checking many ranks). `graph`: a
    `SplitGraph` of the model, to extract the parts from when `parts` is not given.
    """
    t0 = time.perf_counter()
    proto = model if isinstance(model, onnx.ModelProto) else load_model(model, load_external_data=False)
    if parts is None:
        if graph is None:
            from splitinfer.common.split.graph import SplitGraph

            graph = SplitGraph(proto if isinstance(model, onnx.ModelProto) else load_model(model))
        parts = graph.extract(plan)
    if feeds is None:
        feeds = random_feeds(proto, seed=seed)
    missing = _missing_inputs(proto, feeds)
    if missing:
        raise UserError(f"verification inputs lack model input(s) {missing} (have {sorted(feeds)})")
    if reference is None:
        if not isinstance(model, onnx.ModelProto) and proto.ir_version > MAX_ORT_IR_VERSION:
            model = load_model(model)  # onnxruntime refuses the file; load it and cap the IR version
        reference = reference_outputs(model, feeds)
    split = run_split(verify_session(parts[0]), verify_session(parts[1]), plan, feeds)
    rows, ok = [], True
    for name, part in plan.consolidation:
        a, b = np.asarray(reference[name]), np.asarray(split[name])
        diff, equal = compare(a, b, rtol, atol)
        ok &= equal
        rows.append(VerifyRow(name, part, list(b.shape), str(b.dtype), diff, equal))
    return VerifyReport(ok, rows, rtol, atol, time.perf_counter() - t0)
