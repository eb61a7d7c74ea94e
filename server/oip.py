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
DEFAULT_MAX_REPLY_BYTES = 4 << 20  # gRPC's default send limit, when the server does not say its own
log = logging.getLogger("splitinfer.server.oip")


def _parse(message_type, raw: bytes, what: str):
    try:
        return message_type.FromString(raw)
    except DecodeError as exc:
        raise invalid(f"{what}: not a valid {message_type.DESCRIPTOR.full_name} message ({exc})") from None


# The typed `contents` field the protocol names for each datatype (FP16 and BF16 travel as raw contents only).
_TYPED_FIELD = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
                "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
                "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
                "FP64": "fp64_contents"}
_TYPED_FIELDS = sorted(set(_TYPED_FIELD.values()) | {"bytes_contents"})


def _typed_contents(part2, inp, max_bytes: int) -> np.ndarray | None:
    """An input sent with typed `contents` as the array Part II expects (None when it has none). Datatype,
    shape and the value count are checked first (`oip_core.check_tensor`, the field the datatype names),
    so a refused request never has its values turned into an array."""
    if not inp.HasField("contents"):
        return None
    c = inp.contents
    given = [f for f in _TYPED_FIELDS if len(getattr(c, f))]
    dtype, want, shape, nbytes = core.check_tensor(part2, inp.name, inp.datatype, inp.shape, max_bytes)
    field = _TYPED_FIELD.get(inp.datatype)
    count = nbytes // dtype.itemsize
    if given != ([field] if count else []):
        raise invalid(f"input {inp.name!r}: datatype {inp.datatype} travels in contents.{field or '(raw only)'}, "
                      f"the request fills {given or 'none'}")
    values = getattr(c, field) if field else ()
    if len(values) != count:
        raise invalid(f"input {inp.name!r}: {len(values)} values in contents.{field}, shape {shape} needs {count}")
    try:
        arr = np.fromiter(values, dtype=dtype, count=count).reshape(shape)
    except (OverflowError, ValueError) as exc:
        raise invalid(f"input {inp.name!r}: contents.{field} do not fit {inp.datatype} ({exc})") from None
    return arr.astype(want) if dtype != want else arr


def _meta_text(req):
    """The request parameter `meta` as sent: its string, or the non-string value itself (which parse_meta
    refuses): an int64/bool/double `meta` is an error, never silently ignored."""
    param = req.parameters.get(core.META_PARAMETER)
    if param is None:
        return None
    which = param.WhichOneof("parameter_choice")
    if which is None:  # e.g. Triton's double_param / uint64_param, unknown to this protocol version
        raise invalid(f"request parameter {core.META_PARAMETER!r} must be a string (the family's meta as JSON); "
                      "it carries no value of a kind this server knows")
    return getattr(param, which)


class OIPService:
    """Servicer of `inference.GRPCInferenceService` over the network process's model repository."""

    def __init__(self, repository, metrics, max_input_bytes: int, admission=None, max_reply_bytes: int | None = None):
        self.repo = repository
        self.metrics = metrics
        self.max_input_bytes = int(max_input_bytes)
        self.admission = admission  # server/admission.py: work slots shared with the own service
        self.max_reply_bytes = int(max_reply_bytes or DEFAULT_MAX_REPLY_BYTES)  # the server's send limit

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
            with self.admission.slot(fn.__name__, context.time_remaining(), key=_peer(context)):
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
                log.info("refused %s: %s: %s", fn.__name__, code, str(exc)[:300])
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
        """Part II of an OIP model name, built when not cached: only ModelInfer calls it, in a work slot."""
        model_id, rank = self._split(name, version)
        return self.repo.part2(model_id, rank=rank)

    def _split(self, name: str, version: str, context=None) -> tuple[str, int]:
        """(model id, rank) of an OIP model name, the rank checked against the model's graph; builds no
        Part II. The model's graph analysis (once per model) takes a work slot when `context` is given."""
        if version and version != VERSION:
            raise RequestError("NOT_FOUND", f"model {name[:80]!r} has no version {version[:20]!r} "
                                            f"(versions: {VERSION})")
        model_id, rank = core.parse_model_name(name)
        if self.repo.get(model_id).graph is None and context is not None and self.admission is not None:
            with self.admission.slot("model analysis", context.time_remaining(), key=_peer(context)):
                self.repo.graph(model_id)
        return model_id, self.repo.resolve_rank(model_id, rank)

    def ModelReady(self, request: bytes, context):
        """Ready when the model exists and the rank is a split of it: Part II is built on first use (by
        ModelInfer, in a work slot and within the cache budget), never to answer readiness."""
        req = _parse(pb.ModelReadyRequest, request, "ModelReady")
        try:
            self._split(req.name, req.version, context)
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
        model_id, rank = self._split(req.name, req.version, context)
        part2 = core.split_io(model_id, self.repo.graph(model_id), rank)  # the split's plan, no Part II built
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
        wanted = core.requested_outputs([o.name for o in req.outputs], part2)
        meta = core.parse_meta(_meta_text(req))
        t1 = time.perf_counter()
        arrays, encoded = {}, 0
        for k, inp in enumerate(req.inputs):
            if raws and inp.HasField("contents"):
                raise invalid(f"input {inp.name!r}: both raw_input_contents and typed contents given")
            if raws:
                encoded += len(raws[k])
                arrays[inp.name] = core.tensor_from_raw(part2, inp.name, inp.datatype, inp.shape, raws[k],
                                                        self.max_input_bytes)
                continue
            typed = _typed_contents(part2, inp, self.max_input_bytes)
            if typed is None:
                raise invalid(f"input {inp.name!r}: no contents (neither raw_input_contents nor typed contents)")
            encoded += typed.nbytes
            arrays[inp.name] = typed
        t2 = time.perf_counter()
        result = core.run_part2(part2, arrays, meta)
        reply = self._reply(req, wanted, result)
        t3 = time.perf_counter()
        seconds = dict(result.seconds, deserialize=t1 - t0, decode=t2 - t1)
        self.metrics.observe(labels, **seconds)
        self.metrics.count_frame(labels, result.raw_bytes, encoded)
        timings = {f"{k}_ms": round(v * 1e3, 4) for k, v in seconds.items()}
        timings["total_ms"] = round((t3 - t0) * 1e3, 4)
        reply.parameters["provider"].string_param = part2.provider
        reply.parameters["timings"].string_param = json.dumps(timings, separators=(",", ":"))
        return reply

    def _reply(self, req, wanted: list[str], result) -> pb.ModelInferResponse:
        """The outputs `wanted` (checked, each once): refused before any is copied when over the send limit."""
        boxes, names = core.detection_arrays(result.detections)
        core.check_reply_size(wanted, result, boxes, names, self.max_reply_bytes - len(req.id) - len(req.model_name))
        reply = pb.ModelInferResponse(model_name=req.model_name, model_version=VERSION, id=req.id)
        for name in wanted:
            if name == core.DETECTIONS:
                reply.outputs.add(name=name, datatype="FP64", shape=list(boxes.shape))
                reply.raw_output_contents.append(boxes.astype("<f8").tobytes())
            elif name == core.LABELS:
                reply.outputs.add(name=name, datatype="BYTES", shape=[len(names)])
                reply.raw_output_contents.append(core.serialize_bytes_tensor(names))
            else:
                arr = np.ascontiguousarray(result.outputs[name])
                reply.outputs.add(name=name, datatype=core.oip_datatype(arr.dtype), shape=list(arr.shape))
                reply.raw_output_contents.append(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
        return reply


def _peer(context) -> str:
    """The calling connection, the key of admission's fair share (server/admission.py)."""
    try:
        return context.peer()
    except Exception:  # a context without a peer (tests)
        return ""


def add_oip_service(server, repository, metrics, max_input_bytes: int, admission=None,
                    max_reply_bytes: int | None = None) -> str:
    """Register the OIP endpoint on a started-or-not grpc server; returns its full service name (for health
    checking and reflection). `admission`: the work slots ModelInfer takes (server/admission.py);
    `max_reply_bytes`: the server's send limit (a reply over it is refused before it is built)."""
    service = OIPService(repository, metrics, max_input_bytes, admission, max_reply_bytes)
    server.add_generic_rpc_handlers((service.handler(),))
    return SERVICE_NAME
