"""Overhead of the Open Inference Protocol vs our own stream, side by side, on the same frames.

One network process (`splitinfer serve`, its own OS process) serves both protocols; optionally a KServe
ModelServer (.venv-oip) serves the same splits. One client process sends the same Part I outputs (a real
photo through Part I of the bundled NanoDet) one frame at a time, rounds interleaved so the machine's load
falls on every path alike, and measures the round trip per frame including building the request:

  stream     our protocol: a bidirectional stream (set-up once, then frames), codec none
  unary      our protocol: one Infer call per frame
  oip        the network process's OIP endpoint (ModelInfer, raw FP32) through the UE's OIP client
  oip-fp16   the same, inputs sent as raw FP16 (half the bytes, like our float16 codec)
  kserve     the KServe ModelServer through the UE's OIP client (with --kserve; needs .venv-oip)
  triton-cl  the real tritonclient against the network process's OIP endpoint (with --kserve; .venv-oip);
             its own process, timed in a phase of its own after the interleaved rounds (so less comparable
             under a fluctuating load)

Prints per split: bytes sent, median and p90 ms, and the median's ratio to `stream`; the server's own Part II
time is the same on every path, so the differences are the protocols' (and servers') overhead.

  .venv/bin/python bench/bench_oip.py [--splits 60 9] [--frames 20] [--kserve]

Measured on the 2-core development machine shared with other jobs (load average ~3), 30 frames, --kserve:
split 60 (2.1 MB): stream 31.2 ms median; unary 1.02x, oip 0.97x, oip-fp16 1.01x, kserve 1.01x, triton-cl 1.20x;
split 9 (5.5 MB):  stream 50.3 ms median; unary 1.04x, oip 1.02x, oip-fp16 1.09x, kserve 1.05x, triton-cl 1.21x.
Part II dominates; OIP through our client costs within 5% of our stream (noise level here); FP16 halves the
bytes but its cast costs about what loopback saves; tritonclient (its own process, a separate phase) ~1.2x.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OIP_PYTHON = ROOT / ".venv-oip" / "bin" / "python"


def part1_outputs(rank: int, image: str = "dog.jpg") -> tuple[dict, dict]:
    """Part I's outputs at `rank` on a bundled photo, and the family's meta."""
    from splitinfer.common.assets import bundled_images, default_model_path
    from splitinfer.common.core.images import read_image
    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.core.runtime import make_session
    from splitinfer.common.families import get_family
    from splitinfer.common.split.graph import SplitGraph

    g = SplitGraph(load_model(default_model_path()))
    plan = g.plan(rank=rank)
    part1, _ = g.extract(plan)
    sess = make_session(part1, device="cpu", threads=1)
    family = get_family("nanodet")
    feeds, meta = family.preprocess(read_image(next(p for p in bundled_images() if p.name == image)))
    values = sess.run({k: v for k, v in feeds.items() if k in sess.input_names}, plan.part1_outputs)
    return dict(zip(plan.part1_outputs, values)), meta


class OwnStream:
    """Our stream, one frame in flight: send a frame's messages, wait for its result."""

    def __init__(self, address: str, rank: int):
        import grpc

        from splitinfer.common.transport.proto import splitinfer_pb2 as pb

        self.pb = pb
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20),
                                                               ("grpc.max_receive_message_length", 64 << 20)])
        call = self.channel.stream_stream("/splitinfer.v1.SplitInference/Stream", request_serializer=None,
                                          response_deserializer=pb.StreamReply.FromString)
        self.q: queue.Queue = queue.Queue()
        setup = pb.StreamRequest(setup=pb.SessionSetup(model_id="nanodet", split=pb.SplitPoint(rank=rank),
                                                       codec=pb.CodecProfile(spec="none"))).SerializeToString()

        def requests():
            yield setup
            while (item := self.q.get()) is not None:
                yield from item

        self.replies = call(requests())
        next(self.replies)  # the session

    def frame(self, frame_id: int, arrays: dict, meta_json: str) -> int:
        from splitinfer.common.codecs import get_codec
        from splitinfer.common.transport import wire

        codec = get_codec("none")
        msgs = wire.frame_messages(frame_id, [wire.encode_tensor(n, a, codec) for n, a in arrays.items()],
                                   meta_json=meta_json)
        self.q.put(msgs)
        reply = next(self.replies)
        return len(reply.result.detections)

    def close(self):
        self.q.put(None)
        self.channel.close()


def own_unary(channel, pb, rank: int, frame_id: int, arrays: dict, meta_json: str) -> int:
    from splitinfer.common.codecs import get_codec
    from splitinfer.common.transport import wire

    codec = get_codec("none")
    (msg,) = wire.frame_messages(frame_id, [wire.encode_tensor(n, a, codec) for n, a in arrays.items()],
                                 meta_json=meta_json, max_message_bytes=64 << 20)
    part = pb.StreamRequest.FromString(msg).frame
    req = pb.InferRequest(setup=pb.SessionSetup(model_id="nanodet", split=pb.SplitPoint(rank=rank),
                                                codec=pb.CodecProfile(spec="none")), frame=part)
    call = channel.unary_unary("/splitinfer.v1.SplitInference/Infer", request_serializer=None,
                               response_deserializer=pb.InferReply.FromString)
    return len(call(req.SerializeToString(), timeout=60).result.detections)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_kserve(ranks) -> tuple[subprocess.Popen, str]:
    from splitinfer.device.oip_client import OIPClient

    http, grpc_port = _free_port(), _free_port()
    args = [str(OIP_PYTHON), "-m", "splitinfer.server.oip_kserve", "--threads", "1", "--http_port", str(http),
            "--grpc_port", str(grpc_port), "--configure_logging", "False"]
    for r in ranks:
        args += ["--split", f"nanodet.r{r}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{grpc_port}"
    with OIPClient(address) as c:
        c.wait_ready(timeout=120)
    return proc, address


def tritonclient_times(address: str, rank: int, arrays: dict, meta: dict, frames: int) -> list[float]:
    with tempfile.TemporaryDirectory() as d:
        npz, mj, out = Path(d) / "in.npz", Path(d) / "meta.json", Path(d) / "out.json"
        np.savez(npz, **arrays)
        mj.write_text(json.dumps(meta))
        script = ROOT / "tests" / "oip" / "tritonclient_infer.py"
        subprocess.run([str(OIP_PYTHON), str(script), address, f"nanodet.r{rank}", str(npz), str(mj), str(out),
                        "--repeat", str(frames + 2)], check=True, capture_output=True, timeout=600)
        return json.loads(out.read_text())["seconds"][2:]  # the first calls open the channel


def main(argv=None) -> int:
    import grpc

    from splitinfer.common.transport import wire
    from splitinfer.experiments.server_process import ServerProcess
    from splitinfer.common.transport.proto import splitinfer_pb2 as pb
    from splitinfer.device.oip_client import OIPClient

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--splits", type=int, nargs="+", default=[60, 9])
    ap.add_argument("--frames", type=int, default=20, help="timed frames per path and split (after 2 warm-ups)")
    ap.add_argument("--kserve", action="store_true", help="also the KServe ModelServer and tritonclient (.venv-oip)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads of the servers' Part II")
    args = ap.parse_args(argv)
    if args.kserve and not OIP_PYTHON.exists():
        print("bench_oip: --kserve needs .venv-oip (scripts/setup_oip.sh)", file=sys.stderr)
        return 2
    kserve = None
    with ServerProcess(threads=args.threads, max_message_mb=64) as srv:
        if args.kserve:
            kserve = start_kserve(args.splits)
        try:
            channel = grpc.insecure_channel(srv.address, options=[("grpc.max_send_message_length", 64 << 20)])
            oip = OIPClient(srv.address)
            ks = OIPClient(kserve[1]) if kserve else None
            print(f"{'split':>5} {'path':<10} {'bytes':>10} {'median ms':>10} {'p90 ms':>8} {'vs stream':>9}")
            for rank in args.splits:
                arrays, meta = part1_outputs(rank)
                meta_json = wire.meta_to_json(meta)
                meta_plain = json.loads(meta_json)
                raw = sum(a.nbytes for a in arrays.values())
                stream = OwnStream(srv.address, rank)
                paths = {
                    "stream": (raw, lambda i: stream.frame(i, arrays, meta_json)),
                    "unary": (raw, lambda i: own_unary(channel, pb, rank, i, arrays, meta_json)),
                    "oip": (raw, lambda i: len(oip.infer_frame(f"nanodet.r{rank}", arrays, meta_plain).detections)),
                    "oip-fp16": (raw // 2, lambda i: len(oip.infer_frame(f"nanodet.r{rank}", arrays, meta_plain,
                                                                          half=True).detections)),
                }
                if ks is not None:
                    paths["kserve"] = (raw, lambda i: len(ks.infer_frame(f"nanodet.r{rank}", arrays,
                                                                         meta_plain).detections))
                times = {k: [] for k in paths}
                counts = {}
                for i in range(args.frames + 2):  # interleaved rounds; the first two are warm-ups
                    for name, (_, fn) in paths.items():
                        t0 = time.perf_counter()
                        counts[name] = fn(i + 1)
                        if i >= 2:
                            times[name].append(time.perf_counter() - t0)
                stream.close()
                if len(set(counts.values())) > 2:
                    print(f"warning: detection counts differ between paths: {counts}", file=sys.stderr)
                if kserve:
                    times["triton-cl"] = tritonclient_times(srv.address, rank, arrays, meta_plain, args.frames)
                    paths["triton-cl"] = (raw, None)
                base = statistics.median(times["stream"])
                for name, ts in times.items():
                    med = statistics.median(ts)
                    p90 = sorted(ts)[int(0.9 * (len(ts) - 1))]
                    print(f"{rank:>5} {name:<10} {paths[name][0]:>10} {med * 1e3:>10.2f} {p90 * 1e3:>8.2f} "
                          f"{med / base:>8.2f}x")
            oip.close()
            if ks:
                ks.close()
            channel.close()
        finally:
            if kserve:
                kserve[0].send_signal(signal.SIGTERM)
                try:
                    kserve[0].wait(timeout=20)
                except subprocess.TimeoutExpired:
                    kserve[0].kill()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
