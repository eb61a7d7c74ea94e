"""Shared pieces of the OIP tests: the second environment, real frames as files, tritonclient as a process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
OIP_PYTHON = ROOT / ".venv-oip" / "bin" / "python"
TRITON_SCRIPT = Path(__file__).with_name("tritonclient_infer.py")
sys.path.insert(0, str(ROOT / "tests"))


def require_oip_venv() -> Path:
    if not OIP_PYTHON.exists():
        pytest.skip("needs .venv-oip (kserve, tritonclient): run scripts/setup_oip.sh")
    return OIP_PYTHON


def frame_files(frame, folder: Path) -> tuple[Path, Path]:
    """A RealFrame as inputs.npz + meta.json (what the .venv-oip processes read)."""
    npz, meta = folder / f"inputs_r{frame.rank}.npz", folder / f"meta_r{frame.rank}.json"
    np.savez(npz, **frame.arrays)
    meta.write_text(frame.meta_json)
    return npz, meta


def tritonclient_infer(address: str, name: str, npz: Path, meta: Path, out: Path, *, half: bool = False,
                       repeat: int = 1, timeout: float = 120.0) -> dict:
    args = [str(require_oip_venv()), str(TRITON_SCRIPT), address, name, str(npz), str(meta), str(out),
            "--repeat", str(repeat)] + (["--half"] if half else [])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def as_rows(dets) -> list[list]:
    return [[d.label, d.x1, d.y1, d.x2, d.y2, d.score] for d in dets]


def anchor_detections(image: str = "dog.jpg") -> list:
    """The whole bundled model's detections on a bundled photo (the anchor), run here with onnxruntime."""
    from splitinfer.common.assets import bundled_images, default_model_path
    from splitinfer.common.core.images import read_image
    from splitinfer.common.core.runtime import make_session
    from splitinfer.common.families import get_family

    family = get_family("nanodet")
    feeds, meta = family.preprocess(read_image(next(p for p in bundled_images() if p.name == image)))
    sess = make_session(default_model_path(), device="cpu", threads=1)
    outs = dict(zip(sess.output_names, sess.run({k: v for k, v in feeds.items() if k in sess.input_names})))
    return family.postprocess(outs, meta)


def equal_to_rounding(anchor, split, box_px: float = 1e-3, score: float = 1e-5) -> bool:
    """Same labels in the same order, boxes and scores within float rounding (the whole model and its two
    parts are optimised apart by onnxruntime, so a lossless split may differ in the last float bits)."""
    return len(anchor) == len(split) and all(
        a.label == s.label and abs(a.score - s.score) <= score and max(abs(x - y) for x, y in zip(a.box, s.box)) <= box_px
        for a, s in zip(anchor, split))


def same_objects(anchor, split, iou: float = 0.5) -> bool:
    """Every detection matched one to one with the same label and IoU >= `iou` (lossy inputs, e.g. FP16)."""
    from splitinfer.common.core.detections import box_iou

    if len(anchor) != len(split):
        return False
    if not anchor:
        return True
    ious = box_iou(np.array([d.box for d in anchor]), np.array([d.box for d in split]))
    used = set()
    for i, a in enumerate(anchor):
        best = max((j for j, s in enumerate(split) if j not in used and s.label == a.label),
                   key=lambda j: ious[i, j], default=None)
        if best is None or ious[i, best] < iou:
            return False
        used.add(best)
    return True


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KServeProcess:
    """A KServe ModelServer (server/oip_kserve.py in .venv-oip) serving `names`, as its own OS process;
    a context manager that waits until it answers ServerReady (through our OIP client) and stops it."""

    def __init__(self, names, threads: int = 1, timeout: float = 120.0):
        import os

        from splitinfer.device.oip_client import OIPClient

        python = require_oip_venv()
        self.http_port, self.grpc_port = free_port(), free_port()
        args = [str(python), "-m", "splitinfer.server.oip_kserve", "--threads", str(threads), "--http_port",
                str(self.http_port), "--grpc_port", str(self.grpc_port), "--configure_logging", "False"]
        for n in names:
            args += ["--split", n]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
        self.address = f"127.0.0.1:{self.grpc_port}"
        with OIPClient(self.address, timeout=10) as c:
            try:
                c.wait_ready(timeout=timeout)
            except Exception:
                self.proc.kill()
                raise RuntimeError(f"KServe server did not come up: {self.proc.stderr.read()[-3000:]}") from None

    def stop(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "KServeProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# -- hostile-request tests: raw calls, statuses and the server's memory from /proc ----------------------------

from grpc_helpers import rss_kb  # noqa: E402  (tests/ is on the path from here on)
from splitinfer.common.transport.oip_proto import grpc_predict_v2_pb2 as pb  # noqa: E402
from splitinfer.device.oip_client import build_request  # noqa: E402

OK, IA, NF, RE = (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                  grpc.StatusCode.RESOURCE_EXHAUSTED)
METHOD = "/inference.GRPCInferenceService/"


def _peak_reset(pid: int) -> float:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    return rss_kb(pid) / 1024


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def measured(pid: int, fn):
    """(result of fn(), peak growth MB, growth MB afterwards) of the server process."""
    base = _peak_reset(pid)
    result = fn()
    return result, _hwm_mb(pid) - base, rss_kb(pid) / 1024 - base


class Caller:
    """Raw OIP calls on a connection of its own: (status, details, reply) of each."""

    def __init__(self, address: str, max_mb: int = 64):
        opts = [("grpc.max_send_message_length", max_mb << 20), ("grpc.max_receive_message_length", max_mb << 20),
                ("grpc.use_local_subchannel_pool", 1)]  # its own connection, as a client in its own process
        self.channel = grpc.insecure_channel(address, options=opts)

    def call(self, method: str, request: bytes, reply_type, timeout: float = 60):
        fn = self.channel.unary_unary(METHOD + method, request_serializer=None,
                                      response_deserializer=reply_type.FromString)
        try:
            return OK, "", fn(request, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or "", None

    def infer(self, req, timeout: float = 60):
        raw = req if isinstance(req, bytes) else req.SerializeToString()
        return self.call("ModelInfer", raw, pb.ModelInferResponse, timeout)

    def ready(self, name: str):
        code, details, reply = self.call("ModelReady", pb.ModelReadyRequest(name=name).SerializeToString(),
                                         pb.ModelReadyResponse)
        assert code == OK, details
        return reply.ready

    def metadata(self, name: str):
        return self.call("ModelMetadata", pb.ModelMetadataRequest(name=name).SerializeToString(),
                         pb.ModelMetadataResponse)


def request(frame, **kw):
    """The ModelInferRequest of a RealFrame (tests/grpc_helpers.py) at its own split."""
    return build_request(f"nanodet.r{frame.rank}", frame.arrays, json.loads(frame.meta_json), **kw)[0]
