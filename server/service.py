"""The gRPC servicer of the network process: decode, Part II, consolidation, post-processing, reply.

Why raw-bytes handlers instead of the generated `add_SplitInferenceServicer_to_server`: requests are
parsed by `splitinfer.common.transport.wire` (chunk payloads read in place, see there), and a malformed request
then becomes INVALID_ARGUMENT with a message naming the problem, where a failing protobuf deserializer
inside grpcio would only give a bare INTERNAL. Replies are small and use protobuf as usual. Every refusal
is a proper status and the server keeps serving; an unexpected exception is logged and answered INTERNAL
(never a dead worker). Limits: concurrent streams (`max_streams`, more get RESOURCE_EXHAUSTED), bytes per
frame (the server's limit, tightened per session to what the split's tensors can need) and a stream idle
deadline (a stream silent for `stream_idle_s` is cancelled, so a stalled client cannot hold a slot forever).
"""

from __future__ import annotations

import logging
import threading
import time

import grpc
import numpy as np
from prometheus_client import Gauge

from splitinfer.common.transport import wire
from splitinfer.common.core.errors import UserError
from splitinfer.common.transport.metrics import labels_for
from splitinfer.common.transport.proto import splitinfer_pb2 as pb
from splitinfer.server.errors import RequestError, invalid, precondition

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SplitInference"].full_name
log = logging.getLogger("splitinfer.server")


def _ms(seconds: float) -> float:
    return seconds * 1e3


class _Session:
    """A resolved set-up: the Part II to run, the session's codec and its metric labels."""

    def __init__(self, part2, codec, max_message_bytes: int, max_frame_bytes: int):
        self.part2 = part2
        self.codec = codec
        self.labels = labels_for(part2.model_id, part2.plan.rank, str(codec.spec))
        plan = part2.plan
        self.max_frame_bytes = _frame_limit(part2.expected, max_frame_bytes)
        self.info = pb.SessionInfo(model_id=part2.model_id, family=part2.family.name, split_rank=plan.rank,
                                   crossing=list(part2.expected), provider=part2.provider,
                                   max_message_bytes=max_message_bytes, model_sha256=part2.sha256,
                                   crossing_count=len(plan.crossing))


def _frame_limit(expected: dict, server_limit: int) -> int:
    """Bytes a frame of this split may carry: twice its raw tensors plus 1 MiB (room for any codec's
    overhead on incompressible data), within the server's limit; the server's limit when a shape is dynamic."""
    total = 0
    for info in expected.values():
        shape = getattr(info, "shape", None)
        if not info.dtype or shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
            return server_limit
        n = np.dtype(info.dtype).itemsize
        for d in shape:
            n *= d
        total += n
    return min(server_limit, 2 * total + wire.MIB)


class _IdleWatch:
    """Cancels streams that waited `idle_s` seconds for their client (one thread for all streams); the time
    the server itself works on a stream's set-up or frame does not count."""

    def __init__(self, idle_s: float, on_cancel=None):
        self.idle_s = float(idle_s)
        self.on_cancel = on_cancel
        self._streams: dict[int, list] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, context) -> int:
        key = id(context)
        with self._lock:
            self._streams[key] = [context, time.monotonic()]
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="idle-watch", daemon=True)
                self._thread.start()
        return key

    def touch(self, key: int) -> None:
        """The stream now waits for its client."""
        entry = self._streams.get(key)
        if entry is not None:
            entry[1] = time.monotonic()

    def busy(self, key: int) -> None:
        """The server works on the stream (not idle, however long it takes)."""
        entry = self._streams.get(key)
        if entry is not None:
            entry[1] = None

    def remove(self, key: int) -> None:
        with self._lock:
            self._streams.pop(key, None)

    def _loop(self) -> None:
        while True:
            time.sleep(min(1.0, self.idle_s / 4))
            now = time.monotonic()
            with self._lock:
                stale = [k for k, (_, t) in self._streams.items() if t is not None and now - t > self.idle_s]
                contexts = [self._streams.pop(k)[0] for k in stale]
            for ctx in contexts:
                log.warning("stream idle for more than %.0f s: cancelled", self.idle_s)
                ctx.cancel()
                if self.on_cancel is not None:
                    self.on_cancel()


class SplitInferenceService:
    def __init__(self, repository, metrics, max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
                 max_frame_bytes: int = wire.DEFAULT_MAX_FRAME_BYTES, max_streams: int = 16,
                 stream_idle_s: float | None = None):
        self.repo = repository
        self.metrics = metrics
        self.max_message_bytes = int(max_message_bytes)
        self.max_frame_bytes = int(max_frame_bytes)
        self.max_streams = int(max_streams)
        self._stream_slots = threading.BoundedSemaphore(self.max_streams)
        registry = getattr(metrics, "registry", None)
        self._active = Gauge("splitinfer_streams_active", "Streams (UE sessions) open now.", registry=registry)
        Gauge("splitinfer_streams_max", "Concurrent streams allowed (--max-streams).",
              registry=registry).set(self.max_streams)
        self._idle = _IdleWatch(stream_idle_s, on_cancel=lambda: metrics.count_error("CANCELLED")) \
            if stream_idle_s else None
        self._codecs: dict[str, object] = {}
        self._codec_lock = threading.Lock()

    # -- registration --------------------------------------------------------------------------------

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "Infer": grpc.unary_unary_rpc_method_handler(
                self.Infer, request_deserializer=None, response_serializer=pb.InferReply.SerializeToString),
            "Stream": grpc.stream_stream_rpc_method_handler(
                self.Stream, request_deserializer=None, response_serializer=pb.StreamReply.SerializeToString),
            "ListModels": grpc.unary_unary_rpc_method_handler(
                self.ListModels, request_deserializer=None, response_serializer=pb.ListModelsReply.SerializeToString),
        })

    # -- set-up --------------------------------------------------------------------------------------

    def _codec(self, spec: str):
        from splitinfer.common.codecs import get_codec

        with self._codec_lock:
            codec = self._codecs.get(spec)
        if codec is None:
            if len(spec) > 64:
                raise invalid(f"codec spec of {len(spec)} characters is too long")
            try:
                codec = get_codec(spec)
            except UserError as exc:
                raise invalid(f"codec {spec!r}: {exc}") from None
            codec.warm_up()  # e.g. NNC's decoder helper processes, before the first frame waits on them
            with self._codec_lock:
                if len(self._codecs) < 256:
                    self._codecs[spec] = codec
        return codec

    def _open(self, setup: pb.SessionSetup) -> _Session:
        if not setup.model_id:
            raise invalid("session set-up names no model id")
        self.repo.get(setup.model_id)  # NOT_FOUND before anything else
        point = setup.split.WhichOneof("point")
        if point is None:
            raise invalid("session set-up names no split point (rank or node)")
        flag = setup.split.flag or "before"
        if flag not in ("before", "after"):
            raise invalid(f"split flag {flag[:40]!r} is neither 'before' nor 'after'")
        if point == "rank":
            part2 = self.repo.part2(setup.model_id, rank=int(setup.split.rank), flag=flag)
        else:
            part2 = self.repo.part2(setup.model_id, name=setup.split.node, flag=flag)
        spec = setup.codec.spec or str(setup.codec.codec_id)
        sess = _Session(part2, self._codec(spec), self.max_message_bytes, self.max_frame_bytes)
        self.metrics.open_session(sess.labels)  # the session's series exist at 0 from set-up on
        return sess

    # -- one frame -----------------------------------------------------------------------------------

    def _check_frame(self, sess: _Session, frame: wire.Frame) -> None:
        expected = sess.part2.expected
        got = [t.name for t in frame.tensors]
        missing = [n for n in expected if n not in got]
        extra = [n for n in got if n not in expected]
        if missing or extra:
            raise invalid(f"frame {frame.frame_id}: tensors do not match split {sess.part2.plan.rank} of "
                          f"{sess.part2.model_id!r}: missing {missing[:8]}, unexpected {[e[:80] for e in extra[:8]]}")
        for t in frame.tensors:
            info = expected[t.name]
            if info.dtype and t.dtype != info.dtype:
                raise invalid(f"frame {frame.frame_id}: tensor {t.name!r} has dtype {t.dtype}, Part II expects {info.dtype}")
            if info.shape is not None:
                ok = len(info.shape) == len(t.shape) and all(
                    not isinstance(e, int) or e == g for e, g in zip(info.shape, t.shape))
                if not ok:
                    raise invalid(f"frame {frame.frame_id}: tensor {t.name!r} has shape {list(t.shape)}, "
                                  f"Part II expects {info.shape}")

    def _process(self, sess: _Session, frame: wire.Frame, deserialize_s: float) -> pb.FrameResult:
        from splitinfer.common.split.graph import consolidate

        p2 = sess.part2
        plan = p2.plan
        self._check_frame(sess, frame)
        meta = wire.meta_from_json(frame.meta_json)
        t0 = time.perf_counter()
        arrays = {}
        for t in frame.tensors:
            try:
                codec = sess.codec if t.codec_id == sess.codec.codec_id else self._codec(str(t.codec_id))
            except RequestError as exc:
                raise RequestError(exc.code, f"frame {frame.frame_id}, tensor {t.name!r}: {exc}") from None
            try:
                arrays[t.name] = wire.decode_tensor(t, codec, max_raw_bytes=4 * self.max_frame_bytes)
            except wire.WireError as exc:
                raise type(exc)(f"frame {frame.frame_id}: {exc}") from None
        t1 = time.perf_counter()
        out2 = {}
        if p2.session is not None:
            try:
                values = p2.session.run({n: arrays[n] for n in plan.part2_inputs})
            except Exception as exc:  # onnxruntime errors: the frame's values broke Part II
                raise invalid(f"frame {frame.frame_id}: Part II failed on the frame's tensors ({type(exc).__name__}: "
                              f"{str(exc)[:300]})") from None
            out2 = dict(zip(p2.session.output_names, values))
        t2 = time.perf_counter()
        outputs = dict(zip([n for n, _ in plan.consolidation], consolidate(plan, arrays, out2)))
        t3 = time.perf_counter()
        try:
            dets = p2.family.postprocess(outputs, meta)
        except (UserError, KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            raise invalid(f"frame {frame.frame_id}: post-processing failed (check the frame meta): "
                          f"{type(exc).__name__}: {str(exc)[:300]}") from None
        t4 = time.perf_counter()
        raw = sum(int(np.asarray(a).nbytes) for a in arrays.values())
        enc = frame.encoded_bytes
        timings = pb.ServerTimings(deserialize_ms=_ms(deserialize_s), decode_ms=_ms(t1 - t0), part2_ms=_ms(t2 - t1),
                                   consolidate_ms=_ms(t3 - t2), postprocess_ms=_ms(t4 - t3),
                                   total_ms=_ms(deserialize_s + t4 - t0))
        self.metrics.observe(sess.labels, deserialize=deserialize_s, decode=t1 - t0, part2=t2 - t1,
                             consolidate=t3 - t2, postprocess=t4 - t3)
        self.metrics.count_frame(sess.labels, raw, enc)
        return pb.FrameResult(
            frame_id=frame.frame_id, timestamp_ns=frame.timestamp_ns, timings=timings, provider=p2.provider,
            encoded_bytes=enc, raw_bytes=raw,
            detections=[pb.Detection(label=d.label, x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2, score=d.score) for d in dets],
        )

    def _refuse(self, context, exc: Exception, labels: dict | None) -> None:
        code = getattr(exc, "code", "INVALID_ARGUMENT")
        self.metrics.count_error(code, labels)
        log.info("refused: %s: %s", code, exc)
        context.abort(getattr(grpc.StatusCode, code), str(exc)[:2000])

    def _fail(self, context, exc: BaseException, labels: dict | None) -> None:
        """An exception nobody expected: logged with its traceback, answered INTERNAL; the server goes on."""
        if isinstance(exc, MemoryError):
            self._refuse(context, RequestError("RESOURCE_EXHAUSTED", "the server ran out of memory on this request"),
                         labels)
        self.metrics.count_error("INTERNAL", labels)
        log.exception("internal error")
        context.abort(grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}: {str(exc)[:500]})")

    # -- RPCs ----------------------------------------------------------------------------------------

    def Infer(self, request: bytes, context) -> pb.InferReply:
        sess = None
        try:
            t0 = time.perf_counter()
            setup, part = wire.parse_infer_request(request)
            if part.header.part_count != 1:
                raise invalid(f"frame {part.header.frame_id}: a unary Infer carries one part, got part_count "
                              f"{part.header.part_count} (use Stream for chunked frames)")
            sess = self._open(setup)
            frame = wire.FrameAssembler(sess.max_frame_bytes).add(part)
            result = self._process(sess, frame, time.perf_counter() - t0)
            return pb.InferReply(session=sess.info, result=result)
        except (RequestError, wire.WireError, UserError) as exc:
            self._refuse(context, exc, sess.labels if sess else None)
        except Exception as exc:  # a bug: answer INTERNAL, keep serving
            self._fail(context, exc, sess.labels if sess else None)

    def Stream(self, request_iterator, context):
        if not self._stream_slots.acquire(blocking=False):
            self._refuse(context, RequestError(
                "RESOURCE_EXHAUSTED", f"the server already serves its limit of {self.max_streams} concurrent "
                                      "streams (serve --max-streams); retry later"), None)
        watch = self._idle.add(context) if self._idle else None
        self._active.inc()
        try:
            yield from self._stream(request_iterator, context, watch)
        finally:
            self._active.dec()
            if watch is not None:
                self._idle.remove(watch)
            self._stream_slots.release()

    def _stream(self, request_iterator, context, watch):
        sess = None
        assembler = wire.FrameAssembler(self.max_frame_bytes)
        deserialize_s = 0.0
        try:
            for raw in request_iterator:
                t0 = time.perf_counter()
                kind, obj = wire.parse_stream_request(raw)
                if kind == "setup":
                    if sess is not None:
                        raise precondition("session already set up on this stream (send set-up once, first)")
                    if watch is not None:
                        self._idle.busy(watch)
                    sess = self._open(obj)
                    assembler.max_frame_bytes = sess.max_frame_bytes
                    yield pb.StreamReply(session=sess.info)
                    if watch is not None:
                        self._idle.touch(watch)
                    continue
                if sess is None:
                    raise precondition(f"frame {obj.header.frame_id} before the session set-up "
                                       "(the first stream message must be `setup`)")
                frame = assembler.add(obj)
                deserialize_s += time.perf_counter() - t0
                if frame is None:
                    if watch is not None:
                        self._idle.touch(watch)
                    continue
                if watch is not None:
                    self._idle.busy(watch)
                result = self._process(sess, frame, deserialize_s)
                deserialize_s = 0.0
                if watch is not None:
                    self._idle.touch(watch)
                yield pb.StreamReply(result=result)
            if assembler.incomplete:
                raise invalid(f"stream ended with {assembler.incomplete}")
        except (RequestError, wire.WireError, UserError) as exc:
            self._refuse(context, exc, sess.labels if sess else None)
        except Exception as exc:  # a bug: answer INTERNAL, keep serving
            if context.is_active():
                self._fail(context, exc, sess.labels if sess else None)

    def ListModels(self, request: bytes, context) -> pb.ListModelsReply:
        reply = pb.ListModelsReply()
        for model_id, entry in self.repo.models.items():
            count = entry.graph.num_nodes if entry.graph is not None else 0
            reply.models.add(model_id=model_id, family=entry.family.name, node_count=count)
        return reply

