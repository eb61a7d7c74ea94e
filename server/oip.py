"""The network process's Open Inference Protocol endpoint: Part II for any OIP client (tritonclient, KServe's).

Why: engineers who run Part II in production put it behind an inference server (Triton, KServe, MLServer,
OVMS), and all of them speak the Open Inference Protocol (KServe v2, `inference.GRPCInferenceService`). The
network process serves it on the same port beside its own `splitinfer.v1.SplitInference`, so one process
answers both our UE and any OIP client. Model names, inputs, meta and outputs are as server/oip_core.py
defines them (`nanodet.r60`: Part II of `nanodet` cut at rank 60; inputs: the crossing tensors as raw
contents, FP16 allowed for FP32; outputs: `detections` + `labels`, or any consolidated model output named).

Like the own service, requests arrive as raw bytes and are parsed here, so a malformed message is
INVALID_ARGUMENT with a message naming the problem, never a bare INTERNAL; unknown models are NOT_FOUND;
inputs are bounded by the split's needs before any allocation (the gRPC receive limit bounds the message).
Not served: the repository load/unload extension (the repository is the folder scanned at start), so those
calls answer UNIMPLEMENTED.
"""

from __future__ import annotations

import json
import logging
import time

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from splitinfer.common.core.errors import UserError
from splitinfer.common.transport.metrics import labels_for
from splitinfer.common.transport.oip_proto import grpc_predict_v2_pb2 as pb
from splitinfer.server import oip_core as core
from splitinfer.server.errors import RequestError, invalid

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
VERSION = "1"
CODEC_LABEL = "oip"  # the metrics' codec label of frames that came over the OIP endpoint
log = logging.getLogger("splitinfer.server.oip")


def _parse(message_type, raw: bytes, what: str):
    try:
        return message_type.FromString(raw)
    except DecodeError as exc:
        raise invalid(f"{what}: not a valid {message_type.DESCRIPTOR.full_name} message ({exc})") from None


def _typed_contents(inp) -> bytes | None:
    """Raw bytes of an input sent with typed `contents` instead of raw contents (None when it has none)."""
    if not inp.HasField("contents"):
        return None
    c = inp.contents
    for field, dtype in (("fp32_contents", "<f4"), ("fp64_contents", "<f8"), ("int64_contents", "<i8"),
                         ("uint64_contents", "<u8"), ("bool_contents", "?")):
        values = getattr(c, field)
        if len(values):
            return np.asarray(values, dtype=dtype).tobytes()
    if len(c.int_contents):
        return np.asarray(c.int_contents, dtype=core.numpy_dtype(inp.datatype).newbyteorder("<")).tobytes()
    if len(c.uint_contents):
        return np.asarray(c.uint_contents, dtype=core.numpy_dtype(inp.datatype).newbyteorder("<")).tobytes()
    return b""


class OIPService:
    """Servicer of `inference.GRPCInferenceService` over the network process's model repository."""

    def __init__(self, repository, metrics, max_input_bytes: int, admission=None):
        self.repo = repository
        self.metrics = metrics
        self.max_input_bytes = int(max_input_bytes)
        self.admission = admission  # server/admission.py: work slots shared with the own service

    def handler(self) -> grpc.GenericRpcHandler:
        def unary(fn, reply):
            return grpc.unary_unary_rpc_method_handler(self._guard(fn), request_deserializer=None,
                                                       response_serializer=reply.SerializeToString)

        return grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "ServerLive": unary(self.ServerLive, pb.ServerLiveResponse),
            "ServerReady": unary(self.ServerReady, pb.ServerReadyResponse),
            "ModelReady": unary(self.ModelReady, pb.ModelReadyResponse),
            "ServerMetadata": unary(self.ServerMetadata, pb.ServerMetadataResponse),
            "ModelMetadata": unary(self.ModelMetadata, pb.ModelMetadataResponse),
            "ModelInfer": unary(self._admitted(self.ModelInfer), pb.ModelInferResponse),
        })

    def _admitted(self, fn):
        """Part II work takes one of the process's work slots (UNAVAILABLE when none frees in time)."""

        def call(request: bytes, context):
            if self.admission is None:
                return fn(request, context)
            with self.admission.slot(fn.__name__, context.time_remaining()):
                return fn(request, context)

        call.__name__ = fn.__name__
        return call

    def _guard(self, fn):
        """Every refusal one proper status with its message; a bug INTERNAL; the server keeps serving."""

        def call(request: bytes, context):
            try:
                return fn(request, context)
            except (RequestError, UserError) as exc:
                code = getattr(exc, "code", "INVALID_ARGUMENT")
                self.metrics.count_error(code)
                context.abort(getattr(grpc.StatusCode, code), str(exc)[:2000])
            except MemoryError:
                self.metrics.count_error("RESOURCE_EXHAUSTED")
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "the server ran out of memory on this request")
            except Exception as exc:  # noqa: BLE001 - logged with its traceback, answered INTERNAL
                self.metrics.count_error("INTERNAL")
                log.exception("internal error in %s", fn.__name__)
                context.abort(grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}: {str(exc)[:500]})")

        call.__name__ = fn.__name__
        return call

    # -- health and metadata -------------------------------------------------------------------------

    def ServerLive(self, request: bytes, context):
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: bytes, context):
        return pb.ServerReadyResponse(ready=bool(self.repo.ids()))

    def _part2(self, name: str, version: str = ""):
        if version and version != VERSION:
            raise RequestError("NOT_FOUND", f"model {name!r} has no version {version[:20]!r} (versions: {VERSION})")
        model_id, rank = core.parse_model_name(name)
        return self.repo.part2(model_id, rank=rank)

    def ModelReady(self, request: bytes, context):
        req = _parse(pb.ModelReadyRequest, request, "ModelReady")
        try:
            self._part2(req.name, req.version)
        except RequestError as exc:
            if exc.code == "NOT_FOUND" or exc.code == "INVALID_ARGUMENT":
                return pb.ModelReadyResponse(ready=False)
            raise
        return pb.ModelReadyResponse(ready=True)

    def ServerMetadata(self, request: bytes, context):
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("splitinfer")
        except PackageNotFoundError:
            v = "unknown"
        return pb.ServerMetadataResponse(name=core.SERVER_NAME, version=v, extensions=[])

    def ModelMetadata(self, request: bytes, context):
        req = _parse(pb.ModelMetadataRequest, request, "ModelMetadata")
        part2 = self._part2(req.name, req.version)
        reply = pb.ModelMetadataResponse(name=req.name, versions=[VERSION], platform=core.PLATFORM)
        for spec in core.input_specs(part2):
            reply.inputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
        for spec in core.output_specs(part2, self.repo.graph(part2.model_id)):
            reply.outputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
        return reply

    # -- inference -----------------------------------------------------------------------------------

    def ModelInfer(self, request: bytes, context):
        t0 = time.perf_counter()
        req = _parse(pb.ModelInferRequest, request, "ModelInfer")
        part2 = self._part2(req.model_name, req.model_version)
        labels = labels_for(part2.model_id, part2.plan.rank, CODEC_LABEL)
        raws = req.raw_input_contents
        if raws and len(raws) != len(req.inputs):
            raise invalid(f"{len(raws)} raw_input_contents for {len(req.inputs)} inputs (one per input, same order)")
        core.check_complete(part2, [i.name for i in req.inputs])
        t1 = time.perf_counter()
        arrays, encoded = {}, 0
        for k, inp in enumerate(req.inputs):
            typed = _typed_contents(inp)
            if raws and typed is not None:
                raise invalid(f"input {inp.name!r}: both raw_input_contents and typed contents given")
            raw = raws[k] if raws else typed
            if raw is None:
                raise invalid(f"input {inp.name!r}: no contents (neither raw_input_contents nor typed contents)")
            encoded += len(raw)
            arrays[inp.name] = core.tensor_from_raw(part2, inp.name, inp.datatype, inp.shape, raw,
                                                    self.max_input_bytes)
        meta_param = req.parameters.get(core.META_PARAMETER)
        meta = core.parse_meta(meta_param.string_param if meta_param is not None else "")
        t2 = time.perf_counter()
        result = core.run_part2(part2, arrays, meta)
        reply = self._reply(req, part2, result)
        t3 = time.perf_counter()
        seconds = dict(result.seconds, deserialize=t1 - t0, decode=t2 - t1)
        self.metrics.observe(labels, **seconds)
        self.metrics.count_frame(labels, result.raw_bytes, encoded)
        timings = {f"{k}_ms": round(v * 1e3, 4) for k, v in seconds.items()}
        timings["total_ms"] = round((t3 - t0) * 1e3, 4)
        reply.parameters["provider"].string_param = part2.provider
        reply.parameters["timings"].string_param = json.dumps(timings, separators=(",", ":"))
        return reply

    def _reply(self, req, part2, result) -> pb.ModelInferResponse:
        wanted = [o.name for o in req.outputs] or [core.DETECTIONS, core.LABELS]
        boxes, names = core.detection_arrays(result.detections)
        reply = pb.ModelInferResponse(model_name=req.model_name, model_version=VERSION, id=req.id)
        for name in wanted:
            if name == core.DETECTIONS:
                reply.outputs.add(name=name, datatype="FP64", shape=list(boxes.shape))
                reply.raw_output_contents.append(boxes.astype("<f8").tobytes())
            elif name == core.LABELS:
                reply.outputs.add(name=name, datatype="BYTES", shape=[len(names)])
                reply.raw_output_contents.append(core.serialize_bytes_tensor(names))
            elif name in result.outputs:
                arr = np.ascontiguousarray(result.outputs[name])
                reply.outputs.add(name=name, datatype=core.oip_datatype(arr.dtype), shape=list(arr.shape))
                reply.raw_output_contents.append(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
            else:
                raise invalid(f"requested output {name[:80]!r} is not an output of {req.model_name!r} "
                              f"(outputs: {[core.DETECTIONS, core.LABELS, *list(result.outputs)[:8]]})")
        return reply


def add_oip_service(server, repository, metrics, max_input_bytes: int, admission=None) -> str:
    """Register the OIP endpoint on a started-or-not grpc server; returns its full service name (for health
    checking and reflection). `admission`: the work slots ModelInfer takes (server/admission.py)."""
    server.add_generic_rpc_handlers((OIPService(repository, metrics, max_input_bytes, admission).handler(),))
    return SERVICE_NAME
