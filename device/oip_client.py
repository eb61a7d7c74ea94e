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
