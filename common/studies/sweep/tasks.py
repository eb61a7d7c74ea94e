"""One sweep task: encode, decode, run Part II and post-process one batch of frames for one (split, codec).

Runs in pool workers, Ray workers or this process. Defined terms: a *task* is a JSON-able dict (row,
rank, codec spec, batch index, family, frames, split manifest, cache paths, threads); its result holds
per-frame raw/encoded bytes, encode/decode/Part II seconds, max abs error and detections.
Per-process state (Part II sessions, warmed codecs) lives here so a worker pays set-up costs once.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from splitinfer.common.studies.sweep.cache import activation_path, load_activations
from splitinfer.common.studies.sweep.fidelity import frame_stats
from splitinfer.common.studies.sweep.rawinput import family_for


_SESSIONS: dict = {}


def init_worker(tmp_root: str | None) -> None:
    """Process-pool initializer: a private temp dir per worker (the nnc codec writes no files, but no
    codec library may share scratch files across workers), and Ctrl-C left to the parent, which stops
    the pool and keeps the rows finished so far. Each worker leads its own process group, so stopping the
    pool at once also stops the helper processes its codecs started (nnc's encoders and decoders)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "setpgid"):
        os.setpgid(0, 0)
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
    """Pay a codec's one-time costs (nncodec import, nnc's helper processes) before timing it."""
    if codec.spec not in _WARM_CODECS:
        codec.warm_up()
        x = np.linspace(-1, 1, 256, dtype=np.float32).reshape(16, 16)
        codec.decode(codec.encode(x), x.dtype, x.shape, trusted=True)
        _WARM_CODECS.add(codec.spec)


def task_tensors(task: dict) -> list[str]:
    """What a task reads per frame: the tensors Part I sends and the whole model's outputs (the reference)."""
    return list(dict.fromkeys(task["plan"]["part1_outputs"] + [o for o, _ in task["plan"]["consolidation"]]))


def run_task(task: dict, activations: dict | None = None, part2_model=None) -> dict:
    """Encode, decode, run Part II and post-process one batch of images for one (split, codec).

    `activations` ({image: (arrays, meta)}) and `part2_model` (bytes) come from Ray's object store;
    without them the task reads the .npz cache and Part II file named in `task`.
    """
    from splitinfer.common.codecs import encode_many, get_codec
    from splitinfer.common.split.graph import SplitPlan
    from splitinfer.common.split.verify import consolidated_outputs

    codec = get_codec(task["codec"])
    family = family_for(task["family"])
    plan = SplitPlan.from_manifest(task["plan"])
    sent = plan.part1_outputs
    model_outputs = plan.output_names
    _warm_codec(codec)
    out = {}
    for name, sha in task["images"]:
        if activations is not None:
            arrays, meta = activations[name]
        else:
            got = load_activations(activation_path(Path(task["act_dir"]), name), sha, task_tensors(task))
            if got is None:
                raise RuntimeError(f"activation cache for {name} vanished or changed during the sweep")
            arrays, meta = got
        raw = enc = elems = 0
        t_dec = 0.0
        err = 0.0
        decoded = {}
        t0 = time.perf_counter()
        payloads = encode_many(codec, [arrays[n] for n in sent])  # the frame's tensors at once, as the UE does
        t_enc = time.perf_counter() - t0
        for n, payload in zip(sent, payloads):
            a = arrays[n]
            t1 = time.perf_counter()
            b = codec.decode(payload, a.dtype, a.shape, trusted=True)
            t2 = time.perf_counter()
            t_dec += t2 - t1
            raw += a.nbytes
            elems += a.size
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
        outputs = consolidated_outputs(plan, decoded, out2)
        dets = family.postprocess(outputs, meta, task["score_threshold"])
        out[name] = {"raw": raw, "enc": enc, "elems": elems, "encode_s": t_enc, "decode_s": t_dec, "part2_s": t_p2,
                     "max_abs_err": err, "fid": frame_stats({o: arrays[o] for o in model_outputs}, outputs),
                     "dets": [[d.label, d.x1, d.y1, d.x2, d.y2, d.score] for d in dets]}
    return {"row": task["row"], "batch": task["batch"], "images": out}
