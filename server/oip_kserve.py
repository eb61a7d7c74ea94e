"""Part II on a real KServe model server: a `kserve.Model` per split, served by the KServe SDK's `ModelServer`.

Why: in production Part II runs on the serving stack the operator already has; KServe's Python SDK serves the
Open Inference Protocol over gRPC (and REST) with its own health, metadata and metrics, and its
`InferenceService` deploys it on Kubernetes (deploy/kserve/). Each registered model is one split of a model of
the repository, named as server/oip_core.py says (`nanodet.r60`); it runs Part II, consolidation and the
family's post-processing, and answers `detections` + `labels` (and raw model outputs when named).

Environment: the KServe SDK (and tritonclient) need protobuf < 7, this project's own stubs protobuf >= 7, so
this module runs in the second environment .venv-oip (scripts/setup_oip.sh). It must never import the
generated stubs of common/transport/proto or oip_proto: it uses the split engine, families and core through
server/model_repository.py and server/oip_core.py only (tests/oip/test_kserve.py checks the imports).

Run: `.venv-oip/bin/python -m splitinfer.server.oip_kserve --models DIR --split nanodet.r60 [--split ...]
[--device cpu|gpu|auto] [--threads N] --http_port 8080 --grpc_port 8081` (the `--*_port`, `--workers`...
options are KServe's own ModelServer options).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import kserve
from grpc_interceptor.exceptions import ResourceExhausted
from kserve.errors import InvalidInput, ModelNotFound
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from splitinfer.common.core.errors import UserError
from splitinfer.server import oip_core as core
from splitinfer.server.errors import RequestError

MAX_INPUT_BYTES = 1 << 30
DEFAULT_MAX_REPLY_BYTES = 8 << 20  # KServe's --grpc_max_send_message_length default


def _refusal(exc: Exception) -> Exception:
    """KServe's exception for a refusal (its servers map them to INVALID_ARGUMENT / NOT_FOUND /
    RESOURCE_EXHAUSTED statuses)."""
    code = getattr(exc, "code", "INVALID_ARGUMENT")
    if code == "NOT_FOUND":
        return ModelNotFound(str(exc))
    if code == "RESOURCE_EXHAUSTED":
        return ResourceExhausted(str(exc))
    return InvalidInput(str(exc))


def _parameter(params, key: str):
    """A request parameter from gRPC (InferParameter messages: the value of whichever kind was set) or
    REST (plain values); a non-string `meta` is passed on as it is, so that parse_meta refuses it."""
    if not params or key not in params:
        return None
    value = params[key]
    if hasattr(value, "WhichOneof"):
        which = value.WhichOneof("parameter_choice")
        return getattr(value, which) if which else None
    return value


class OneLineRefusals(logging.Filter):
    """KServe logs every refused request with its full traceback (its exception interceptor and REST error
    handlers log `exc_info`): for a refusal, one line is enough; a real error keeps its traceback."""

    REFUSALS = (InvalidInput, ModelNotFound, ResourceExhausted)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, self.REFUSALS):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_refusals() -> None:
    """Install `OneLineRefusals` on KServe's logger (where its interceptor and error handlers log)."""
    from kserve.logging import logger

    if not any(isinstance(f, OneLineRefusals) for f in logger.filters):
        logger.addFilter(OneLineRefusals())


class Part2Model(kserve.Model):
    """One split of one repository model as a KServe model."""

    def __init__(self, name: str, repository, max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES):
        super().__init__(name)
        self.repository = repository
        self.max_reply_bytes = int(max_reply_bytes)
        self.model_id, self.rank = core.parse_model_name(name)
        self.part2 = None

    def load(self) -> bool:
        self.part2 = self.repository.part2(self.model_id, rank=self.rank)
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict]:
        return [{"name": s.name, "datatype": s.datatype, "shape": s.shape} for s in core.input_specs(self.part2)]

    def get_output_types(self) -> list[dict]:
        graph = self.repository.graph(self.model_id)
        return [{"name": s.name, "datatype": s.datatype, "shape": s.shape}
                for s in core.output_specs(self.part2, graph)]

    def _run(self, payload: InferRequest) -> InferResponse:
        part2 = self.part2
        arrays = {}
        core.check_complete(part2, [i.name for i in payload.inputs])
        wanted = core.requested_outputs([o.name for o in (payload.request_outputs or [])], part2)
        meta = core.parse_meta(_parameter(payload.parameters, core.META_PARAMETER))
        for inp in payload.inputs:
            _, want, shape, nbytes = core.check_tensor(part2, inp.name, inp.datatype, inp.shape, MAX_INPUT_BYTES)
            try:
                arr = inp.as_numpy()
            except (ValueError, InvalidInput) as exc:
                raise RequestError("INVALID_ARGUMENT", f"input {inp.name!r}: contents do not fit shape {shape} x "
                                                       f"{inp.datatype} ({exc})") from None
            if arr.nbytes != nbytes:
                raise RequestError("INVALID_ARGUMENT", f"input {inp.name!r}: {arr.nbytes} bytes, needs {nbytes}")
            arrays[inp.name] = arr.astype(want) if arr.dtype != want else arr
        result = core.run_part2(part2, arrays, meta)
        boxes, labels = core.detection_arrays(result.detections)
        core.check_reply_size(wanted, result, boxes, labels, self.max_reply_bytes)  # before any output is built
        outputs = []
        for name in wanted:
            if name == core.DETECTIONS:
                out = InferOutput(name, list(boxes.shape), "FP64")
                out.set_data_from_numpy(boxes)
            elif name == core.LABELS:
                out = InferOutput(name, [len(labels)], "BYTES")
                out.set_data_from_numpy(labels)
            else:
                arr = result.outputs[name]
                out = InferOutput(name, list(arr.shape), core.oip_datatype(arr.dtype))
                out.set_data_from_numpy(arr)
            outputs.append(out)
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=outputs,
                             use_binary_outputs=True, parameters={"provider": part2.provider})

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        try:  # Part II is blocking onnxruntime work: off the event loop
            return await asyncio.get_running_loop().run_in_executor(None, self._run, payload)
        except (RequestError, UserError) as exc:
            raise _refusal(exc) from None


def build_models(models_dir, names, device: str = "cpu", threads: int | None = None,
                 max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES) -> list[Part2Model]:
    """Loaded Part2Models for OIP model names over one model repository folder."""
    from splitinfer.server.model_repository import ModelRepository

    repo = ModelRepository(models_dir, device=device, threads=threads)
    out = []
    for name in names:
        m = Part2Model(name, repo, max_reply_bytes)
        m.load()
        out.append(m)
    return out


def main(argv=None) -> int:
    from kserve.model_server import parser as kserve_parser

    from splitinfer.common.assets import MODELS_DIR

    p = argparse.ArgumentParser(parents=[kserve_parser], description="Part II of split models on KServe's ModelServer")
    p.add_argument("--models", default=str(MODELS_DIR), help="model repository: DIR/<id>/model.onnx + model.json")
    p.add_argument("--split", action="append", required=True, metavar="NAME",
                   help="an OIP model name to serve, <model id>.r<rank> (repeat for several)")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu", "auto"])
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads per session")
    args, _ = p.parse_known_args(argv)
    try:
        models = build_models(args.models, args.split, args.device, args.threads,
                              args.grpc_max_send_message_length or DEFAULT_MAX_REPLY_BYTES)
    except (UserError, RequestError) as exc:
        print(f"splitinfer kserve: {exc}", file=sys.stderr)
        return 2
    quiet_refusals()
    kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1).start(models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
