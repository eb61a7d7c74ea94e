"""The UE's Open Inference Protocol client: send Part I's outputs to any OIP server, read detections back.

Why: Part II may run on an inference server the field already operates (Triton, KServe, MLServer, OVMS, or
our own network process's OIP endpoint); they all speak the Open Inference Protocol (KServe v2,
`inference.GRPCInferenceService`). This client uses our own stubs (common/transport/oip_proto, protobuf 7),
so it lives in the main environment beside the rest of the UE.

Terms (as server/oip_core.py defines them): the *model name* is `<model id>.r<rank>` (`nanodet.r60`);
*inputs* are Part I's outputs (crossing tensors, then Part I's final outputs) as raw contents, FP32 as they
are or FP16 with `half=True` (the `float16` codec of our own protocol); the family's *meta* travels as JSON
in the request parameter `meta`; the *outputs* are `detections` (FP64 [N, 5]) and `labels` (BYTES [N]).

The pipeline calls `OIPClient.infer_frame(model_name, tensors, meta)` once per frame; it returns an
`OIPResult` with the detections and the bytes and times the results CSV reports.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import grpc
import numpy as np

from splitinfer.common.core.detections import Detection
from splitinfer.common.core.errors import UserError
from splitinfer.common.transport.oip_proto import grpc_predict_v2_pb2 as pb
from splitinfer.common.transport.oip_proto import grpc_predict_v2_pb2_grpc as pb_grpc

DETECTIONS, LABELS, META = "detections", "labels", "meta"
_DATATYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "int64": "INT64", "int32": "INT32",
              "int8": "INT8", "uint8": "UINT8", "bool": "BOOL"}


def model_name(model_id: str, rank: int) -> str:
    return f"{model_id}.r{int(rank)}"


@dataclass
class OIPResult:
    detections: list[Detection]
    encoded_bytes: int  # raw contents sent
    raw_bytes: int  # bytes of Part I's outputs before any half-precision cast
    serialize_s: float
    round_trip_s: float
    server_ms: dict = field(default_factory=dict)  # the server's stage times, when it reports them
    provider: str = ""
    outputs: dict = field(default_factory=dict)  # raw model outputs, when asked for


def _read_bytes_tensor(raw: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise UserError("OIP reply: BYTES output truncated")
        n = int.from_bytes(raw[pos:pos + 4], "little")
        pos += 4
        if pos + n > len(raw):
            raise UserError("OIP reply: BYTES element runs past the end")
        out.append(raw[pos:pos + n])
        pos += n
    return out


def build_request(name: str, tensors: dict, meta: dict | None = None, half: bool = False,
                  outputs=(), request_id: str = "") -> tuple[pb.ModelInferRequest, int, int]:
    """The ModelInferRequest of one frame, with the bytes it carries and the bytes of the tensors."""
    req = pb.ModelInferRequest(model_name=name, id=request_id)
    if meta:
        req.parameters[META].string_param = json.dumps(meta, separators=(",", ":"), default=_plain)
    encoded = raw = 0
    for tname, arr in tensors.items():
        arr = np.asarray(arr)
        raw += arr.nbytes
        if half and arr.dtype == np.float32:
            arr = arr.astype(np.float16)
        dtype = _DATATYPES.get(arr.dtype.name)
        if dtype is None:
            raise UserError(f"tensor {tname!r}: dtype {arr.dtype} cannot travel over the Open Inference Protocol")
        req.inputs.add(name=tname, datatype=dtype, shape=list(arr.shape))
        data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
        encoded += len(data)
        req.raw_input_contents.append(data)
    for o in outputs:
        req.outputs.add(name=o)
    return req, encoded, raw


def _plain(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"meta value of type {type(o).__name__} cannot be sent")


def read_reply(reply: pb.ModelInferResponse) -> tuple[list[Detection], dict]:
    """Detections and any other outputs (name -> array) of a ModelInferResponse."""
    if reply.raw_output_contents and len(reply.raw_output_contents) != len(reply.outputs):
        raise UserError(f"OIP reply: {len(reply.raw_output_contents)} raw outputs for {len(reply.outputs)} outputs")
    arrays, labels = {}, None
    for k, out in enumerate(reply.outputs):
        raw = reply.raw_output_contents[k] if reply.raw_output_contents else None
        if out.datatype == "BYTES":
            values = _read_bytes_tensor(raw) if raw is not None else list(out.contents.bytes_contents)
            if out.name == LABELS:
                labels = values
            arrays[out.name] = values
            continue
        np_dtype = {v: k for k, v in _DATATYPES.items()}.get(out.datatype)
        if np_dtype is None:
            raise UserError(f"OIP reply: output {out.name!r} has datatype {out.datatype}, not supported here")
        if raw is not None:
            arr = np.frombuffer(raw, dtype=np.dtype(np_dtype).newbyteorder("<")).reshape(list(out.shape))
        else:
            arr = np.asarray(out.contents.fp64_contents or out.contents.fp32_contents, dtype=np_dtype).reshape(
                list(out.shape))
        arrays[out.name] = arr
    boxes = arrays.get(DETECTIONS)
    dets = []
    if boxes is not None:
        labels = labels or []
        if len(labels) != len(boxes):
            raise UserError(f"OIP reply: {len(boxes)} detections but {len(labels)} labels")
        dets = [Detection(lab.decode(), *map(float, row)) for row, lab in zip(np.asarray(boxes).tolist(), labels)]
    return dets, arrays


class OIPClient:
    """A gRPC channel to one OIP server."""

    def __init__(self, address: str, max_message_bytes: int = 64 << 20, timeout: float = 120.0):
        self.address = address
        self.timeout = timeout
        opts = [("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes)]
        self.channel = grpc.insecure_channel(address, options=opts)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def _call(self, fn, request, what: str):
        try:
            return fn(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise UserError(f"OIP server {self.address}: {what}: {exc.code().name}: {exc.details()}") from None

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.stub.ServerReady(pb.ServerReadyRequest(), timeout=5.0).ready:
                    return
            except grpc.RpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
            else:
                last = "not ready"
            if time.monotonic() > deadline:
                raise UserError(f"OIP server {self.address} not ready after {timeout:.0f} s ({last})")
            time.sleep(0.2)

    def server_live(self) -> bool:
        return self._call(self.stub.ServerLive, pb.ServerLiveRequest(), "ServerLive").live

    def model_ready(self, name: str) -> bool:
        """False for a model that is not ready or not known (some servers, KServe's, answer NOT_FOUND)."""
        try:
            return self.stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=self.timeout).ready
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise UserError(f"OIP server {self.address}: ModelReady: {exc.code().name}: {exc.details()}") from None

    def model_metadata(self, name: str) -> pb.ModelMetadataResponse:
        return self._call(self.stub.ModelMetadata, pb.ModelMetadataRequest(name=name), "ModelMetadata")

    def infer_frame(self, name: str, tensors: dict, meta: dict | None = None, *, half: bool = False,
                    outputs=(), request_id: str = "") -> OIPResult:
        """One frame: Part I's outputs in, detections out (plus the named raw outputs, if any)."""
        t0 = time.perf_counter()
        req, encoded, raw = build_request(name, tensors, meta, half, outputs, request_id)
        t1 = time.perf_counter()
        reply = self._call(self.stub.ModelInfer, req, f"ModelInfer {name}")
        t2 = time.perf_counter()
        dets, arrays = read_reply(reply)
        params = reply.parameters
        server_ms = json.loads(params["timings"].string_param) if "timings" in params else {}
        provider = params["provider"].string_param if "provider" in params else ""
        extra = {k: v for k, v in arrays.items() if k not in (DETECTIONS, LABELS)}
        return OIPResult(dets, encoded, raw, t1 - t0, t2 - t1, server_ms, provider, extra)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "OIPClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# the UE's frame loop over the Open Inference Protocol (`splitinfer device --protocol oip`)

# Codecs whose output an OIP server reads as raw contents: none (FP32 as is) and float16 (raw FP16).
OIP_CODECS = {"none": False, "float16": True}


@dataclass
class OIPSessionInfo:
    provider: str = ""


class OIPFramePipeline:
    """The twin of device/pipeline.py's FramePipeline over the Open Inference Protocol: the same
    FrameRecords (Part I, encode = the FP16 cast, serialization, round trip, transfer, the server's stage
    times when it reports them; meta, and feeds and image when kept), one ModelInfer call per frame, frames
    in order.

    A transient failure (UNAVAILABLE, DEADLINE_EXCEEDED) is retried up to `max_attempts` times; any other
    status fails the frame with the server's message; with `tolerate_failures` failed frames come back as
    records with status "failed", otherwise the first one raises UserError."""

    TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED")

    def __init__(self, client: OIPClient, part1, family, codec, model_id: str, *, keep_feeds: bool = False,
                 keep_image: bool = False, metrics=None, keep_intermediate: bool = False,
                 tolerate_failures: bool = False, max_attempts: int = 3, expect_server_provider: str | None = None):
        from splitinfer.common.transport.metrics import labels_for

        spec = str(getattr(codec, "spec", codec))
        if spec not in OIP_CODECS:
            raise UserError(f"codec {spec!r} cannot travel over the Open Inference Protocol (raw contents only): "
                            f"use {' or '.join(OIP_CODECS)}")
        self.client, self.part1, self.family, self.half = client, part1, family, OIP_CODECS[spec]
        self.name = model_name(model_id, part1.plan.rank)
        self.keep_feeds, self.keep_image = keep_feeds, keep_image
        self.metrics, self.keep_intermediate = metrics, keep_intermediate
        self.tolerate_failures, self.max_attempts = tolerate_failures, max(1, int(max_attempts))
        self.labels = labels_for(model_id, part1.plan.rank, f"oip-{spec}")
        if metrics is not None:
            metrics.open_session(self.labels)
        self.expect_server_provider = expect_server_provider
        self.info: OIPSessionInfo | None = None
        self.reconnects = 0
        self._next_id = 1

    def open(self) -> OIPSessionInfo:
        """Check the server serves this split with the tensors Part I makes (names, in order)."""
        if not self.client.model_ready(self.name):
            raise UserError(f"OIP server {self.client.address} does not serve {self.name!r} (ModelReady false)")
        md = self.client.model_metadata(self.name)
        names = [i.name for i in md.inputs]
        if names != list(self.part1.plan.part1_outputs):
            raise UserError(f"OIP model {self.name!r} expects inputs {names[:8]}, Part I gives "
                            f"{list(self.part1.plan.part1_outputs)[:8]}")
        self.info = OIPSessionInfo()
        return self.info

    def run(self, frames, progress=None):
        """Process (source, index, image_bgr) items; yields FrameRecords in frame order."""
        if self.info is None:
            self.open()
        for source, index, image in frames:
            rec = self._frame(source, index, image)
            if progress is not None:
                progress.update(1)
            if not rec.ok and not self.tolerate_failures:
                raise UserError(rec.error)
            yield rec

    def _frame(self, source: str, index: int, image):
        from splitinfer.device.pipeline import FrameRecord

        t_start = time.perf_counter()
        rec = FrameRecord(source, index, self._next_id)
        self._next_id += 1
        feeds, meta = self.family.preprocess(image)
        t0 = time.perf_counter()
        outs = self.part1.run(feeds)
        t1 = time.perf_counter()
        names = self.part1.plan.part1_outputs
        tensors = {n: (outs[n].astype(np.float16) if self.half and outs[n].dtype == np.float32 else outs[n])
                   for n in names}
        t2 = time.perf_counter()
        req, encoded, raw = build_request(self.name, tensors, meta, False, (), str(rec.frame_id))
        t3 = time.perf_counter()
        rec.preprocess_s, rec.part1_s, rec.encode_s, rec.serialize_s = t0 - t_start, t1 - t0, t2 - t1, t3 - t2
        rec.raw_bytes = sum(int(np.asarray(outs[n]).nbytes) for n in names)
        rec.encoded_bytes, rec.tensors, rec.messages = encoded, len(names), 1
        if self.keep_intermediate:
            rec.intermediate = {n: outs[n] for n in names}
        rec.meta, rec.feeds = meta, (feeds if self.keep_feeds else None)
        rec.image = image if self.keep_image else None
        reply = None
        while reply is None:
            rec.attempts += 1
            t_sent = time.perf_counter()
            try:
                reply = self.client.stub.ModelInfer(req, timeout=self.client.timeout)
            except grpc.RpcError as exc:
                code = exc.code().name
                message = f"OIP server {self.client.address}: {code}: {exc.details()}"
                if code not in self.TRANSIENT or rec.attempts >= self.max_attempts:
                    return self._failed(rec, t_start, message, code)
        t_end = time.perf_counter()
        try:
            rec.detections, _ = read_reply(reply)
        except UserError as exc:
            return self._failed(rec, t_start, str(exc), "INVALID_ARGUMENT")
        params = reply.parameters
        server_ms = json.loads(params["timings"].string_param) if "timings" in params else {}
        rec.server = {k[:-3]: v / 1e3 for k, v in server_ms.items() if k.endswith("_ms")}
        rec.server_provider = params["provider"].string_param if "provider" in params else ""
        self.info.provider = self.info.provider or rec.server_provider
        want = self.expect_server_provider
        if want and rec.server_provider and rec.server_provider not in (want, "none"):
            raise UserError(f"OIP server runs Part II on {rec.server_provider}, {want} was asked (-PU_partII)")
        rec.round_trip_s = t_end - t_sent
        rec.transfer_s = max(0.0, rec.round_trip_s - rec.server.get("total", 0.0))
        rec.end_to_end_s = t_end - t_start
        if self.metrics is not None:
            self.metrics.observe(self.labels, part1=rec.part1_s, encode=rec.encode_s, serialize=rec.serialize_s,
                                 transfer=rec.transfer_s, end_to_end=rec.end_to_end_s)
            self.metrics.count_frame(self.labels, rec.raw_bytes, rec.encoded_bytes)
        return rec

    def _failed(self, rec, t_start: float, message: str, code: str):
        rec.status, rec.error = "failed", message
        rec.end_to_end_s = time.perf_counter() - t_start
        if self.metrics is not None:
            self.metrics.count_error(code, self.labels)
        return rec

    def abandon(self, reason: str) -> list:
        return []  # one frame at a time: nothing is ever left in flight

    def close(self, cancel: bool = False) -> None:
        pass


def run_oip_device(args) -> int:
    """`splitinfer device --protocol oip`: the UE process with frames sent to an OIP server (`--server`,
    e.g. the network process or a KServe ModelServer) as ModelInfer calls; the same results CSV, frame log,
    predictions and overlays as over our own protocol. Options our protocol alone has (--in-flight,
    --unary, TLS, token, shaping) are not used."""
    from splitinfer.common.codecs import get_codec
    from splitinfer.device import main as M

    M.check_options(args)
    if args.no_split:
        raise UserError("--protocol oip sends frames to a server: it does not combine with -no_split")
    model_path, family = M.resolve_anchor(args)  # the one model resolver; sets args.model_id
    source = M.Source(args)
    retry = M.retry_policy(args)
    codec = get_codec(args.codec)
    if str(codec.spec) not in OIP_CODECS:
        raise UserError(f"-encode_algo {args.codec}: the Open Inference Protocol carries raw contents only "
                        f"(use {' or '.join(OIP_CODECS)})")
    with M.StopSignals() as signals:
        return M.SplitRun(args, model_path, family, source, codec, retry, signals, transport=OIPTransport()).run()


class OIPTransport:
    """How a SplitRun (device/main.py) reaches an OIP server: its client and its frame pipeline."""

    name = "oip"

    def connect(self, run) -> OIPClient:
        a = run.args
        client = OIPClient(a.server, int(a.max_message_mb * (1 << 20)), timeout=a.timeout)
        try:
            client.wait_ready(timeout=a.reconnect_s)
        except BaseException:
            client.close()
            raise
        return client

    def pipeline(self, run, client, metrics) -> OIPFramePipeline:
        a = run.args
        pipeline = OIPFramePipeline(client, run.part1, run.family, run.codec, run.model_id,
                                    keep_feeds=run.reference.needs_feeds, keep_image=run.outputs.overlays,
                                    metrics=metrics, keep_intermediate=run.keeps_intermediate,
                                    tolerate_failures=True, max_attempts=a.max_attempts,
                                    expect_server_provider={"gpu": "cuda", "cpu": "cpu"}.get(a.pu_part2 or ""))
        pipeline.open()
        return pipeline
