"""onnxruntime sessions that say which execution provider really runs.

onnxruntime-gpu silently falls back to CPU where CUDA cannot load, so asking for CUDA proves
nothing: `session.get_providers()` after creation is the truth, and that is what we report.
"""

from __future__ import annotations

from dataclasses import dataclass

from splitinfer.common.core.errors import UserError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@dataclass
class ProviderSession:
    """An inference session plus the provider that really executes it ('cpu' or 'cuda')."""

    ort: object
    provider: str
    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: dict, output_names: list[str] | None = None):
        return self.ort.run(output_names or self.output_names, feeds)


def keep_feeds(feeds: dict, input_names) -> dict:
    """The entries of `feeds` whose name is in `input_names`: onnxruntime refuses feeds a session does not
    take, and a part, a profiled copy or a family's preprocessing may feed more than one model needs."""
    wanted = set(input_names)
    return {k: v for k, v in feeds.items() if k in wanted}


def input_names_of(session) -> list[str]:
    """Input names of a `ProviderSession` or of a bare onnxruntime InferenceSession."""
    names = getattr(session, "input_names", None)
    return list(names) if names is not None else [i.name for i in session.get_inputs()]


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def make_session(model, device: str = "auto", threads: int | None = None, require_gpu: bool = False, *,
                 optimize: bool = True, quiet: bool = False) -> ProviderSession:
    """Create a session from a path, bytes or ModelProto on 'cpu', 'gpu' or 'auto' (GPU when usable).

    With `require_gpu`, raise UserError unless CUDA really runs the session. `optimize=False` turns
    onnxruntime's graph optimizations off; `quiet` silences its log (for a probe whose failure is handled).
    """
    import onnxruntime as ort

    if device not in ("auto", "cpu", "gpu"):
        raise UserError(f"unknown processing unit {device!r} (expected auto, cpu or gpu)")
    want_gpu = require_gpu or device == "gpu" or (device == "auto" and CUDA in ort.get_available_providers())
    providers = [CUDA, CPU] if want_gpu and CUDA in ort.get_available_providers() else [CPU]
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    # Idle worker threads that spin steal the core the other process (UE or server on the same
    # host) needs: measured here, Part II went from 126-330 ms to 47-61 ms with spinning off.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4 if quiet else 3
    src = model
    if hasattr(model, "SerializeToString"):
        src = model.SerializeToString()
    elif not isinstance(model, (bytes, bytearray)):
        src = str(model)
    try:
        sess = ort.InferenceSession(src, sess_options=so, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UserError(f"onnxruntime cannot load model: {exc}") from None
    used = sess.get_providers()
    provider = "cuda" if used and used[0] == CUDA else "cpu"
    if (require_gpu or device == "gpu") and provider != "cuda":
        raise UserError(
            f"GPU requested but CUDA is not used (available: {ort.get_available_providers()}, in use: {used})"
        )
    return ProviderSession(
        ort=sess,
        provider=provider,
        input_names=[i.name for i in sess.get_inputs()],
        output_names=[o.name for o in sess.get_outputs()],
    )


# -- expose tensors as outputs and run once ------------------------------------------------------------


def exposing_session(model, names, *, elem_types: dict | None = None, device: str = "cpu",
                     threads: int | None = None, optimize: bool = True, quiet: bool = False) -> ProviderSession:
    """A session of a copy of `model` whose graph outputs are exactly the tensors `names`, intermediate ones
    included, so that one run returns them all (`elem_types`: see onnx_io.with_outputs).

    The one implementation of "expose tensors as outputs and run once": the split's type probe
    (split/types.py), the server's reference shapes (server/limits.py) and the size analysis
    (studies/measure.py) all use it.
    """
    from splitinfer.common.core.onnx_io import with_outputs

    exposed = with_outputs(model, names, elem_types, replace=True)
    return make_session(exposed, device=device, threads=threads, optimize=optimize, quiet=quiet)


def run_exposed(session: ProviderSession, feeds: dict, quiet: bool = False) -> list:
    """One run of an `exposing_session` on `feeds` (numpy arrays or OrtValues; the ones it does not take are
    left out): its outputs as OrtValues, in its output order (shape and size readable without a copy)."""
    import numpy as np
    import onnxruntime as ort

    values = {k: v if isinstance(v, ort.OrtValue) else ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v))
              for k, v in keep_feeds(feeds, session.input_names).items()}
    options = None
    if quiet:
        options = ort.RunOptions()
        options.log_severity_level = 4
    return list(session.ort.run_with_ort_values(session.output_names, values, options))


def exposed_values(model, names, feeds: dict, **session_options) -> dict:
    """The tensors `names` of `model` from one run on `feeds`: {name: OrtValue}; `session_options` as for
    `exposing_session`. Errors of onnxruntime propagate (each caller decides what a failure means)."""
    session = exposing_session(model, names, **session_options)
    values = run_exposed(session, feeds, quiet=session_options.get("quiet", False))
    return dict(zip(session.output_names, values))
