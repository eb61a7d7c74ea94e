"""Our own protocol under a flood of real work (issue 23): 12 authenticated clients keep 16 unary Infer calls
each in flight (decode + Part II, 2 work slots) while one authenticated UE stream sends one frame at a time.
Admission's fair share (server/admission.py: per client connection) hands the stream's frame the next free
slot, so it is answered every time; the flood gets the rest of the slots and UNAVAILABLE past them."""

import queue
import threading
import time

import grpc
import numpy as np
import pytest

from grpc_helpers import Stubs, real_frame, setup_msg, setup_pb
from splitinfer.common.codecs import get_codec
from splitinfer.common.transport import wire
from splitinfer.experiments.server_process import ServerProcess

pytestmark = pytest.mark.timeout(240)
TOKEN = "fairness-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
OWN = (("grpc.use_local_subchannel_pool", 1),)  # each client its own connection, as from its own process


def test_a_stream_with_one_frame_in_flight_is_served_beside_a_flood_of_unary_calls():
    frame = real_frame(60)
    zstd = get_codec("zstd")
    (call,) = wire.frame_messages(1, frame.tensors(zstd), meta_json=frame.meta_json, setup=setup_pb(60, codec="zstd"))
    with ServerProcess(threads=1, device="cpu", extra_args=["--token", TOKEN, "--work-slots", "2",
                                                            "--queue-wait-s", "3"]) as srv:
        good = Stubs(srv.address, options=OWN)
        q: queue.Queue = queue.Queue()
        q.put(setup_msg(60, codec="zstd"))
        replies = good.stream(iter(q.get, None), timeout=120, metadata=AUTH)
        assert next(replies).WhichOneof("kind") == "session"
        stop, codes, lock = threading.Event(), {}, threading.Lock()

        def flood():
            s = Stubs(srv.address, options=OWN)
            pending = []
            while not stop.is_set():
                while len(pending) < 16:
                    pending.append(s.infer.future(call, timeout=10, metadata=AUTH))
                for f in [f for f in pending if f.done()]:
                    pending.remove(f)
                    with lock:
                        codes[f.code()] = codes.get(f.code(), 0) + 1
                time.sleep(0.005)
            for f in pending:
                f.cancel()
            s.close()

        threads = [threading.Thread(target=flood, daemon=True) for _ in range(12)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        answered, ms, fid = 0, [], 1
        t_end = time.monotonic() + 8
        try:
            while time.monotonic() < t_end:
                t0 = time.monotonic()
                for m in frame.messages(fid, zstd):
                    q.put(m)
                reply = next(replies)
                answered += reply.result.frame_id == fid
                ms.append((time.monotonic() - t0) * 1e3)
                fid += 1
        except grpc.RpcError as exc:
            pytest.fail(f"the stream was refused after {answered} frames: {exc.code()} {exc.details()}")
        finally:
            stop.set()
            for t in threads:
                t.join(30)
            q.put(None)
            good.close()
    print(f"flood {({k.name: v for k, v in codes.items()})}; the stream: {answered}/{fid - 1} frames answered, "
          f"median {np.median(ms):.0f} ms, max {max(ms):.0f} ms")
    assert codes.get(grpc.StatusCode.UNAVAILABLE, 0) > 0 and codes.get(grpc.StatusCode.OK, 0) > 0, codes
    assert answered == fid - 1 >= 5
