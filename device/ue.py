"""The UE process: Part I locally, encode, stream to the network process, receive detections, anchor.

Why a stream with frames in flight: with one request per frame the UE idles during the transfer and
Part II, and the server idles during Part I. On the stream the UE sends frame n+1 while the server still
works on frame n (`in_flight` frames at most), so both halves run at once and throughput approaches that
of the slower half. `in_flight=1` waits for each reply (clean per-frame latency).

Times per frame (all in seconds here, ms in the results): Part I, encode, serialization, transfer (round
trip minus the server's own processing time, so it holds the network and gRPC time), the server's
stages, and end-to-end (frame read -> detections back).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splitinfer.common import wire
from splitinfer.common.detections import Detection
from splitinfer.common.errors import UserError
from splitinfer.common.proto import splitinfer_pb2 as pb

SERVICE = "/splitinfer.v1.SplitInference/"


def _rpc_error(exc, address: str) -> UserError:
    import grpc

    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        return UserError(f"server {address} unavailable: {details}")
    return UserError(f"server {address} refused: {code.name if code else 'error'}: {details}")


class UEClient:
    """A gRPC connection to the network process (no compression, configurable message limit)."""

    def __init__(self, address: str, max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES, shaper=None):
        import grpc

        self.address = address
        self.max_message_bytes = int(max_message_bytes)
        self.shaper = shaper  # common.shaper.Shaper: in-process rate/delay emulation of the uplink
        options = [("grpc.max_send_message_length", self.max_message_bytes + 4096),
                   ("grpc.max_receive_message_length", 64 * wire.MIB)]
        self.channel = grpc.insecure_channel(address, options=options, compression=grpc.Compression.NoCompression)
        self._infer = self.channel.unary_unary(SERVICE + "Infer", request_serializer=None,
                                               response_deserializer=pb.InferReply.FromString)
        self._stream = self.channel.stream_stream(SERVICE + "Stream", request_serializer=None,
                                                  response_deserializer=pb.StreamReply.FromString)
        self._list = self.channel.unary_unary(SERVICE + "ListModels",
                                              request_serializer=pb.ListModelsRequest.SerializeToString,
                                              response_deserializer=pb.ListModelsReply.FromString)

    def wait_ready(self, timeout: float = 30.0) -> None:
        import grpc

        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise UserError(f"server {self.address} not reachable within {timeout:.0f} s") from None

    def list_models(self) -> list[pb.ModelInfo]:
        import grpc

        try:
            return list(self._list(pb.ListModelsRequest(), timeout=30).models)
        except grpc.RpcError as exc:
            raise _rpc_error(exc, self.address) from None

    def infer(self, request: bytes, timeout: float = 120.0) -> pb.InferReply:
        import grpc

        if self.shaper is not None:
            self.shaper.pace(len(request))
        try:
            return self._infer(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise _rpc_error(exc, self.address) from None

    def open_stream(self, setup: pb.SessionSetup, timeout: float | None = None) -> "StreamSession":
        return StreamSession(self, setup, timeout)

    def close(self) -> None:
        self.channel.close()


class StreamSession:
    """One bidirectional stream: set-up first, then frames; replies in frame order.

    A reader thread takes replies off the stream as they arrive and stamps them, so latencies are
    right even when the caller is busy with Part I of the next frame.
    """

    _END = object()

    def __init__(self, client: UEClient, setup: pb.SessionSetup, timeout: float | None = None):
        import grpc

        self.client = client
        self._q: queue.Queue = queue.Queue()
        self._q.put(pb.StreamRequest(setup=setup).SerializeToString())
        requests = self._requests()
        if client.shaper is not None:
            requests = client.shaper.wrap(requests, size=len)
        self._replies = client._stream(requests, timeout=timeout)
        try:
            first = next(self._replies)
        except grpc.RpcError as exc:
            self._q.put(self._END)
            raise _rpc_error(exc, client.address) from None
        if first.WhichOneof("kind") != "session":
            raise UserError(f"server {client.address} answered the set-up with {first.WhichOneof('kind')}")
        self.info: pb.SessionInfo = first.session
        # Chunk below both limits: ours and the server's.
        self.max_message_bytes = min(client.max_message_bytes, int(self.info.max_message_bytes or 1 << 62))
        self._results: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="ue-replies", daemon=True)
        self._reader.start()

    def _requests(self):
        while True:
            item = self._q.get()
            if item is self._END:
                return
            yield item

    def _read(self) -> None:
        try:
            for reply in self._replies:
                self._results.put((reply, time.perf_counter()))
            self._results.put((None, None))
        except Exception as exc:  # grpc.RpcError, cancellation: handed to the caller
            self._results.put((exc, None))

    def send(self, messages) -> None:
        for m in messages:
            self._q.put(m)

    def receive(self) -> tuple[pb.FrameResult, float]:
        """The next result and the perf_counter time it arrived."""
        import grpc

        reply, t = self._results.get()
        if reply is None:
            raise UserError(f"server {self.client.address} closed the stream early")
        if isinstance(reply, grpc.RpcError):
            raise _rpc_error(reply, self.client.address) from None
        if isinstance(reply, Exception):
            raise UserError(f"stream to {self.client.address} failed: {reply}")
        return reply.result, t

    def close(self) -> None:
        self._q.put(self._END)
        self._reader.join(timeout=30)


# ----------------------------------------------------------------------------------------------
# Part I


class PartI:
    """Part I of a split, built locally with the split engine (or loaded from a `-partI` file)."""

    def __init__(self, model_path, rank: int | None = None, name: str | None = None, flag: str = "before",
                 device: str = "cpu", threads: int | None = None, part1_path=None, check_model: bool = True):
        from splitinfer.common.graph_split import SplitGraph, file_sha256
        from splitinfer.common.onnx_io import load_model
        from splitinfer.common.runtime import make_session

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
        from splitinfer.common.runtime import make_session

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
    from splitinfer.common.detections import box_iou

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
    """Everything measured for one frame (seconds, bytes)."""

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


@dataclass
class _Pending:
    record: FrameRecord
    t_start: float
    t_sent: float
    feeds: dict | None = None
    meta: dict | None = None
    reply: object = None
    t_reply: float = 0.0


class UE:
    """Runs frames through Part I -> codec -> gRPC -> server, keeping up to `in_flight` frames in flight."""

    def __init__(self, client: UEClient, part1: PartI, family, codec, model_id: str, *, in_flight: int = 1,
                 unary: bool = False, anchors: dict | None = None, metrics=None, keep_intermediate: bool = False,
                 client_name: str = "splitinfer-device", expect_server_provider: str | None = None):
        from splitinfer.common.metrics import labels_for
        from splitinfer.server.service import codec_label

        self.client, self.part1, self.family, self.codec = client, part1, family, codec
        self.model_id = model_id
        self.in_flight = max(1, int(in_flight))
        self.unary = unary
        self.anchors = anchors or {}
        self.metrics = metrics
        self.keep_intermediate = keep_intermediate
        self.codec_label = codec_label(codec)
        self.labels = labels_for(model_id, part1.plan.rank, self.codec_label)
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
            self._stream = self.client.open_stream(self.setup)
            self.info = self._stream.info
            self._check_info(self.info)
        return self.info

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    # -- frames --------------------------------------------------------------------------------------

    def run(self, frames, progress=None):
        """Process (source, index, image_bgr) items; yields FrameRecords in order as replies arrive."""
        self.open()
        pending: deque[_Pending] = deque()
        for source, index, image in frames:
            pending.append(self._send(source, index, image))
            while len(pending) >= self.in_flight:
                yield self._finish(pending.popleft())
            if progress is not None:
                progress.update(1)
        while pending:
            yield self._finish(pending.popleft())

    def _send(self, source: str, index: int, image) -> _Pending:
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
            msgs = wire.frame_messages(frame_id, tensors, max_message_bytes=self._stream.max_message_bytes, **kwargs)
        t3 = time.perf_counter()
        rec.preprocess_s, rec.part1_s, rec.encode_s, rec.serialize_s = t0 - t_start, t1 - t0, t2 - t1, t3 - t2
        rec.raw_bytes = sum(int(np.asarray(a).nbytes) for a in (outs[n] for n in self.part1.sent_names))
        rec.encoded_bytes = sum(len(t.payload) for t in tensors)
        rec.tensors, rec.messages = len(tensors), len(msgs)
        if self.keep_intermediate:
            rec.intermediate = {n: outs[n] for n in self.part1.sent_names}
        pend = _Pending(rec, t_start, time.perf_counter(), feeds if self.anchors else None, meta)
        if self.unary:
            reply = self.client.infer(msgs[0])
            pend.reply, pend.t_reply = reply.result, time.perf_counter()
            if self.info is None:
                self.info = reply.session
                self._check_info(self.info)
        else:
            self._stream.send(msgs)
        return pend

    def _finish(self, pend: _Pending) -> FrameRecord:
        if pend.reply is None:
            pend.reply, pend.t_reply = self._stream.receive()
        result, t_end = pend.reply, pend.t_reply
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
