"""The UE process: Part I locally, encode, stream to the network process, receive detections, anchor.

Why a stream with frames in flight: with one request per frame the UE idles during the transfer and
Part II, and the server idles during Part I. On the stream the UE sends frame n+1 while the server still
works on frame n (`in_flight` frames at most), so both halves run at once and throughput approaches that
of the slower half. `in_flight=1` waits for each reply (clean per-frame latency).

Times per frame (all in seconds here, ms in the results): Part I, encode, serialization, transfer (round
trip minus the server's own processing time, so it holds the network and gRPC time), the server's
stages, and end-to-end (frame read -> detections back).

Why frames are kept until answered (`RetryPolicy`): when the network process goes away (crash, restart)
the stream breaks with UNAVAILABLE; the UE reconnects with exponential backoff and sends the frames still
unanswered again, in order, on the new stream. Each frame ends exactly once: answered (one reply, on
the stream it was last sent on) or failed (refused by the server, no reply within its deadline too many
times, or the server unreachable past the reconnect budget), and a failed frame is reported, never dropped.
Every call has a deadline: the set-up, each frame's reply, each unary call, the listing.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splitinfer.common.transport import wire
from splitinfer.common.core.detections import Detection
from splitinfer.common.core.errors import UserError
from splitinfer.common.transport.proto import splitinfer_pb2 as pb

SERVICE = "/splitinfer.v1.SplitInference/"
# Status codes after which the same request may succeed later: the server is gone, restarting, busy or slow.
TRANSIENT = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "ABORTED"})
# gRPC reports a failed certificate check as UNAVAILABLE; these words in its details mean retrying is futile.
TLS_FAILURES = ("handshake failed", "verification check failed", "certificate verify failed")


@dataclass
class RetryPolicy:
    """How hard the UE tries before it reports a frame failed (seconds)."""

    reconnect_s: float = 60.0  # give up when the server stays unreachable this long
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    max_attempts: int = 3  # transient failures one frame may meet before it is reported failed
    frame_timeout_s: float = 120.0  # deadline of one frame's reply (unary: of the call)
    setup_timeout_s: float = 180.0  # deadline of the set-up's answer (the server may build Part II first)

    def delays(self):
        """Backoff delays: exponential with jitter (so restarted UEs do not reconnect in lockstep)."""
        d = self.backoff_initial_s
        while True:
            yield d * random.uniform(0.75, 1.25)
            d = min(d * 2, self.backoff_max_s)


class RpcFailure(Exception):
    """A failed call, classified: `code` (a grpc.StatusCode name), `transient` (worth retrying)."""

    def __init__(self, code: str, details: str, address: str, transient: bool | None = None):
        self.code, self.details, self.address = code, details, address
        self.transient = code in TRANSIENT if transient is None else transient
        super().__init__(self.message)

    @property
    def message(self) -> str:
        if self.code == "UNAVAILABLE":
            return f"server {self.address} unavailable: {self.details}"
        return f"server {self.address} refused: {self.code}: {self.details}"

    def user_error(self) -> UserError:
        return UserError(self.message)


def _failure(exc, address: str, transient: bool | None = None) -> RpcFailure:
    code = exc.code() if hasattr(exc, "code") and callable(exc.code) else None
    details = exc.details() if hasattr(exc, "details") and callable(exc.details) else str(exc)
    return RpcFailure(code.name if code is not None else "UNKNOWN", details or "", address, transient)


def _rpc_error(exc, address: str) -> UserError:
    return _failure(exc, address).user_error()


# Client keepalive (the server permits pings every 10 s) and quick reconnection: gRPC's own reconnect
# backoff grows to 120 s by default, which would sit out a server restart long after it is back.
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


class UEClient:
    """A gRPC connection to the network process (no compression, configurable message limit).

    `credentials`: grpc channel credentials (TLS / mutual TLS, see common/transport/security.py); `token`: bearer
    token sent on every call; `server_name`: the name to expect in the server's certificate when it differs
    from the address's host.
    """

    def __init__(self, address: str, max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES, shaper=None, *,
                 credentials=None, token: str | None = None, server_name: str | None = None,
                 retry: RetryPolicy | None = None):
        import grpc

        from splitinfer.common.transport.security import auth_metadata

        self.address = address
        self.max_message_bytes = int(max_message_bytes)
        self.shaper = shaper  # common.shaper.Shaper: in-process rate/delay emulation of the uplink
        self.retry = retry or RetryPolicy()
        self.metadata = auth_metadata(token)
        options = [("grpc.max_send_message_length", self.max_message_bytes + 4096),
                   ("grpc.max_receive_message_length", 64 * wire.MIB), *CHANNEL_OPTIONS]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        self.secure = credentials is not None
        if credentials is not None:
            self.channel = grpc.secure_channel(address, credentials, options=options,
                                               compression=grpc.Compression.NoCompression)
        else:
            self.channel = grpc.insecure_channel(address, options=options, compression=grpc.Compression.NoCompression)
        self._infer = self.channel.unary_unary(SERVICE + "Infer", request_serializer=None,
                                               response_deserializer=pb.InferReply.FromString)
        self._stream = self.channel.stream_stream(SERVICE + "Stream", request_serializer=None,
                                                  response_deserializer=pb.StreamReply.FromString)
        self._list = self.channel.unary_unary(SERVICE + "ListModels",
                                              request_serializer=pb.ListModelsRequest.SerializeToString,
                                              response_deserializer=pb.ListModelsReply.FromString)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the server answers a call (backoff between tries); UserError with the last reason after
        `timeout` s, or at once when the server refuses (wrong token, ...)."""
        import grpc

        deadline = time.monotonic() + timeout
        delays = self.retry.delays()
        last = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                self._list(pb.ListModelsRequest(), timeout=min(left, 10.0), metadata=self.metadata)
                return
            except grpc.RpcError as exc:
                last = _failure(exc, self.address)
                if not last.transient:
                    raise last.user_error() from None
                if any(m in last.details.lower() for m in TLS_FAILURES):  # a wrong CA or name does not heal
                    raise UserError(f"server {self.address}: TLS handshake failed (check --tls-ca, "
                                    f"--tls-server-name): {last.details}") from None
            time.sleep(max(0.0, min(next(delays), deadline - time.monotonic())))
        why = f": {last.details}" if last is not None else ""
        if last is not None and "socket closed" in last.details.lower():
            why += (" (a server that wants TLS closes plaintext connections: --tls-ca; mutual TLS also needs "
                    "--tls-cert/--tls-key)" if not self.secure else
                    " (a server that wants a client certificate closes the connection: --tls-cert/--tls-key)")
        raise UserError(f"server {self.address} not reachable within {timeout:.0f} s{why}")

    def list_models(self) -> list[pb.ModelInfo]:
        import grpc

        try:
            return list(self._list(pb.ListModelsRequest(), timeout=30, metadata=self.metadata).models)
        except grpc.RpcError as exc:
            raise _rpc_error(exc, self.address) from None

    def call_infer(self, request: bytes, timeout: float | None = None) -> pb.InferReply:
        """One unary call; RpcFailure (classified) when it fails."""
        import grpc

        if self.shaper is not None:
            self.shaper.pace(len(request))
        try:
            return self._infer(request, timeout=timeout or self.retry.frame_timeout_s, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise _failure(exc, self.address) from None

    def infer(self, request: bytes, timeout: float = 120.0) -> pb.InferReply:
        try:
            return self.call_infer(request, timeout)
        except RpcFailure as exc:
            raise exc.user_error() from None

    def open_stream(self, setup: pb.SessionSetup, timeout: float | None = None) -> "StreamSession":
        """A stream with its set-up answered; UserError when it cannot be opened."""
        try:
            return StreamSession(self, setup, timeout)
        except RpcFailure as exc:
            raise exc.user_error() from None

    def close(self) -> None:
        self.channel.close()


class StreamSession:
    """One bidirectional stream: set-up first, then frames; replies in frame order.

    A reader thread takes replies off the stream as they arrive and stamps them, so latencies are
    right even when the caller is busy with Part I of the next frame. Failures come out of `receive`
    as RpcFailure; the set-up's answer and each reply have deadlines.
    """

    _END = object()

    def __init__(self, client: UEClient, setup: pb.SessionSetup, timeout: float | None = None):
        self.client = client
        self._q: queue.Queue = queue.Queue()
        self._q.put(pb.StreamRequest(setup=setup).SerializeToString())
        requests = self._requests()
        if client.shaper is not None:
            requests = client.shaper.wrap(requests, size=len)
        self._call = client._stream(requests, metadata=client.metadata)
        self._results: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="ue-replies", daemon=True)
        self._reader.start()
        try:
            first, _ = self._get(timeout or client.retry.setup_timeout_s, "the session set-up")
        except RpcFailure:
            self.close(cancel=True)
            raise
        if first.WhichOneof("kind") != "session":
            self.close(cancel=True)
            raise UserError(f"server {client.address} answered the set-up with {first.WhichOneof('kind')}")
        self.info: pb.SessionInfo = first.session
        # Chunk below both limits: ours and the server's.
        self.max_message_bytes = min(client.max_message_bytes, int(self.info.max_message_bytes or 1 << 62))

    def _requests(self):
        while True:
            item = self._q.get()
            if item is self._END:
                return
            yield item

    def _read(self) -> None:
        try:
            for reply in self._call:
                self._results.put((reply, time.perf_counter()))
            self._results.put((None, None))
        except Exception as exc:  # grpc.RpcError, cancellation: handed to the caller
            self._results.put((exc, None))

    def _get(self, timeout: float, what: str):
        import grpc

        try:
            reply, t = self._results.get(timeout=timeout)
        except queue.Empty:
            self._call.cancel()
            raise RpcFailure("DEADLINE_EXCEEDED", f"no answer to {what} within {timeout:.0f} s",
                             self.client.address) from None
        if reply is None:
            self._results.put((None, None))  # stays closed for later calls
            raise RpcFailure("UNAVAILABLE", "the server closed the stream early", self.client.address)
        if isinstance(reply, grpc.RpcError):
            self._results.put((reply, None))
            raise _failure(reply, self.client.address)
        if isinstance(reply, Exception):
            self._results.put((reply, None))
            raise RpcFailure("UNKNOWN", f"stream failed: {reply}", self.client.address, transient=True)
        return reply, t

    def send(self, messages) -> None:
        for m in messages:
            self._q.put(m)

    def receive(self, timeout: float | None = None) -> tuple[pb.FrameResult, float]:
        """The next result and the perf_counter time it arrived; RpcFailure when the stream failed."""
        reply, t = self._get(timeout or self.client.retry.frame_timeout_s, "a frame")
        if reply.WhichOneof("kind") != "result":
            raise RpcFailure("INTERNAL", f"expected a frame result, got {reply.WhichOneof('kind')}",
                             self.client.address, transient=False)
        return reply.result, t

    def close(self, cancel: bool = False, timeout: float = 30.0) -> None:
        """End the stream: after the server's last replies (default) or at once (`cancel`)."""
        self._q.put(self._END)
        if cancel:
            self._call.cancel()
        self._reader.join(timeout=timeout)
        if self._reader.is_alive():
            self._call.cancel()
            self._reader.join(timeout=5)


# ----------------------------------------------------------------------------------------------
# Part I


class PartI:
    """Part I of a split, built locally with the split engine (or loaded from a `-partI` file)."""

    def __init__(self, model_path, rank: int | None = None, name: str | None = None, flag: str = "before",
                 device: str = "cpu", threads: int | None = None, part1_path=None, check_model: bool = True):
        from splitinfer.common.split.graph import SplitGraph, file_sha256
        from splitinfer.common.core.onnx_io import load_model
        from splitinfer.common.core.runtime import make_session

        self.model_path = Path(model_path)
        self.model = load_model(self.model_path)
        self.sha256 = file_sha256(self.model_path)
        self.graph = SplitGraph(self.model, source_sha256=self.sha256)
        self.plan = self.graph.plan(rank=rank, name=name, flag=flag)
        if part1_path:
            part1 = load_model(part1_path)
            outs = [o.name for o in part1.graph.output]
            missing = [n for n in self.plan.part1_outputs if n not in outs]
            if missing:
                raise UserError(f"{part1_path}: not Part I of split {self.plan.rank}: outputs {missing} missing")
        else:
            part1, _ = self.graph.extract(self.plan)
        if check_model:  # the files a user gives; Part I cut here inherits the whole model's validity
            import onnx

            for what, m in ((self.model_path, self.model), (part1_path, part1 if part1_path else None)):
                if m is None:
                    continue
                try:
                    onnx.checker.check_model(m)
                except onnx.checker.ValidationError as exc:
                    raise UserError(f"{what}: fails the ONNX checker (-no_check_model skips it): {exc}") from None
        self.session = make_session(part1, device=device, threads=threads)
        self.provider = self.session.provider

    @property
    def sent_names(self) -> list[str]:
        """Tensors a frame carries: the crossing tensors, then Part I's final outputs."""
        return list(self.plan.part1_outputs)

    def run(self, feeds: dict) -> dict:
        wanted = set(self.session.input_names)
        values = self.session.run({k: v for k, v in feeds.items() if k in wanted}, self.plan.part1_outputs)
        return dict(zip(self.plan.part1_outputs, values))


class Anchor:
    """The whole model run locally (CPU or GPU): the reference the split's detections are compared with."""

    def __init__(self, model, device: str, threads: int | None = None):
        from splitinfer.common.core.runtime import make_session

        self.session = make_session(model, device=device, threads=threads)
        self.provider = self.session.provider

    def run(self, feeds: dict) -> dict:
        wanted = set(self.session.input_names)
        return dict(zip(self.session.output_names, self.session.run({k: v for k, v in feeds.items() if k in wanted})))


# ----------------------------------------------------------------------------------------------
# comparing detections


def detections_from_reply(result: pb.FrameResult) -> list[Detection]:
    return [Detection(d.label, d.x1, d.y1, d.x2, d.y2, d.score) for d in result.detections]


# onnxruntime optimises the whole model and the two parts separately (ORT_ENABLE_ALL's NCHWc layout
# changes convolution arithmetic near the cut), so a lossless split can differ from the whole model in the
# last bits of a float32 (measured on NanoDet: up to 1.5e-6 in raw outputs, 6e-8 in scores). Detections
# within these tolerances, same labels in the same order, count as equal "to float rounding".
ROUNDING_BOX_PX = 1e-3
ROUNDING_SCORE = 1e-5


@dataclass
class Agreement:
    """How split detections compare with the anchor's: identical, equal to float rounding, or matched."""

    equal: bool  # bit for bit
    rounding: bool  # same labels in the same order, boxes and scores within float rounding
    matched: int
    anchor_count: int
    split_count: int
    max_score_diff: float
    min_iou: float

    @property
    def close(self) -> bool:
        """Same objects found: every detection matched one-to-one (same label, IoU >= 0.5)."""
        return self.matched == self.anchor_count == self.split_count

    @property
    def verdict(self) -> str:
        return "yes" if self.equal else "rounding" if self.rounding else "close" if self.close else "no"


def _within_rounding(anchor: list[Detection], split: list[Detection]) -> bool:
    if len(anchor) != len(split):
        return False
    for a, s in zip(anchor, split):
        if a.label != s.label or abs(a.score - s.score) > ROUNDING_SCORE:
            return False
        if max(abs(x - y) for x, y in zip(a.box, s.box)) > ROUNDING_BOX_PX:
            return False
    return True


def compare_detections(anchor: list[Detection], split: list[Detection], iou_threshold: float = 0.5) -> Agreement:
    from splitinfer.common.core.detections import box_iou

    equal = anchor == split
    rounding = equal or _within_rounding(anchor, split)
    if not anchor or not split:
        return Agreement(equal, rounding, 0, len(anchor), len(split), 0.0, 1.0 if equal else 0.0)
    ious = box_iou(np.array([d.box for d in anchor]), np.array([d.box for d in split]))
    used, matched, score_diff, min_iou = set(), 0, 0.0, 1.0
    for i, a in enumerate(anchor):  # greedy: anchor detections are best-first
        best, best_iou = None, iou_threshold
        for j, s in enumerate(split):
            if j not in used and s.label == a.label and ious[i, j] >= best_iou:
                best, best_iou = j, ious[i, j]
        if best is not None:
            used.add(best)
            matched += 1
            score_diff = max(score_diff, abs(a.score - split[best].score))
            min_iou = min(min_iou, float(best_iou))
    return Agreement(equal, rounding, matched, len(anchor), len(split), score_diff, min_iou if matched else 0.0)


# ----------------------------------------------------------------------------------------------
# the pipeline


@dataclass
class FrameRecord:
    """Everything measured for one frame (seconds, bytes), and how it ended."""

    source: str
    index: int
    frame_id: int
    preprocess_s: float = 0.0
    part1_s: float = 0.0
    encode_s: float = 0.0
    serialize_s: float = 0.0
    round_trip_s: float = 0.0
    transfer_s: float = 0.0
    end_to_end_s: float = 0.0
    server: dict = field(default_factory=dict)  # server stage -> seconds
    server_provider: str = ""
    raw_bytes: int = 0
    encoded_bytes: int = 0
    tensors: int = 0
    messages: int = 0
    detections: list = field(default_factory=list)
    anchor: dict = field(default_factory=dict)  # device -> (seconds, detections)
    intermediate: dict | None = None  # name -> array, when kept
    status: str = "ok"  # "ok": answered; "failed": see `error`
    error: str = ""
    attempts: int = 0  # times the frame was sent

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class _Pending:
    record: FrameRecord
    t_start: float
    t_sent: float
    feeds: dict | None = None
    meta: dict | None = None
    reply: object = None
    t_reply: float = 0.0
    messages: list | None = None  # kept until answered: sent again after a reconnect
    faults: int = 0  # transient failures met while in flight
    failed: bool = False


class UE:
    """Runs frames through Part I -> codec -> gRPC -> server, keeping up to `in_flight` frames in flight.

    `tolerate_failures`: yield failed frames as records with status "failed" (the device command reports
    them); otherwise the first failed frame raises UserError. Transient failures are retried either way.
    """

    def __init__(self, client: UEClient, part1: PartI, family, codec, model_id: str, *, in_flight: int = 1,
                 unary: bool = False, anchors: dict | None = None, metrics=None, keep_intermediate: bool = False,
                 client_name: str = "splitinfer-device", expect_server_provider: str | None = None,
                 tolerate_failures: bool = False):
        from splitinfer.common.transport.metrics import labels_for

        self.client, self.part1, self.family, self.codec = client, part1, family, codec
        self.model_id = model_id
        self.in_flight = max(1, int(in_flight))
        self.unary = unary
        self.anchors = anchors or {}
        self.metrics = metrics
        self.keep_intermediate = keep_intermediate
        self.tolerate_failures = tolerate_failures
        self.codec_label = str(codec.spec)
        self.labels = labels_for(model_id, part1.plan.rank, self.codec_label)
        if metrics is not None:
            metrics.open_session(self.labels)  # the session's series exist at 0 from set-up on
        plan = part1.plan
        split = pb.SplitPoint(rank=plan.rank, flag="before")
        self.setup = pb.SessionSetup(model_id=model_id, split=split, client_name=client_name,
                                     codec=pb.CodecProfile(spec=str(getattr(codec, "spec", "") or self.codec_label),
                                                           codec_id=int(codec.codec_id),
                                                           params=wire.codec_params_of(codec)))
        self._stream: StreamSession | None = None
        self.info: pb.SessionInfo | None = None
        self.expect_server_provider = expect_server_provider
        self._next_id = 1
        self.pending: deque[_Pending] = deque()
        self.reconnects = 0  # streams opened again after a failure
        self._dead: RpcFailure | UserError | None = None  # set when the server is given up on

    # -- session -------------------------------------------------------------------------------------

    def _check_info(self, info: pb.SessionInfo) -> None:
        if info.model_sha256 and info.model_sha256 != self.part1.sha256:
            raise UserError(f"server model {info.model_id!r} differs from the UE's {self.part1.model_path} "
                            f"(sha256 {info.model_sha256[:12]} vs {self.part1.sha256[:12]})")
        if list(info.crossing) != self.part1.sent_names:
            raise UserError(f"server expects tensors {list(info.crossing)} at split {info.split_rank}, "
                            f"Part I gives {self.part1.sent_names}")
        want = self.expect_server_provider
        if want and info.provider not in (want, "none"):
            raise UserError(f"server runs Part II on {info.provider}, {want} was asked (-PU_partII)")

    def open(self) -> pb.SessionInfo:
        if self.unary:
            return None
        if self._stream is None:
            try:
                self._stream = self._connect()
            except RpcFailure as exc:
                raise exc.user_error() from None
        return self.info

    def _connect(self) -> StreamSession:
        """A stream with its set-up answered, retrying transient failures (and a server at its stream
        limit) with backoff until `retry.reconnect_s` has passed; RpcFailure or UserError otherwise."""
        policy = self.client.retry
        start, delays = time.monotonic(), policy.delays()
        while True:
            try:
                stream = StreamSession(self.client, self.setup)
                break
            except RpcFailure as exc:
                if not (exc.transient or exc.code == "RESOURCE_EXHAUSTED"):
                    raise
                left = policy.reconnect_s - (time.monotonic() - start)
                if left <= 0:
                    raise RpcFailure(exc.code, f"{exc.details} (gave up after {policy.reconnect_s:.0f} s of "
                                               "reconnecting)", exc.address, transient=False) from None
                time.sleep(min(next(delays), left))
        try:
            self._check_info(stream.info)
        except UserError:
            stream.close(cancel=True)
            raise
        self.info = stream.info
        return stream

    def _wait_server(self) -> None:
        """Unary mode: until the server answers again (ListModels), within the reconnect budget."""
        try:
            self.client.wait_ready(self.client.retry.reconnect_s)
        except UserError as exc:
            raise RpcFailure("UNAVAILABLE", f"{exc} (gave up reconnecting)", self.client.address,
                             transient=False) from None

    def close(self, cancel: bool = False) -> None:
        if self._stream is not None:
            self._stream.close(cancel=cancel or bool(self.pending))
            self._stream = None

    # -- failures ------------------------------------------------------------------------------------

    def _mark_failed(self, pend: _Pending, message: str, code: str) -> None:
        if pend.failed:
            return
        pend.failed = True
        pend.messages = None
        pend.record.status, pend.record.error = "failed", message
        pend.record.end_to_end_s = time.perf_counter() - pend.t_start
        if self.metrics is not None:
            self.metrics.count_error(code, self.labels)

    def _give_up(self, exc) -> None:
        """The server is gone past the budget or refuses the session: every unanswered frame fails."""
        self._dead = exc
        message = exc.message if isinstance(exc, RpcFailure) else str(exc)
        code = exc.code if isinstance(exc, RpcFailure) else "FAILED_PRECONDITION"
        for p in self.pending:
            if p.reply is None:
                self._mark_failed(p, message, code)

    def _on_stream_failure(self, exc: RpcFailure) -> None:
        """The stream broke: charge the frames, reconnect, send the unanswered ones again in order."""
        self._stream.close(cancel=True)
        self._stream = None
        waiting = [p for p in self.pending if not p.failed and p.reply is None]
        if exc.transient:
            for p in waiting:
                p.faults += 1
                if p.faults >= self.client.retry.max_attempts:
                    self._mark_failed(p, f"{exc.message} ({p.faults} times)", exc.code)
        elif waiting:  # a refusal answers the oldest unanswered frame (the server replies in order)
            self._mark_failed(waiting[0], exc.message, exc.code)
        if not any(not p.failed and p.reply is None for p in self.pending):
            return  # reconnect lazily, with the next frame
        self._reconnect_and_resend()

    def _reconnect_and_resend(self) -> None:
        try:
            self._stream = self._connect()
        except (RpcFailure, UserError) as exc:
            self._give_up(exc)
            return
        self.reconnects += 1
        for p in self.pending:
            if not p.failed and p.reply is None:
                p.record.attempts += 1
                p.t_sent = time.perf_counter()
                self._stream.send(p.messages)

    def _failed_record(self, pend: _Pending) -> FrameRecord:
        if not self.tolerate_failures:
            raise UserError(pend.record.error)
        return pend.record

    def abandon(self, reason: str) -> list[FrameRecord]:
        """End every frame still in flight (Ctrl-C, a fatal error): answered ones as usual, the rest failed
        with `reason`. The records, in frame order; nothing stays pending."""
        out = []
        while self.pending:
            p = self.pending.popleft()
            if p.reply is not None and not p.failed:
                out.append(self._finish(p))
            else:
                self._mark_failed(p, reason, "CANCELLED")
                out.append(p.record)
        return out

    # -- frames --------------------------------------------------------------------------------------

    def run(self, frames, progress=None):
        """Process (source, index, image_bgr) items; yields FrameRecords in order as frames end."""
        self.open()
        pending = self.pending
        for source, index, image in frames:
            if self._dead is not None:
                while pending:  # the frames that failed with it, first
                    yield self._next_done()
                raise UserError(f"{self._dead} (no more frames sent)")
            pend = self._prepare(source, index, image)
            pending.append(pend)
            self._transmit(pend)
            while len(pending) >= self.in_flight:
                yield self._next_done()
            if progress is not None:
                progress.update(1)
        while pending:
            yield self._next_done()

    def _next_done(self) -> FrameRecord:
        """The oldest frame, once it has ended (answered or failed)."""
        while True:
            pend = self.pending[0]
            if pend.failed:
                self.pending.popleft()
                return self._failed_record(pend)
            if pend.reply is not None:
                self.pending.popleft()
                return self._finish(pend)
            try:
                pend.reply, pend.t_reply = self._stream.receive()
            except RpcFailure as exc:
                self._on_stream_failure(exc)

    def _prepare(self, source: str, index: int, image) -> _Pending:
        """Part I, encode and frame one image; the messages are kept until the frame is answered."""
        t_start = time.perf_counter()
        ts = time.time_ns()
        frame_id = self._next_id
        self._next_id += 1
        rec = FrameRecord(source, index, frame_id)
        feeds, meta = self.family.preprocess(image)
        t0 = time.perf_counter()
        outs = self.part1.run(feeds)
        t1 = time.perf_counter()
        tensors = [wire.encode_tensor(n, outs[n], self.codec) for n in self.part1.sent_names]
        t2 = time.perf_counter()
        kwargs = dict(timestamp_ns=ts, meta_json=wire.meta_to_json(meta))
        if self.unary:
            msgs = wire.frame_messages(frame_id, tensors, setup=self.setup,
                                       max_message_bytes=self.client.max_message_bytes, **kwargs)
        else:
            limit = self._stream.max_message_bytes if self._stream is not None else self.client.max_message_bytes
            msgs = wire.frame_messages(frame_id, tensors, max_message_bytes=limit, **kwargs)
        t3 = time.perf_counter()
        rec.preprocess_s, rec.part1_s, rec.encode_s, rec.serialize_s = t0 - t_start, t1 - t0, t2 - t1, t3 - t2
        rec.raw_bytes = sum(int(np.asarray(a).nbytes) for a in (outs[n] for n in self.part1.sent_names))
        rec.encoded_bytes = sum(len(t.payload) for t in tensors)
        rec.tensors, rec.messages = len(tensors), len(msgs)
        if self.keep_intermediate:
            rec.intermediate = {n: outs[n] for n in self.part1.sent_names}
        return _Pending(rec, t_start, time.perf_counter(), feeds if self.anchors else None, meta, messages=msgs)

    def _transmit(self, pend: _Pending) -> None:
        """Send a prepared frame: on the stream (reconnecting first when it broke), or as unary calls."""
        if self.unary:
            self._transmit_unary(pend)
            return
        if self._stream is None:  # it broke earlier: reconnect; this sends every unanswered frame, this one too
            self._reconnect_and_resend()
            return
        pend.record.attempts += 1
        pend.t_sent = time.perf_counter()
        self._stream.send(pend.messages)

    def _transmit_unary(self, pend: _Pending) -> None:
        while True:
            pend.record.attempts += 1
            pend.t_sent = time.perf_counter()
            try:
                reply = self.client.call_infer(pend.messages[0])
            except RpcFailure as exc:
                if not exc.transient:
                    self._mark_failed(pend, exc.message, exc.code)
                    return
                pend.faults += 1
                if pend.faults >= self.client.retry.max_attempts:
                    self._mark_failed(pend, f"{exc.message} ({pend.faults} times)", exc.code)
                    return
                try:
                    self._wait_server()
                except RpcFailure as gone:
                    self._give_up(gone)
                    return
                continue
            pend.reply, pend.t_reply = reply.result, time.perf_counter()
            pend.messages = None
            if self.info is None:
                self.info = reply.session
                self._check_info(self.info)
            return

    def _finish(self, pend: _Pending) -> FrameRecord:
        result, t_end = pend.reply, pend.t_reply
        pend.messages = None
        rec = pend.record
        if result.frame_id != rec.frame_id:
            raise UserError(f"server answered frame {result.frame_id} where frame {rec.frame_id} was expected")
        tm = result.timings
        rec.server = {"deserialize": tm.deserialize_ms / 1e3, "decode": tm.decode_ms / 1e3,
                      "part2": tm.part2_ms / 1e3, "consolidate": tm.consolidate_ms / 1e3,
                      "postprocess": tm.postprocess_ms / 1e3, "total": tm.total_ms / 1e3}
        rec.server_provider = result.provider
        rec.round_trip_s = t_end - pend.t_sent
        rec.transfer_s = max(0.0, rec.round_trip_s - tm.total_ms / 1e3)
        rec.end_to_end_s = t_end - pend.t_start
        rec.detections = detections_from_reply(result)
        for dev, anchor in self.anchors.items():  # the reference, after the reply: it never delays a frame
            a0 = time.perf_counter()
            out = anchor.run(pend.feeds)
            a1 = time.perf_counter()
            rec.anchor[dev] = (a1 - a0, self.family.postprocess(out, pend.meta))
        if self.metrics is not None:
            self.metrics.observe(self.labels, part1=rec.part1_s, encode=rec.encode_s, serialize=rec.serialize_s,
                                 transfer=rec.transfer_s, end_to_end=rec.end_to_end_s)
            self.metrics.count_frame(self.labels, rec.raw_bytes, rec.encoded_bytes)
        return rec
