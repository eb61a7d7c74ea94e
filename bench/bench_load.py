"""Throughput of one network process under load, side by side: 1 UE, N UEs, and N UEs with hostile clients.

Starts `splitinfer serve` (one process) and runs `splitinfer device` processes against it: first one alone,
then --ues of them at the same time, each sending --frames frames (a bundled photo repeated) at --split
with --codec. Throughput is measured from the UEs' per-frame logs (`results_frames.csv`: when each frame
ended and its end-to-end time), over the window from the first frame read to the last answer, so process
start-up does not count. Prints frames/s, median and p95 end-to-end latency, the server's resident memory
before and at its peak, errors (must be 0) and the ratio N UEs / 1 UE. Every frame costs the whole model,
split between the processes, so the ratio is bounded by the cores: on 2 cores one UE with 2 frames in flight
already keeps both busy (measured: 8 UEs x 20 frames, 11.0 frames/s vs 12.0 for one UE, 0.92x; peak server
RSS +68 MB, 0 failed); with more cores it shows how far one network process scales.

The third row runs the N UEs again while --hostile client threads attack the same process the whole time
(issue 14), cycling through: a zstd decompression bomb at an open-shape split (a 33 kB payload whose header
claims 1 GiB), poisoned meta (negative width), a half-sent chunked frame then cancelled, and calls without
the bearer token. Every good frame must still be answered; the hostile calls' statuses are counted
(measured, 2 cores, 8 UEs x 6 frames at split 120: 28.4 frames/s alone, 28.5 with 4 hostile clients, 48/48
good frames answered; ~60 of each attack refused with its status; peak server RSS 252 -> 319 MB).

The fourth row runs the N UEs again beside an Open Inference Protocol flood on the same process and port
(issue 23): --oip-flood client connections each keep --oip-in-flight authenticated ModelInfer calls in
flight, real frames at the same split, mixed with the OIP attacks: 200 repeated output names, typed INT64
contents, a `meta` sent as int64, a 1,000-name output list, and ModelReady/ModelMetadata sweeps over 48
ranks. The UEs' frames share the work slots with the flood fairly (server/admission.py), so every good
frame must still be answered; the flood's statuses are counted (OK, UNAVAILABLE when busy, and the
attacks' refusals). Measured on 2 cores, 4 UEs x 4 frames at split 120: 5.08 frames/s peaceful, 5.56 beside
2 own-protocol hostile clients, 4.55 (0.89x) beside an OIP flood of 4 x 8 calls; 0 good frames failed; the
flood got 266 OK and 329 UNAVAILABLE, every attack its refusal (typed INT64, int meta, 1,000 names:
INVALID_ARGUMENT; 200 repeated names: OK, answered once), 384 readiness/metadata calls OK; peak server RSS
240 -> 405 MB under the flood (its 32 calls in flight hold 2 MB requests each).

  .venv/bin/python bench/bench_load.py --ues 8 --frames 6 --split 120 --hostile 4 --oip-flood 6
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_ues(address: str, n: int, frames: int, split: str, codec: str, in_flight: int, work: Path,
            server_pid: int, label: str) -> dict:
    from splitinfer.common.assets import bundled_images

    photos = [p for p in bundled_images() if p.suffix.lower() == ".jpg"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outs, procs = [], []
    peak = {"rss": _rss_kb(server_pid)}
    rss_before = peak["rss"]
    done = threading.Event()

    def watch():
        while not done.wait(0.1):
            peak["rss"] = max(peak["rss"], _rss_kb(server_pid))

    threading.Thread(target=watch, daemon=True).start()
    try:
        for i in range(n):
            out = work / f"{label}_ue{i}"
            outs.append(out)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "splitinfer.common.cli", "device", "--server", address,
                 "-s", str(photos[i % len(photos)]), "-loop", str(frames), "--split", split, "-encode_algo", codec,
                 "--in-flight", str(in_flight), "-no_CPU_anchor", "-no_GPU_anchor", "--no-overlay",
                 "--threads", "1", "-results_dir", str(out)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        failures = []
        for p in procs:
            _, err = p.communicate(timeout=1800)
            if p.returncode:
                failures.append(err.strip().splitlines()[-1] if err.strip() else f"exit {p.returncode}")
    finally:
        done.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    starts, ends, e2e, failed = [], [], [], 0
    for out in outs:
        path = out / "results_frames.csv"
        if not path.exists():
            continue
        with path.open(newline="") as fh:
            for r in csv.DictReader(fh):
                if r["Status"] != "ok":
                    failed += 1
                    continue
                end, lat = float(r["Ended_unix_s"]), float(r["End_to_end_ms"]) / 1e3
                ends.append(end)
                starts.append(end - lat)
                e2e.append(lat * 1e3)
    window = (max(ends) - min(starts)) if ends else float("nan")
    e2e.sort()
    return {"ues": n, "frames": len(ends), "failed": failed + len(failures), "window_s": window,
            "fps": len(ends) / window if ends else 0.0, "median_ms": statistics.median(e2e) if e2e else 0.0,
            "p95_ms": e2e[int(0.95 * (len(e2e) - 1))] if e2e else 0.0, "rss_before_mb": rss_before / 1024,
            "rss_peak_mb": peak["rss"] / 1024, "errors": failures}


TOKEN = "bench-load-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
BOMB_RANK = 135  # its crossing tensor is [None, None, None] in the graph


def hostile_messages():
    """name -> (metadata, list of stream messages): the attacks, built once from the bundled model's graph."""
    import numpy as np
    import zstandard

    from splitinfer.common.assets import default_model_path
    from splitinfer.common.codecs import get_codec
    from splitinfer.common.core.onnx_io import load_model
    from splitinfer.common.split.graph import SplitGraph
    from splitinfer.common.transport import wire
    from splitinfer.common.transport.proto import splitinfer_pb2 as pb

    zstd = get_codec("zstd")
    plan = SplitGraph(load_model(default_model_path())).plan(rank=BOMB_RANK)
    infos = {t.name: t for t in plan.crossing}
    g = SplitGraph(load_model(default_model_path()))
    for n in plan.part1_final_outputs:
        infos.setdefault(n, g.tensor_info(n))
    cobj = zstandard.ZstdCompressor(write_content_size=True).compressobj(size=1 << 30)
    bomb = b"".join(cobj.compress(bytes(1 << 22)) for _ in range(256)) + cobj.flush()

    def tensors(bomb_it: bool):
        out = []
        for name, info in infos.items():
            if info.shape is None or not all(isinstance(d, int) for d in info.shape):
                shape = (1, 1024, 1 << 18) if bomb_it else (1, 44, 2704)
                payload = bomb if bomb_it else zstd.encode(np.zeros(shape, np.float32))
                out.append(wire.EncodedTensor(name, "float32", shape, zstd.codec_id, {}, payload, 0))
            else:
                out.append(wire.encode_tensor(name, np.zeros(info.shape, np.dtype(info.dtype)), zstd))
        return out

    def setup(rank=BOMB_RANK):
        return pb.StreamRequest(setup=pb.SessionSetup(model_id="nanodet", split=pb.SplitPoint(rank=rank),
                                                      codec=pb.CodecProfile(spec="zstd"))).SerializeToString()

    meta = '{"width":640,"height":480}'
    half = wire.frame_messages(1, tensors(False), meta_json=meta, max_message_bytes=64 << 10)
    return {
        "bomb": (AUTH, [setup(), *wire.frame_messages(1, tensors(True), meta_json=meta)]),
        "meta": (AUTH, [setup(), *wire.frame_messages(1, tensors(False), meta_json='{"width":-640,"height":480}')]),
        "half": (AUTH, [setup(), *half[:-1]]),
        "noauth": ((), [setup(), *wire.frame_messages(1, tensors(False), meta_json=meta)]),
    }


def hostile_clients(address: str, n: int, stop: threading.Event, counts: dict) -> list[threading.Thread]:
    """`n` threads cycling through the attacks until `stop`; statuses counted per attack."""
    import queue

    import grpc

    from splitinfer.common.transport.proto import splitinfer_pb2 as pb

    attacks = hostile_messages()
    lock = threading.Lock()

    def one(channel, name):
        metadata, msgs = attacks[name]
        call = channel.stream_stream("/splitinfer.v1.SplitInference/Stream", request_serializer=None,
                                     response_deserializer=pb.StreamReply.FromString)
        q: queue.Queue = queue.Queue()
        for m in msgs:
            q.put(m)
        if name != "half":
            q.put(None)
        replies = call(iter(q.get, None), timeout=30, metadata=metadata)
        try:
            if name == "half":
                next(replies)
                stop.wait(0.2)
                replies.cancel()
            list(replies)
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
        finally:
            q.put(None)
        with lock:
            counts.setdefault(name, {}).setdefault(code, 0)
            counts[name][code] += 1

    def loop(k):
        channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
        names = list(attacks)
        i = k
        while not stop.is_set():
            one(channel, names[i % len(names)])
            i += 1
        channel.close()

    threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    return threads


OIP_ATTACKS = ("repeated-outputs", "typed-int64", "meta-int64", "many-outputs")


def oip_messages(split: int) -> dict:
    """kind -> a serialized ModelInferRequest: a real frame at `split` (the bundled photo through Part I)
    and the OIP attacks built on it."""
    from splitinfer.common.assets import bundled_images, default_model_path
    from splitinfer.common.core.images import read_image
    from splitinfer.common.families import get_family
    from splitinfer.device.oip_client import build_request
    from splitinfer.device.part1 import Part1

    part1 = Part1(default_model_path(), rank=split, threads=1)
    feeds, meta = get_family("nanodet").preprocess(read_image(next(p for p in bundled_images() if p.name == "dog.jpg")))
    outs = part1.run(feeds)
    arrays = {n: outs[n] for n in part1.plan.part1_outputs}
    name = f"nanodet.r{split}"
    good = build_request(name, arrays, meta)[0]
    out = {"good": good.SerializeToString(),
           "repeated-outputs": build_request(name, arrays, meta, outputs=["detections"] * 200)[0].SerializeToString(),
           "many-outputs": build_request(name, arrays, meta, outputs=["labels"] * 1000)[0].SerializeToString()}
    r = type(good)()
    r.CopyFrom(good)
    r.parameters["meta"].Clear()
    r.parameters["meta"].int64_param = 7
    out["meta-int64"] = r.SerializeToString()
    r.CopyFrom(good)
    del r.raw_input_contents[:]
    r.inputs[0].datatype = "INT64"
    r.inputs[0].contents.int64_contents.extend(range(1 << 40, (1 << 40) + 200_000))
    out["typed-int64"] = r.SerializeToString()
    return out


def oip_flood(address: str, n: int, in_flight: int, split: int, stop: threading.Event,
              counts: dict) -> list[threading.Thread]:
    """`n` OIP clients (each its own connection) keeping `in_flight` ModelInfer calls in flight until `stop`:
    three good frames, then one attack, in turn; every 20th round a ModelReady + ModelMetadata sweep."""
    import time

    import grpc

    from splitinfer.common.transport.oip_proto import grpc_predict_v2_pb2 as pb

    msgs = oip_messages(split)
    lock = threading.Lock()

    def count(kind, code):
        with lock:
            counts.setdefault(kind, {}).setdefault(code, 0)
            counts[kind][code] += 1

    def loop(k):
        channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20),
                                                          ("grpc.max_receive_message_length", 64 << 20),
                                                          ("grpc.use_local_subchannel_pool", 1)])
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=None,
                                    response_deserializer=None)
        ready = channel.unary_unary("/inference.GRPCInferenceService/ModelReady",
                                    request_serializer=pb.ModelReadyRequest.SerializeToString,
                                    response_deserializer=pb.ModelReadyResponse.FromString)
        meta = channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata",
                                   request_serializer=pb.ModelMetadataRequest.SerializeToString,
                                   response_deserializer=pb.ModelMetadataResponse.FromString)
        pending, i = [], k
        while not stop.is_set():
            while len(pending) < in_flight:
                kind = "good" if i % 4 else OIP_ATTACKS[(i // 4) % len(OIP_ATTACKS)]
                pending.append((kind, infer.future(msgs[kind], timeout=30, metadata=AUTH)))
                i += 1
                if i % 80 == 0:  # a readiness sweep over 48 ranks (no Part II may be built for it)
                    for r in range(2, 98, 2):
                        try:
                            ready(pb.ModelReadyRequest(name=f"nanodet.r{r}"), timeout=10, metadata=AUTH)
                            meta(pb.ModelMetadataRequest(name=f"nanodet.r{r}"), timeout=10, metadata=AUTH)
                            count("ready+metadata", "OK")
                        except grpc.RpcError as exc:
                            count("ready+metadata", exc.code().name)
            for item in [p for p in pending if p[1].done()]:
                pending.remove(item)
                count(item[0], item[1].code().name)
            time.sleep(0.002)
        for _, f in pending:
            f.cancel()
        channel.close()

    threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    return threads


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ues", type=int, default=8, help="UE processes at once (default 8)")
    ap.add_argument("--frames", type=int, default=6, help="frames per UE (default 6)")
    ap.add_argument("--split", default="120", help="split rank (default 120)")
    ap.add_argument("--codec", default="zstd", help="codec (default zstd)")
    ap.add_argument("--in-flight", type=int, default=2, help="frames in flight per UE (default 2)")
    ap.add_argument("--server-threads", type=int, default=1, help="intra-op threads of Part II (default 1)")
    ap.add_argument("--hostile", type=int, default=4, help="hostile client threads in the third row (default 4)")
    ap.add_argument("--oip-flood", type=int, default=6, help="OIP flood clients in the fourth row (default 6)")
    ap.add_argument("--oip-in-flight", type=int, default=8, help="ModelInfer calls each keeps in flight (default 8)")
    args = ap.parse_args(argv)

    from splitinfer.experiments.server_process import ServerProcess

    work = Path(tempfile.mkdtemp(prefix="bench_load_"))
    try:
        with ServerProcess(threads=args.server_threads, device="cpu", env={"SPLITINFER_TOKEN": TOKEN},
                           extra_args=["--max-streams", str(max(16, args.ues + args.hostile + 1))]) as server:
            print(f"network process pid {server.proc.pid} on {server.address}; {os.cpu_count()} cores", flush=True)
            os.environ["SPLITINFER_TOKEN"] = TOKEN  # the UE processes read it
            run_ues(server.address, 1, 2, args.split, args.codec, args.in_flight, work, server.proc.pid, "warm")
            rows = [run_ues(server.address, n, args.frames, args.split, args.codec, args.in_flight, work,
                            server.proc.pid, f"n{n}") for n in (1, args.ues)]
            stop, counts = threading.Event(), {}
            threads = hostile_clients(server.address, args.hostile, stop, counts)
            try:
                rows.append(run_ues(server.address, args.ues, args.frames, args.split, args.codec, args.in_flight,
                                    work, server.proc.pid, "hostile"))
            finally:
                stop.set()
                for t in threads:
                    t.join(60)
            stop, oip_counts = threading.Event(), {}
            threads = oip_flood(server.address, args.oip_flood, args.oip_in_flight, int(args.split), stop, oip_counts)
            try:
                rows.append(run_ues(server.address, args.ues, args.frames, args.split, args.codec, args.in_flight,
                                    work, server.proc.pid, "oip"))
            finally:
                stop.set()
                for t in threads:
                    t.join(60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report(args, rows, counts, oip_counts)


def report(args, rows: list, counts: dict, oip_counts: dict) -> int:
    """The table and the ratios; 0 when every good frame was answered."""
    print(f"\nsplit {args.split}, codec {args.codec}, {args.frames} frames per UE, {args.in_flight} in flight")
    print(f"{'UEs':>4} {'frames':>6} {'failed':>6} {'window s':>8} {'frames/s':>8} {'median ms':>9} {'p95 ms':>7} "
          f"{'server RSS MB':>14}")
    for r, what in zip(rows, ("", "", f"  + {args.hostile} hostile (own protocol)",
                              f"  + OIP flood {args.oip_flood} x {args.oip_in_flight}")):
        print(f"{r['ues']:4d} {r['frames']:6d} {r['failed']:6d} {r['window_s']:8.2f} {r['fps']:8.2f} "
              f"{r['median_ms']:9.1f} {r['p95_ms']:7.1f} {r['rss_before_mb']:6.0f} -> {r['rss_peak_mb']:4.0f}{what}")
        for e in r["errors"]:
            print(f"     error: {e}")
    one, many, attacked, flooded = rows
    print(f"\nthroughput {many['ues']} UEs / 1 UE: {many['fps'] / one['fps']:.2f}x (cores: {os.cpu_count()}); "
          f"with {args.hostile} hostile clients: {attacked['fps'] / many['fps']:.2f}x of the peaceful run; "
          f"beside the OIP flood: {flooded['fps'] / many['fps']:.2f}x")
    print(f"hostile calls by attack and status: {counts}")
    print(f"OIP flood ({args.oip_flood} clients x {args.oip_in_flight} in flight) by kind and status: {oip_counts}")
    ok = many["failed"] == one["failed"] == attacked["failed"] == flooded["failed"] == 0
    print(f"every good frame answered: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
