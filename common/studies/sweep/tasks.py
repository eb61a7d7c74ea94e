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


def task_family(name: str, model_path=None):
    """The task's family, set up by the model's model.json (e.g. a YOLO's anchors and input size); a family
    without detections (`raw`) only post-processes to nothing here, so its model is not read."""
    from splitinfer.common.families import family_for_model, get_family

    family = get_family(name)
    return family_for_model(model_path, name) if model_path and family.detects else family


def task_tensors(task: dict) -> list[str]:
    """What a task reads per frame: the tensors Part I sends and the whole model's outputs (the reference)."""
    return list(dict.fromkeys(task["plan"]["part1_outputs"] + [o for o, _ in task["plan"]["consolidation"]]))


def run_task(task: dict, activations: dict | None = None, part2_model=None) -> dict:
    """Encode, decode, run Part II and post-process one batch of images for one (split, codec).

    A sequential codec's task holds its row's every frame, in stream order: one encoder and one decoder
    (`Codec.sequence_encoder()` / `sequence_decoder()`) code them as the UE and the network process would,
    and each frame's record says whether it was a keyframe (`key`) and its index in the stream (`seq`, read
    back from its sequence header). `activations` ({image: (arrays, meta)}) and `part2_model` (bytes) come
    from Ray's object store; without them the task reads the .npz cache and Part II file named in `task`.
    """
    from splitinfer.common.codecs import get_codec
    from splitinfer.common.split.graph import SplitPlan
    from splitinfer.common.split.consolidate import consolidated_outputs

    codec = get_codec(task["codec"])
    family = task_family(task["family"], task.get("model_path"))
    plan = SplitPlan.from_manifest(task["plan"])
    _warm_codec(codec)
    coder = _StreamCoder(codec) if codec.sequential else _FrameCoder(codec)
    out = {}
    try:
        for name, sha in task["images"]:
            arrays, meta = _frame_arrays(task, name, sha, activations)
            rec, decoded = coder.code(plan.part1_outputs, arrays)
            t0 = time.perf_counter()
            out2 = {}
            if not plan.part2_identity:
                part2_feeds = {n: decoded[n] for n in plan.part2_inputs}
                sess = _part2_session(task, part2_model, part2_feeds)
                t0 = time.perf_counter()
                out2 = dict(zip(plan.part2_outputs, sess.ort.run(plan.part2_outputs, part2_feeds)))
            rec["part2_s"] = time.perf_counter() - t0
            outputs = consolidated_outputs(plan, decoded, out2)
            dets = family.postprocess(outputs, meta, task["score_threshold"])
            rec["fid"] = frame_stats({o: arrays[o] for o in plan.output_names}, outputs)
            rec["dets"] = [[d.label, d.x1, d.y1, d.x2, d.y2, d.score] for d in dets]
            out[name] = rec
    finally:
        coder.close()
    return {"row": task["row"], "batch": task["batch"], "batches": task.get("batches"), "images": out}


def _frame_arrays(task: dict, name: str, sha: str, activations: dict | None):
    if activations is not None:
        return activations[name]
    got = load_activations(activation_path(Path(task["act_dir"]), name), sha, task_tensors(task))
    if got is None:
        raise RuntimeError(f"activation cache for {name} vanished or changed during the sweep")
    return got


class _FrameCoder:
    """A per-frame codec: the frame's tensors encoded at once (`encode_many`, as the UE does), each decoded alone."""

    def __init__(self, codec):
        self.codec = codec

    def encode(self, names, arrays) -> list[bytes]:
        return self.codec.encode_many(arrays)

    def decode(self, name, payload, a):
        return self.codec.decode(payload, a.dtype, a.shape, trusted=True)

    def stream_facts(self, payloads) -> dict:
        return {}

    def code(self, sent, arrays) -> tuple[dict, dict]:
        """(record: bytes, times, max abs error[, key, seq]; decoded tensors by name) of one frame."""
        t0 = time.perf_counter()
        payloads = self.encode(sent, [arrays[n] for n in sent])
        rec = {"raw": 0, "enc": 0, "elems": 0, "encode_s": time.perf_counter() - t0, "decode_s": 0.0,
               "max_abs_err": 0.0}
        decoded = {}
        for n, payload in zip(sent, payloads):
            a = arrays[n]
            t1 = time.perf_counter()
            decoded[n] = np.asarray(self.decode(n, payload, a))
            rec["decode_s"] += time.perf_counter() - t1
            rec["raw"] += a.nbytes
            rec["elems"] += a.size
            rec["enc"] += len(payload)
            if not self.codec.lossless and a.dtype.kind == "f" and a.size:
                with np.errstate(all="ignore"):
                    d = np.abs(a - decoded[n])
                rec["max_abs_err"] = max(rec["max_abs_err"], float(np.nanmax(d)) if not np.isnan(d).all() else 0.0)
        rec.update(self.stream_facts(payloads))
        return rec, decoded

    def close(self) -> None:
        pass


class _StreamCoder(_FrameCoder):
    """A sequential codec: one encoder and one decoder for the whole stream, frames coded in order."""

    def __init__(self, codec):
        super().__init__(codec)
        self.enc, self.dec = codec.sequence_encoder(), codec.sequence_decoder()

    def encode(self, names, arrays) -> list[bytes]:
        return self.enc.encode_frame(names, arrays)

    def decode(self, name, payload, a):
        return self.dec.bind(name).decode(payload, a.dtype, a.shape)

    def stream_facts(self, payloads) -> dict:
        from splitinfer.common.codecs.sequence import read_header

        return {"key": bool(self.enc.last_keyframe), "seq": read_header(payloads[0])[1] if payloads else None}

    def close(self) -> None:
        self.enc.close()
        self.dec.close()
