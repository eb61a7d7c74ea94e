"""Shared pieces of the reliability tests: raw gRPC stubs, real frames of the bundled model, process memory.

Why raw stubs: the tests send bytes the UE would never send (broken headers, missing chunks...), so they
talk to the network process below `device/pipeline.py`, with the wire module building the valid parts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc

from splitinfer.common.transport import wire
from splitinfer.common.transport.proto import splitinfer_pb2 as pb

SERVICE = "/splitinfer.v1.SplitInference/"
MODEL_ID = "nanodet"
# The statuses a bad request may get; anything else (UNKNOWN, INTERNAL, a hang) is a server bug.
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.FAILED_PRECONDITION}


class Stubs:
    """Raw-bytes callables of the service on one channel."""

    def __init__(self, address: str, credentials=None, options=(), max_send_mb: int = 64):
        opts = [("grpc.max_send_message_length", max_send_mb << 20),
                ("grpc.max_receive_message_length", 64 << 20), *options]
        self.channel = (grpc.secure_channel(address, credentials, options=opts) if credentials is not None
                        else grpc.insecure_channel(address, options=opts))
        self.infer = self.channel.unary_unary(SERVICE + "Infer", request_serializer=None,
                                              response_deserializer=pb.InferReply.FromString)
        self.stream = self.channel.stream_stream(SERVICE + "Stream", request_serializer=None,
                                                 response_deserializer=pb.StreamReply.FromString)
        self.list = self.channel.unary_unary(SERVICE + "ListModels",
                                             request_serializer=pb.ListModelsRequest.SerializeToString,
                                             response_deserializer=pb.ListModelsReply.FromString)

    def close(self):
        self.channel.close()


def setup_msg(rank: int = 60, codec: str = "none", model_id: str = MODEL_ID, **kw) -> bytes:
    split = kw.pop("split", None) or pb.SplitPoint(rank=rank)
    s = pb.SessionSetup(model_id=model_id, split=split, codec=pb.CodecProfile(spec=codec), **kw)
    return pb.StreamRequest(setup=s).SerializeToString()


def setup_pb(rank: int = 60, codec: str = "none", model_id: str = MODEL_ID) -> pb.SessionSetup:
    return pb.SessionSetup(model_id=model_id, split=pb.SplitPoint(rank=rank), codec=pb.CodecProfile(spec=codec))


@dataclass
class RealFrame:
    """Part I's outputs at a split on a real photo, with the family's meta: a frame the server accepts."""

    rank: int
    arrays: dict
    meta_json: str

    def tensors(self, codec) -> list[wire.EncodedTensor]:
        return [wire.encode_tensor(n, a, codec) for n, a in self.arrays.items()]

    def messages(self, frame_id: int, codec, max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES, **kw):
        return wire.frame_messages(frame_id, self.tensors(codec), meta_json=self.meta_json,
                                   max_message_bytes=max_message_bytes, **kw)


def real_frame(rank: int, image: str = "dog.jpg", img=None) -> RealFrame:
    """Part I's tensors of a bundled photo (or of the picture `img`, an HxWx3 uint8 BGR array) at a split."""
    from splitinfer.common.assets import bundled_images, default_model_path
    from splitinfer.common.families import get_family
    from splitinfer.common.core.images import read_image
    from splitinfer.device.part1 import Part1

    part1 = Part1(default_model_path(), rank=rank, threads=1)
    family = get_family("nanodet")
    if img is None:
        img = read_image(next(p for p in bundled_images() if p.name == image))
    feeds, meta = family.preprocess(img)
    outs = part1.run(feeds)
    return RealFrame(rank, {n: outs[n] for n in part1.plan.part1_outputs}, wire.meta_to_json(meta))


def rewrite(message: bytes, edit) -> bytes:
    """Parse a StreamRequest with protobuf, let `edit(request)` change it, serialize again."""
    req = pb.StreamRequest.FromString(message)
    edit(req)
    return req.SerializeToString()


def call_status(fn, timeout_s: float = 60.0):
    """(code, details, replies) of a call: StatusCode.OK with the replies, or the error's code."""
    try:
        out = fn(timeout_s)
        replies = list(out) if not isinstance(out, (pb.InferReply, pb.ListModelsReply)) else [out]
        return grpc.StatusCode.OK, "", replies
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", []


def stream_status(stubs: Stubs, messages, timeout_s: float = 60.0, metadata=None):
    return call_status(lambda t: stubs.stream(iter(list(messages)), timeout=t, metadata=metadata), timeout_s)


def infer_status(stubs: Stubs, message: bytes, timeout_s: float = 60.0, metadata=None):
    return call_status(lambda t: stubs.infer(message, timeout=t, metadata=metadata), timeout_s)


def rss_kb(pid: int) -> int:
    """Resident memory of a process (kB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def scrape(port: int) -> dict:
    """Prometheus samples of a process as {(name, frozenset(labels)): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        fams = text_string_to_metric_families(r.read().decode())
        return {(s.name, frozenset(s.labels.items())): s.value for f in fams for s in f.samples}


def error_counts(port: int) -> dict:
    """splitinfer_errors_total summed per code."""
    out: dict[str, float] = {}
    for (name, labels), v in scrape(port).items():
        if name == "splitinfer_errors_total":
            code = dict(labels)["code"]
            out[code] = out.get(code, 0) + v
    return out


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "splitinfer.common.cli", *args]


def stop_process(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
    """Signal a process this test started (by its PID) and wait; kill it when it does not stop."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def read_csv(path) -> list[dict]:
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def env_one_thread() -> dict:
    """Environment for child processes sharing 2 cores: one thread per numeric library."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "SPLITINFER_NNC_WORKERS": os.environ.get("SPLITINFER_NNC_WORKERS", "1")}


def meta_json(**kw) -> str:
    return json.dumps(kw)
