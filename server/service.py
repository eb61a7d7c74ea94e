"""The gRPC servicer of the network process: the RPCs only; the work is in session.py.

Why raw-bytes handlers instead of the generated `add_SplitInferenceServicer_to_server`: requests are
parsed by `splitinfer.common.transport.wire` (chunk payloads read in place, see there), and a malformed
request then becomes INVALID_ARGUMENT with a message naming the problem, where a failing protobuf
deserializer inside grpcio would only give a bare INTERNAL. Every refusal is a proper status and the server
keeps serving; an unexpected exception is logged and answered INTERNAL (never a dead worker).

Limits: concurrent streams (`max_streams`, more get RESOURCE_EXHAUSTED at once), work slots for decoding
and Part II (admission.py: bounded queue, deadline), every frame header checked against its split's bounds
before anything is allocated (limits.py), a stream idle deadline (idle.py).

Memory of failed calls: a refused, cancelled or timed-out call keeps no buffer. Its reassembly buffers are
dropped in `finally`, the refusal is raised only after that (outside the `except` block, so the abort does
not chain the caught exception), and the caught exception's traceback is cut: grpcio keeps the exception
of a cancelled stream (`state.rpc_errors`), and its traceback would keep the handler's frame and locals.
A dropped half frame of 1 MiB or more is then trimmed from the allocator's heaps (common/core/allocator.py),
so the process's resident memory falls back at once.
"""

from __future__ import annotations

import logging
import threading
import time

import grpc
from prometheus_client import Gauge

from splitinfer.common.core.errors import UserError
from splitinfer.common.transport import wire
from splitinfer.common.transport.proto import splitinfer_pb2 as pb
from splitinfer.server.admission import Admission
from splitinfer.server.errors import RequestError, invalid, precondition
from splitinfer.server.idle import IdleWatch
from splitinfer.common.core.allocator import release_free_memory
from splitinfer.server.session import Codecs, open_session, process_frame

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SplitInference"].full_name
log = logging.getLogger("splitinfer.server")
REFUSED = (RequestError, wire.WireError, UserError)
RELEASE_BYTES = 1 << 20  # a dropped half frame this large is given back to the system at once


def _time_remaining(context) -> float | None:
    try:
        return context.time_remaining()
    except Exception:  # a context without a deadline API (tests)
        return None


class SplitInferenceService:
    def __init__(self, repository, metrics, max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
                 max_frame_bytes: int = wire.DEFAULT_MAX_FRAME_BYTES, max_streams: int = 16,
                 stream_idle_s: float | None = None, admission: Admission | None = None):
        self.repo = repository
        self.metrics = metrics
        self.max_message_bytes = int(max_message_bytes)
        self.max_frame_bytes = int(max_frame_bytes)
        self.max_streams = int(max_streams)
        self.admission = admission or Admission(slots=2, queue=self.max_streams + 8, wait_s=5.0)
        self.codecs = Codecs()
        self._stream_slots = threading.BoundedSemaphore(self.max_streams)
        registry = getattr(metrics, "registry", None)
        self._active = Gauge("splitinfer_streams_active", "Streams (UE sessions) open now.", registry=registry)
        Gauge("splitinfer_streams_max", "Concurrent streams allowed (--max-streams).",
              registry=registry).set(self.max_streams)
        self._idle = IdleWatch(stream_idle_s, on_cancel=lambda: metrics.count_error("CANCELLED")) \
            if stream_idle_s else None

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "Infer": grpc.unary_unary_rpc_method_handler(
                self.Infer, request_deserializer=None, response_serializer=pb.InferReply.SerializeToString),
            "Stream": grpc.stream_stream_rpc_method_handler(
                self.Stream, request_deserializer=None, response_serializer=pb.StreamReply.SerializeToString),
            "ListModels": grpc.unary_unary_rpc_method_handler(
                self.ListModels, request_deserializer=None, response_serializer=pb.ListModelsReply.SerializeToString),
        })

    def _open(self, setup: pb.SessionSetup):
        sess = open_session(self.repo, self.codecs, setup, self.max_message_bytes, self.max_frame_bytes)
        self.metrics.open_session(sess.labels)  # the session's series exist at 0 from set-up on
        return sess

    # -- answering a problem -------------------------------------------------------------------------

    @staticmethod
    def _caught(exc: BaseException, context) -> BaseException:
        """Called in the `except` block: a bug is logged with its traceback (not the end of a call the client
        cancelled or let time out), then the traceback is cut (it would hold the handler's frames, and their
        buffers, for as long as gRPC keeps the exception)."""
        if not isinstance(exc, (*REFUSED, MemoryError)) and context.is_active():
            log.exception("internal error")
        exc.__traceback__ = None
        return exc

    def _answer(self, context, exc: BaseException, labels: dict | None) -> None:
        """Abort the call with the status `exc` stands for (called outside any `except` block)."""
        if isinstance(exc, (*REFUSED, MemoryError)):
            code = getattr(exc, "code", "RESOURCE_EXHAUSTED" if isinstance(exc, MemoryError) else "INVALID_ARGUMENT")
            text = "the server ran out of memory on this request" if isinstance(exc, MemoryError) else str(exc)
            self.metrics.count_error(code, labels)
            log.info("refused: %s: %s", code, text)
            context.abort(getattr(grpc.StatusCode, code), text[:2000])
        self.metrics.count_error("INTERNAL", labels)
        context.abort(grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}: {str(exc)[:500]})")

    # -- RPCs ----------------------------------------------------------------------------------------

    def Infer(self, request: bytes, context) -> pb.InferReply:
        seen: dict = {}  # the session's metric labels, once known
        try:
            return self._infer(request, context, seen)
        except Exception as exc:
            problem = self._caught(exc, context)
        self._answer(context, problem, seen.get("labels"))

    def _infer(self, request: bytes, context, seen: dict) -> pb.InferReply:
        t0 = time.perf_counter()
        setup, part = wire.parse_infer_request(request)
        if part.header.part_count != 1:
            raise invalid(f"frame {part.header.frame_id}: a unary Infer carries one part, got part_count "
                          f"{part.header.part_count} (use Stream for chunked frames)")
        with self.admission.slot("Infer", _time_remaining(context), key=getattr(context, "peer", str)()):
            sess = self._open(setup)
            seen["labels"] = sess.labels
            try:  # one frame, one session: a sequential codec's frame must be a keyframe here
                frame = sess.assembler().add(part)
                result = process_frame(sess, frame, self.codecs, self.metrics, time.perf_counter() - t0)
            finally:
                sess.close()
        return pb.InferReply(session=sess.info, result=result)

    def Stream(self, request_iterator, context):
        if not self._stream_slots.acquire(blocking=False):
            self._answer(context, RequestError(
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
        state = _StreamState()
        problem = None
        try:
            for reply in self._stream_replies(request_iterator, context, watch, state):
                yield reply
        except Exception as exc:
            problem = self._caught(exc, context)  # grpcio keeps a cancelled stream's exception: keep no frame with it
        finally:
            state.release()
        if problem is None:
            return
        if isinstance(problem, REFUSED) or context.is_active():
            self._answer(context, problem, state.labels)

    def _stream_replies(self, request_iterator, context, watch, state: "_StreamState"):
        idle = self._idle
        for raw in request_iterator:
            t0 = time.perf_counter()
            kind, obj = wire.parse_stream_request(raw)
            raw = None
            if kind == "setup":
                if state.sess is not None:
                    raise precondition("session already set up on this stream (send set-up once, first)")
                if watch is not None:
                    idle.busy(watch)
                with self.admission.slot("session set-up", _time_remaining(context),
                                         key=getattr(context, "peer", str)()):
                    state.open(self._open(obj))
                yield pb.StreamReply(session=state.sess.info)
                if watch is not None:
                    idle.touch(watch)
                continue
            if state.sess is None:
                raise precondition(f"frame {obj.header.frame_id} before the session set-up "
                                   "(the first stream message must be `setup`)")
            frame = state.assembler.add(obj)
            obj = None
            state.deserialize_s += time.perf_counter() - t0
            if frame is None:
                if watch is not None:
                    idle.touch(watch)
                continue
            if watch is not None:
                idle.busy(watch)
            with self.admission.slot(f"frame {frame.frame_id}", _time_remaining(context),
                                     key=getattr(context, "peer", str)()):
                result = process_frame(state.sess, frame, self.codecs, self.metrics, state.deserialize_s)
            frame = None
            state.deserialize_s = 0.0
            if watch is not None:
                idle.touch(watch)
            yield pb.StreamReply(result=result)
        if state.assembler is not None and state.assembler.incomplete:
            raise invalid(f"stream ended with {state.assembler.incomplete}")

    def ListModels(self, request: bytes, context) -> pb.ListModelsReply:
        reply = pb.ListModelsReply()
        for model_id, entry in self.repo.models.items():
            count = entry.graph.num_nodes if entry.graph is not None else 0
            reply.models.add(model_id=model_id, family=entry.family.name, node_count=count)
        return reply


class _StreamState:
    """What one stream holds: its session and the frame being reassembled; `release()` drops the buffers."""

    def __init__(self):
        self.sess = None
        self.assembler = None
        self.labels = None
        self.deserialize_s = 0.0

    def open(self, sess) -> None:
        self.sess, self.labels = sess, sess.labels
        self.assembler = sess.assembler()

    def release(self) -> None:
        dropped = self.assembler.discard() if self.assembler is not None else 0
        self.assembler = None
        if self.sess is not None:
            self.sess.close()  # a sequential codec's references go with the session
        self.sess = None
        if dropped >= RELEASE_BYTES:
            release_free_memory()  # the half frame's buffers leave the process now, not at some later reuse
