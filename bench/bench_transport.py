"""Transport speed on loopback between two OS processes, side by side: raw gRPC vs splitinfer's framing.

  raw   bytes messages of the chunk size on a gRPC stream, nothing parsed (the ceiling grpcio gives)
  wire  a float32 tensor framed by splitinfer.common.transport.wire (headers, chunks under the message limit),
        reassembled and turned back into an array on the other side (np.frombuffer, no decode copy)

Prints GB/s per tensor size and message limit and the ratio wire/raw. Goal: >= 1 GB/s for
multi-MB tensors; each side copies the payload at most once (see common/transport/wire.py; tests prove it).

  .venv/bin/python bench/bench_transport.py
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent import futures

import numpy as np

from splitinfer.common.core.allocator import tune_allocator

SERVICE = "bench.Sink"


def run_sink() -> int:
    """The receiving process: counts raw bytes, or reassembles frames with the wire module."""
    import grpc

    from splitinfer.common.transport import wire

    tune_allocator()

    def raw(it, ctx):
        n = 0
        for m in it:
            n += len(m)
        yield n.to_bytes(8, "little")

    def framed(it, ctx):
        asm = wire.FrameAssembler()
        for m in it:
            f = asm.add(wire.parse_stream_request(m)[1])
            if f is not None:
                t = f.tensors[0]
                arr = np.frombuffer(t.payload, dtype=t.dtype).reshape(t.shape)
                yield int(arr.nbytes).to_bytes(8, "little")

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Raw": grpc.stream_stream_rpc_method_handler(raw),
        "Wire": grpc.stream_stream_rpc_method_handler(framed),
    })
    server = grpc.server(futures.ThreadPoolExecutor(4), options=[("grpc.max_receive_message_length", 256 << 20)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop(0)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sizes-mb", default="4,16,64")
    ap.add_argument("--limits-mb", default="1,4,16")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    if args.sink:
        return run_sink()

    import grpc

    from splitinfer.common.transport import wire
    from splitinfer.common.codecs import get_codec

    tune_allocator()
    sink = subprocess.Popen([sys.executable, __file__, "--sink"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    ch = None
    try:
        port = int(sink.stdout.readline())
        ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 256 << 20)])
        grpc.channel_ready_future(ch).result(30)
        raw_call = ch.stream_stream(f"/{SERVICE}/Raw")
        wire_call = ch.stream_stream(f"/{SERVICE}/Wire")
        codec = get_codec("none")
        print(f"{'tensor':>8} {'limit':>6} {'raw GB/s':>9} {'wire GB/s':>10} {'wire/raw':>9}")
        best_multi = 0.0
        for size_mb in [float(s) for s in args.sizes_mb.split(",")]:
            arr = np.random.default_rng(0).standard_normal(int(size_mb * 2**20) // 4).astype(np.float32)
            for limit_mb in [float(s) for s in args.limits_mb.split(",")]:
                limit = int(limit_mb * 2**20)
                mv = memoryview(arr).cast("B")
                chunks = [bytes(mv[i:i + limit]) for i in range(0, len(mv), limit)]
                raw_best = wire_best = 0.0
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    list(raw_call(iter(chunks)))
                    raw_best = max(raw_best, arr.nbytes / (time.perf_counter() - t0) / 1e9)

                    def frames():
                        enc = wire.encode_tensor("x", arr, codec)
                        yield from wire.iter_frame_messages(1, [enc], max_message_bytes=limit)

                    t0 = time.perf_counter()
                    (reply,) = list(wire_call(frames()))
                    assert int.from_bytes(reply, "little") == arr.nbytes
                    wire_best = max(wire_best, arr.nbytes / (time.perf_counter() - t0) / 1e9)
                if size_mb >= 4:
                    best_multi = max(best_multi, wire_best)
                print(f"{size_mb:6.0f}MB {limit_mb:5.0f}M {raw_best:9.2f} {wire_best:10.2f} {wire_best / raw_best:9.2f}")
        print(f"best multi-MB transport with splitinfer framing: {best_multi:.2f} GB/s "
              f"(goal >= 1 GB/s: {'met' if best_multi >= 1 else 'NOT met'} on this machine)")
    finally:
        if ch is not None:
            ch.close()
        sink.stdin.close()
        sink.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
