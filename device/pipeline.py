"""The UE's frame pipeline: Part I, encode, send on the stream, receive the detections, in frame order.

Why frames in flight: with one request per frame the UE idles during the transfer and Part II, and the
server idles during Part I. On the stream the UE sends frame n+1 while the server still works on frame
n (`in_flight` frames at most), so both halves run at once and throughput approaches that of the slower
half. `in_flight=1` waits for each reply (clean per-frame latency).

Times per frame (seconds here, ms in the results): Part I, encode, serialization, transfer (round trip
minus the server's own processing time, so it holds the network and gRPC time), the server's stages,
and end-to-end (frame read -> detections back).

Why frames are kept until answered (retry.RetryPolicy): when the network process goes away (crash,
restart) the stream breaks with UNAVAILABLE; the pipeline reconnects with exponential backoff and sends
the frames still unanswered again, in order, on the new stream. Each frame the pipeline reads ends exactly
once as a FrameRecord: answered (one reply, on the stream it was last sent on) or failed (refused by the
server, no reply within its deadline too many times, the server unreachable past the reconnect budget,
or interrupted, `abandon`), and a failed frame is reported, never dropped. Once the server is given up
on, no further frame is read.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from splitinfer.common.core.detections import Detection
from splitinfer.common.core.errors import UserError
from splitinfer.common.transport import wire
from splitinfer.common.transport.proto import splitinfer_pb2 as pb
from splitinfer.device.client import FrameStream, UEClient
from splitinfer.device.part1 import Part1
from splitinfer.device.retry import RpcFailure


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
    anchor: dict = field(default_factory=dict)  # device -> (seconds, detections), filled by device/reference.py
    meta: dict | None = None  # the family's preprocessing meta of this frame (what its detections are read with)
    feeds: dict | None = None  # the model's inputs, when kept for the anchors (freed once they ran)
    image: object = None  # the frame's image, when kept for overlays (freed once written)
    intermediate: dict | None = None  # name -> array, when kept
    ref_agreement: object = None  # agreement.Agreement with the -ref_split reference, when it ran
    status: str = "ok"  # "ok": answered; "failed": see `error`
    error: str = ""
    attempts: int = 0  # times the frame was sent (0: never sent)
    keyframe: bool = True  # coded alone (every frame of a per-frame codec); False: predicted (sequential codec)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class _InFlightFrame:
    record: FrameRecord
    t_start: float
    t_sent: float = 0.0
    reply: object = None
    t_reply: float = 0.0
    messages: list | None = None  # kept until answered: sent again after a reconnect
    outs: list | None = None  # a sequential codec's Part I outputs, kept until answered: coded again after one
    frame_kwargs: dict | None = None  # timestamp and meta of the frame's messages
    faults: int = 0  # transient failures met while in flight
    failed: bool = False
    epoch: int = 0  # the encoder's restarts before this frame was coded (which stream's references it uses)


def detections_from_reply(result: pb.FrameResult) -> list[Detection]:
    return [Detection(d.label, d.x1, d.y1, d.x2, d.y2, d.score) for d in result.detections]


class FramePipeline:
    """Runs frames through Part I -> codec -> gRPC -> server, keeping up to `in_flight` frames in flight.

    `tolerate_failures`: yield failed frames as records with status "failed" (the device reports them);
    otherwise the first failed frame raises UserError. Transient failures are retried either way.
    `keep_feeds` / `keep_image`: each record keeps its frame's feeds (for the anchors, device/reference.py)
    / image (for overlays); every record carries its meta.
    """

    def __init__(self, client: UEClient, part1: Part1, family, codec, model_id: str, *, in_flight: int = 1,
                 unary: bool = False, keep_feeds: bool = False, keep_image: bool = False, metrics=None,
                 keep_intermediate: bool = False,
                 client_name: str = "splitinfer-device", expect_server_provider: str | None = None,
                 tolerate_failures: bool = False):
        from splitinfer.common.transport.metrics import labels_for

        self.client, self.part1, self.family, self.codec = client, part1, family, codec
        self.model_id = model_id
        self.in_flight = max(1, int(in_flight))
        self.unary = unary
        self.keep_feeds, self.keep_image = keep_feeds, keep_image
        self.metrics = metrics
        self.keep_intermediate = keep_intermediate
        self.tolerate_failures = tolerate_failures
        self.codec_label = str(codec.spec)
        codec.warm_up()  # one-time costs (nnc: its helper processes) here, not in the first frame's encode time
        self.encoder = codec.sequence_encoder()  # a sequential codec's state across this stream's frames
        self.labels = labels_for(model_id, part1.plan.rank, self.codec_label)
        if metrics is not None:
            metrics.open_session(self.labels)  # the session's series exist at 0 from set-up on
        split = pb.SplitPoint(rank=part1.plan.rank, flag="before")
        self.setup = pb.SessionSetup(model_id=model_id, split=split, client_name=client_name,
                                     codec=pb.CodecProfile(spec=str(getattr(codec, "spec", "") or self.codec_label),
                                                           codec_id=int(codec.codec_id),
                                                           params=wire.codec_params_of(codec)))
        self._stream: FrameStream | None = None
        self.info: pb.SessionInfo | None = None
        self.expect_server_provider = expect_server_provider
        self._next_id = 1
        self.pending: deque[_InFlightFrame] = deque()
        self.reconnects = 0  # streams opened again after a failure
        self._dead: RpcFailure | UserError | None = None  # set when the server is given up on
        self._epoch = 0  # restarts of the encoder since the pipeline began (see _restart_encoder)

    # -- the frame loop ------------------------------------------------------------------------------

    def run(self, frames, progress=None):
        """Process (source, index, image_bgr) items; yields FrameRecords in frame order as frames end."""
        self.open()
        for source, index, image in frames:
            pend = self._admit(source, index)  # from here the frame gets a record, whatever happens
            self._part1_and_encode(pend, image)
            self._transmit(pend)
            yield from self._ended(keep=self.in_flight - 1)
            if progress is not None:
                progress.update(1)
            if self._dead is not None:  # given up on the server: read no further frame
                yield from self._ended(keep=0)
                raise UserError(f"{self._dead} (no more frames sent)")
        yield from self._ended(keep=0)

    def _admit(self, source: str, index: int) -> _InFlightFrame:
        """A new frame: its id, its record, its place in the queue (in frame order)."""
        pend = _InFlightFrame(FrameRecord(source, index, self._next_id), time.perf_counter())
        self._next_id += 1
        self.pending.append(pend)
        return pend

    def _part1_and_encode(self, pend: _InFlightFrame, image) -> None:
        """Preprocess, Part I, encode and frame one image; the messages are kept until it is answered."""
        rec, t_start = pend.record, pend.t_start
        ts = time.time_ns()
        feeds, meta = self.family.preprocess(image)
        t0 = time.perf_counter()
        outs = self.part1.run(feeds)
        t1 = time.perf_counter()
        names = self.part1.plan.part1_outputs
        pend.outs = [outs[n] for n in names]
        pend.frame_kwargs = dict(timestamp_ns=ts, meta_json=wire.meta_to_json(meta))
        rec.preprocess_s, rec.part1_s = t0 - t_start, t1 - t0
        rec.raw_bytes = sum(int(np.asarray(a).nbytes) for a in pend.outs)
        if self.keep_intermediate:
            rec.intermediate = {n: outs[n] for n in names}
        rec.meta, rec.feeds = meta, (feeds if self.keep_feeds else None)
        rec.image = image if self.keep_image else None
        self._encode(pend)
        if not self.encoder.sequential:
            pend.outs = None  # the messages are all a resend needs

    def _encode(self, pend: _InFlightFrame) -> None:
        """Encode the frame's crossing tensors (in stream order for a sequential codec) and frame them."""
        rec = pend.record
        if self.unary:
            self._restart_encoder()  # each unary call is a session of its own: a sequential codec sends keyframes
        t1 = time.perf_counter()
        names = self.part1.plan.part1_outputs
        tensors = wire.encode_tensors(names, pend.outs, self.codec, self.encoder)  # together: nnc in parallel
        t2 = time.perf_counter()
        if self.unary:
            msgs = wire.frame_messages(rec.frame_id, tensors, setup=self.setup,
                                       max_message_bytes=self.client.max_message_bytes, **pend.frame_kwargs)
        else:
            limit = self._stream.max_message_bytes if self._stream is not None else self.client.max_message_bytes
            msgs = wire.frame_messages(rec.frame_id, tensors, max_message_bytes=limit, **pend.frame_kwargs)
        t3 = time.perf_counter()
        rec.encode_s, rec.serialize_s = t2 - t1, t3 - t2
        rec.encoded_bytes = sum(len(t.payload) for t in tensors)
        rec.tensors, rec.messages = len(tensors), len(msgs)
        rec.keyframe = self.encoder.last_keyframe
        pend.messages, pend.epoch = msgs, self._epoch

    def _ended(self, keep: int):
        """Yield the oldest frames as they end, until at most `keep` are left in flight."""
        while len(self.pending) > keep:
            yield self._next_done()

    # -- session -------------------------------------------------------------------------------------

    def _check_info(self, info: pb.SessionInfo) -> None:
        if info.model_sha256 and info.model_sha256 != self.part1.sha256:
            raise UserError(f"server model {info.model_id!r} differs from the UE's {self.part1.model_path} "
                            f"(sha256 {info.model_sha256[:12]} vs {self.part1.sha256[:12]})")
        if list(info.crossing) != self.part1.plan.part1_outputs:
            raise UserError(f"server expects tensors {list(info.crossing)} at split {info.split_rank}, "
                            f"Part I gives {self.part1.plan.part1_outputs}")
        want = self.expect_server_provider
        if want and info.provider not in (want, "none"):
            raise UserError(f"server runs Part II on {info.provider}, {want} was asked (-PU_partII)")

    def open(self) -> pb.SessionInfo | None:
        """Open the stream (unary mode: nothing to open); UserError when the server cannot be reached."""
        if self.unary:
            return None
        if self._stream is None:
            try:
                self._stream = self._connect()
            except RpcFailure as exc:
                raise exc.user_error() from None
        return self.info

    def _connect(self) -> FrameStream:
        """A stream with its set-up answered, retrying transient failures (and a server at its stream
        limit) with backoff until `retry.reconnect_s` has passed; RpcFailure or UserError otherwise."""
        policy = self.client.retry
        start, delays = time.monotonic(), policy.delays()
        while True:
            try:
                stream = FrameStream(self.client, self.setup)
                break
            except RpcFailure as exc:
                if not (exc.transient or exc.code == "RESOURCE_EXHAUSTED"):
                    raise
                left = policy.reconnect_s - (time.monotonic() - start)
                if left <= 0:
                    raise RpcFailure(exc.code, f"{exc.details} (gave up after {policy.reconnect_s:g} s of "
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
            self.client.wait_ready()
        except UserError as exc:
            raise RpcFailure("UNAVAILABLE", f"{exc} (gave up reconnecting)", self.client.address,
                             transient=False) from None

    def close(self, cancel: bool = False) -> None:
        if self._stream is not None:
            self._stream.close(cancel=cancel or bool(self.pending))
            self._stream = None
        self._restart_encoder()  # frees a sequential codec's state; a later stream starts at a keyframe

    def _restart_encoder(self) -> None:
        """The next frame coded is a keyframe; frames coded before belong to the stream that ended."""
        self.encoder.restart()
        self._epoch += 1

    # -- failures ------------------------------------------------------------------------------------

    def _mark_failed(self, pend: _InFlightFrame, message: str, code: str) -> None:
        if pend.failed:
            return
        pend.failed = True
        pend.messages = pend.outs = None
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
        if self.encoder.sequential:  # the stream's references are gone: what is coded from now on starts anew
            self._restart_encoder()
        if not any(not p.failed and p.reply is None for p in self.pending):
            return  # reconnect lazily, with the next frame (coded from a keyframe, once)
        self._reconnect_and_resend()

    def _reconnect_and_resend(self) -> None:
        try:
            self._stream = self._connect()
        except (RpcFailure, UserError) as exc:
            self._give_up(exc)
            return
        self.reconnects += 1
        unanswered = [p for p in self.pending if not p.failed and p.reply is None and p.outs is not None]
        if self.encoder.sequential and any(p.epoch != self._epoch for p in unanswered):
            self._restart_encoder()  # coded for the stream that broke: code the unanswered frames again, in
            for p in unanswered:  # order, the first as a keyframe (frames coded since the break are kept)
                self._encode(p)
        for p in self.pending:
            if not p.failed and p.reply is None and p.messages is not None:
                p.record.attempts += 1
                p.t_sent = time.perf_counter()
                self._stream.send(p.messages)

    def _failed_record(self, pend: _InFlightFrame) -> FrameRecord:
        if not self.tolerate_failures:
            raise UserError(pend.record.error)
        return pend.record

    def abandon(self, reason: str) -> list[FrameRecord]:
        """End every frame still in the pipeline (Ctrl-C, a fatal error): answered ones as usual, the rest
        failed with `reason` (never-sent ones say so). The records, in frame order; nothing stays pending."""
        out = []
        while self.pending:
            p = self.pending.popleft()
            if p.reply is not None and not p.failed:
                out.append(self._finish(p))
            else:
                self._mark_failed(p, reason if p.record.attempts else f"{reason} (not sent)", "CANCELLED")
                out.append(p.record)
        return out

    # -- frames --------------------------------------------------------------------------------------

    def _next_done(self) -> FrameRecord:
        """The oldest frame, once it has ended (answered or failed)."""
        while True:
            pend = self.pending[0]
            if pend.failed:
                self.pending.popleft()
                return self._failed_record(pend)
            if pend.reply is not None:
                try:
                    rec = self._finish(pend)
                except UserError as exc:  # a reply that is not this frame's: the frame fails, it is not lost
                    self._mark_failed(pend, str(exc), "INTERNAL")
                    continue
                self.pending.popleft()
                return rec
            try:
                pend.reply, pend.t_reply = self._stream.receive()
            except RpcFailure as exc:
                self._on_stream_failure(exc)

    def _transmit(self, pend: _InFlightFrame) -> None:
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

    def _transmit_unary(self, pend: _InFlightFrame) -> None:
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
            t_reply = time.perf_counter()
            if self.info is None:  # the first reply says what the server runs (UserError: nothing answered)
                self._check_info(reply.session)
                self.info = reply.session
            pend.reply, pend.t_reply, pend.messages = reply.result, t_reply, None
            return

    def _finish(self, pend: _InFlightFrame) -> FrameRecord:
        result, t_end = pend.reply, pend.t_reply
        pend.messages = pend.outs = None
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
        if self.metrics is not None:
            self.metrics.observe(self.labels, part1=rec.part1_s, encode=rec.encode_s, serialize=rec.serialize_s,
                                 transfer=rec.transfer_s, end_to_end=rec.end_to_end_s)
            self.metrics.count_frame(self.labels, rec.raw_bytes, rec.encoded_bytes, keyframe=rec.keyframe)
        return rec
