"""A UE session on the network process: set-up resolved into a Part II and a codec, and one frame processed.

Why apart from the servicer: `service.py` only maps RPCs onto these functions and statuses (like gRPC's
route_guide servicer), so the logic is testable without gRPC. Terms:
- `ResolvedSetup`: a UE session's set-up resolved (Part II, the session's codec, metric labels, the frame limit and the
  `SplitBounds` every frame header is checked against before anything is allocated, see limits.py).
- `Codecs`: codec objects by spec, made once (an NNC codec starts its decoder helper processes then).
- `process_frame`: clean meta, decode each tensor within its bound, run Part II, consolidate, post-process.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.common.transport import wire
from splitinfer.common.transport.metrics import labels_for
from splitinfer.common.transport.proto import splitinfer_pb2 as pb
from splitinfer.server.errors import RequestError, invalid
from splitinfer.server.meta import clean_meta

MAX_CODEC_SPEC = 64
MAX_CODECS = 256


def _ms(seconds: float) -> float:
    return seconds * 1e3


class Codecs:
    """Codec objects by spec, made and warmed up once; at most MAX_CODECS are kept."""

    def __init__(self):
        self._codecs: dict[str, object] = {}
        self._lock = threading.Lock()

    def get(self, spec: str):
        from splitinfer.common.codecs import get_codec

        with self._lock:
            codec = self._codecs.get(spec)
        if codec is not None:
            return codec
        if len(spec) > MAX_CODEC_SPEC:
            raise invalid(f"codec spec of {len(spec)} characters is too long")
        if not spec.isascii() or not spec.isprintable():
            raise invalid(f"codec spec {spec[:64]!r} is not printable ASCII")
        try:
            codec = get_codec(spec)
        except (UserError, ValueError, TypeError) as exc:  # a registry that trips on odd specs is still a refusal
            raise invalid(f"codec {spec!r}: {exc}") from None
        codec.warm_up()  # e.g. NNC's decoder helper processes, before the first frame waits on them
        with self._lock:
            if len(self._codecs) < MAX_CODECS:
                self._codecs[spec] = codec
        return codec


class ResolvedSetup:
    """A resolved set-up: the Part II to run, the session's codec, its metric labels and its bounds."""

    def __init__(self, part2, codec, max_message_bytes: int, max_frame_bytes: int):
        self.part2 = part2
        self.codec = codec
        self.sequence = codec.sequence_decoder()  # this session's decoder state (sequential codecs)
        self.bounds = part2.bounds
        self.labels = labels_for(part2.model_id, part2.plan.rank, str(codec.spec))
        self.max_frame_bytes = min(int(max_frame_bytes), self.bounds.frame_bytes)
        plan = part2.plan
        self.info = pb.SessionInfo(model_id=part2.model_id, family=part2.family.name, split_rank=plan.rank,
                                   crossing=list(part2.expected), provider=part2.provider,
                                   max_message_bytes=max_message_bytes, model_sha256=part2.sha256,
                                   crossing_count=len(plan.crossing))

    def check_header(self, fp) -> dict:
        """Part 0 of a frame: tensor headers within this split's bounds, meta clean; before any allocation.
        Returns the clean meta, which the assembled frame carries (`Frame.checked`) to `process_frame`."""
        self.bounds.check(fp)
        return clean_meta(fp.meta_json, fp.frame_id)

    def close(self) -> None:
        """Free the session's decoder state (a sequential codec's references and decoder contexts)."""
        self.sequence.close()

    def assembler(self) -> wire.FrameAssembler:
        """A frame assembler that checks each frame's header (`check_header`) before allocating."""
        return wire.FrameAssembler(self.max_frame_bytes, check_header=self.check_header)


def check_codec_profile(profile: pb.CodecProfile, codec) -> None:
    """The set-up's codec id and parameters, where sent, must say what its spec resolves to."""
    if profile.spec and profile.codec_id and profile.codec_id != codec.codec_id:
        raise invalid(f"set-up codec: spec {profile.spec[:40]!r} is codec id {codec.codec_id}, "
                      f"the set-up says id {profile.codec_id}")
    if profile.params and dict(profile.params) != wire.codec_params_of(codec):
        raise invalid(f"set-up codec: spec {codec.spec!r} has parameters {wire.codec_params_of(codec)}, "
                      f"the set-up says {dict(list(profile.params.items())[:8])}")


def check_tensor_params(t, codec, frame_id) -> None:
    """A tensor's codec parameters, where sent, must be its codec's (a header that lies is refused)."""
    if t.codec_params and dict(t.codec_params) != wire.codec_params_of(codec):
        raise invalid(f"frame {frame_id}, tensor {t.name!r}: codec parameters {dict(list(t.codec_params.items())[:8])} "
                      f"are not those of codec {codec.spec!r} ({wire.codec_params_of(codec)})")


def open_session(repo, codecs: Codecs, setup: pb.SessionSetup, max_message_bytes: int,
                 max_frame_bytes: int) -> ResolvedSetup:
    """The ResolvedSetup a set-up asks for: NOT_FOUND for an unknown model, INVALID_ARGUMENT for a bad split/codec."""
    if not setup.model_id:
        raise invalid("session set-up names no model id")
    repo.get(setup.model_id)  # NOT_FOUND before anything else
    point = setup.split.WhichOneof("point")
    if point is None:
        raise invalid("session set-up names no split point (rank or node)")
    flag = setup.split.flag or "before"
    if flag not in ("before", "after"):
        raise invalid(f"split flag {flag[:40]!r} is neither 'before' nor 'after'")
    spec = setup.codec.spec or str(setup.codec.codec_id)
    codec = codecs.get(spec)  # a bad codec is refused before a Part II is built
    check_codec_profile(setup.codec, codec)
    if point == "rank":
        part2 = repo.part2(setup.model_id, rank=int(setup.split.rank), flag=flag)
    else:
        part2 = repo.part2(setup.model_id, name=setup.split.node, flag=flag)
    return ResolvedSetup(part2, codec, max_message_bytes, max_frame_bytes)


def decode_frame(sess: ResolvedSetup, frame: wire.Frame, codecs: Codecs) -> dict:
    """Each tensor decoded by its codec, never past its bound."""
    arrays = {}
    for t in frame.tensors:
        try:
            own = t.codec_id == sess.codec.codec_id
            codec = sess.codec if own else codecs.get(str(t.codec_id))
        except RequestError as exc:
            raise RequestError(exc.code, f"frame {frame.frame_id}, tensor {t.name!r}: {exc}") from None
        check_tensor_params(t, codec, frame.frame_id)
        bound = sess.bounds.tensors[t.name]
        decoder = sess.sequence.bind(t.name) if own else codec  # the session's state for its own codec
        try:
            arrays[t.name] = wire.decode_tensor(t, decoder, max_raw_bytes=bound.max_raw_bytes)
        except wire.WireError as exc:
            raise exc.within(f"frame {frame.frame_id}") from None
    return arrays


def process_frame(sess: ResolvedSetup, frame: wire.Frame, codecs: Codecs, metrics,
                  deserialize_s: float) -> pb.FrameResult:
    """Decode, Part II, consolidation and post-processing of one complete frame, timed and counted."""
    clock = _Clock()
    meta = frame.checked  # cleaned once, at part 0, by ResolvedSetup.check_header
    arrays = clock.step("decode", decode_frame, sess, frame, codecs)
    out2 = clock.step("part2", run_part2, sess.part2, arrays, frame.frame_id)
    outputs = clock.step("consolidate", consolidate_outputs, sess.part2.plan, arrays, out2)
    dets = clock.step("postprocess", postprocess, sess.part2.family, outputs, meta, frame.frame_id)
    raw = sum(int(np.asarray(a).nbytes) for a in arrays.values())
    metrics.observe(sess.labels, deserialize=deserialize_s, **clock.seconds)
    metrics.count_frame(sess.labels, raw, frame.encoded_bytes, keyframe=sess.sequence.last_keyframe)
    return frame_result(frame, sess.part2.provider, dets, raw, clock.timings(deserialize_s))


class _Clock:
    """Seconds spent in each named step of one frame."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def step(self, name: str, fn, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds[name] = time.perf_counter() - t0

    def timings(self, deserialize_s: float) -> pb.ServerTimings:
        s = self.seconds
        return pb.ServerTimings(deserialize_ms=_ms(deserialize_s), decode_ms=_ms(s["decode"]),
                                part2_ms=_ms(s["part2"]), consolidate_ms=_ms(s["consolidate"]),
                                postprocess_ms=_ms(s["postprocess"]), total_ms=_ms(deserialize_s + sum(s.values())))


def run_part2(p2, arrays: dict, frame_id: int) -> dict:
    """Part II on the frame's decoded tensors (no session: Part I already made every output)."""
    if p2.session is None:
        return {}
    try:
        values = p2.session.run({n: arrays[n] for n in p2.plan.part2_inputs})
    except Exception as exc:  # onnxruntime errors: the frame's values broke Part II
        raise invalid(f"frame {frame_id}: Part II failed on the frame's tensors ({type(exc).__name__}: "
                      f"{str(exc)[:300]})") from None
    return dict(zip(p2.session.output_names, values))


def consolidate_outputs(plan, arrays: dict, out2: dict) -> dict:
    """The whole model's outputs, from what crossed and what Part II made (split engine's consolidation)."""
    from splitinfer.common.split.consolidate import consolidated_outputs

    return consolidated_outputs(plan, arrays, out2)


def postprocess(family, outputs: dict, meta: dict, frame_id: int) -> list:
    """The family's post-processing; a failure caused by the frame's values is the client's INVALID_ARGUMENT."""
    try:
        return family.postprocess(outputs, meta, meta.get("score_threshold"))  # None: the family's own
    except (UserError, KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise invalid(f"frame {frame_id}: post-processing failed on the frame's tensors: "
                      f"{type(exc).__name__}: {str(exc)[:300]}") from None


def frame_result(frame: wire.Frame, provider: str, dets, raw: int, timings: pb.ServerTimings) -> pb.FrameResult:
    """The reply to one frame: detections, the server's timings and the provider that really ran Part II."""
    return pb.FrameResult(
        frame_id=frame.frame_id, timestamp_ns=frame.timestamp_ns, timings=timings, provider=provider,
        encoded_bytes=frame.encoded_bytes, raw_bytes=raw,
        detections=[pb.Detection(label=d.label, x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2, score=d.score) for d in dets],
    )
