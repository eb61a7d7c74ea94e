"""Attacks on one network process (issue 14), replayed: each gets its status fast, memory stays bounded, a good
stream opened before keeps being answered, health checks are answered throughout.

One real network process (`python -m splitinfer.server.main`, bearer token, 2 MiB messages, one NNC helper)
for the module. Memory is read from /proc: the peak resident size (VmHWM, reset through
/proc/PID/clear_refs before each attack) of the server and of its NNC helper processes.
- decompression bombs: zstd and NNC payloads of a few kB whose header claims 256 MiB..1 GiB, in the tensors
  with open dimensions of NanoDet's ranks 123, 125, 133, 135 (shaped [None, None, None] in the graph), on a
  stream and on the unary call: refused at the header, peak RSS < BOMB_MB above the baseline.
- poisoned meta: nesting, thousands of digits, NaN, 1e308, negative/zero sizes: INVALID_ARGUMENT naming it.
- abandoned partial frames (cancelled, timed out, ended): their buffers are freed at once (RSS falls back).
- a flood of unauthenticated tiny NNC calls from 12 clients: health checks and authenticated good frames
  are answered meanwhile (latencies printed), every flood call is UNAUTHENTICATED.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import zstandard

from grpc_helpers import (Stubs, call_status, infer_status, real_frame, rss_kb, scrape, setup_msg, setup_pb,
                          stream_status)
from splitinfer.common.codecs import get_codec
from splitinfer.common.core.allocator import MIB
from splitinfer.common.transport import wire

pytestmark = pytest.mark.timeout(300)

TOKEN = "hostile-test-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
IA, RE, UA = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED
NONE, ZSTD, NNC = get_codec("none"), get_codec("zstd"), get_codec("nnc:-38")
OPEN_RANKS = (123, 125, 133, 135)  # ranks whose crossing tensor is [None, None, None] in the graph
BOMB_MB = 100  # the most one hostile request may raise the server's (or an NNC helper's) peak memory
LIMIT = 2 << 20


# -- memory of a process and its children, from /proc --------------------------------------------------


def _status_kb(pid: int, key: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # a helper replaced meanwhile
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def reset_peaks(pids) -> None:
    for p in pids:
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except FileNotFoundError:
            pass


def peaks_mb(pids) -> dict:
    return {p: _status_kb(p, "VmHWM") / 1024 for p in pids}


# -- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    from splitinfer.experiments.server_process import ServerProcess

    srv = ServerProcess(threads=1, device="cpu", max_message_mb=2, extra_args=["--token", TOKEN],
                        env={"SPLITINFER_NNC_WORKERS": "1"})
    yield srv
    assert srv.stop() == 0
    assert "Traceback" not in "\n".join(srv.stderr_tail)


@pytest.fixture(scope="module")
def stubs(server):
    s = Stubs(server.address, max_send_mb=4)
    yield s
    s.close()


@pytest.fixture(scope="module")
def frames():
    return {r: real_frame(r) for r in (60, *OPEN_RANKS)}


class Live:
    """An authenticated stream at split 60 opened before the attacks, fed one good frame at a time."""

    def __init__(self, stubs, frame):
        self.frame, self.q = frame, queue.Queue()
        self.q.put(setup_msg(60))
        self.replies = stubs.stream(iter(self.q.get, None), timeout=600, metadata=AUTH)
        assert next(self.replies).WhichOneof("kind") == "session"
        self.next_id, self.latencies = 1, []

    def check(self):
        t0 = time.monotonic()
        for m in self.frame.messages(self.next_id, ZSTD, max_message_bytes=LIMIT):
            self.q.put(m)
        reply = next(self.replies)
        self.latencies.append(time.monotonic() - t0)
        assert reply.result.frame_id == self.next_id and len(reply.result.detections) > 0
        self.next_id += 1


@pytest.fixture(scope="module")
def live(stubs, frames):
    ls = Live(stubs, frames[60])
    ls.check()
    yield ls
    ls.q.put(None)
    assert list(ls.replies) == []


@pytest.fixture(scope="module")
def warm(server, stubs, frames, live):
    """Every split and codec used below set up once (Part II built, NNC helper started) before memory counts."""
    for r in (60, *OPEN_RANKS):
        for codec in ("zstd", "nnc:-38"):
            code, details, _ = stream_status(stubs, [setup_msg(r, codec=codec), *frames[r].messages(
                1, get_codec(codec), max_message_bytes=LIMIT)], metadata=AUTH, timeout_s=120)
            assert code == grpc.StatusCode.OK, (r, codec, details)
    return True


# -- building hostile payloads ------------------------------------------------------------------------------


def zstd_bomb(nbytes: int) -> bytes:
    """A zstd frame of zeros announcing `nbytes` (content size in its header), made without holding them."""
    cobj = zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=True).compressobj(size=nbytes)
    zeros = bytes(1 << 22)
    out = [cobj.compress(zeros) for _ in range(nbytes // len(zeros))]
    return b"".join(out) + cobj.flush()


def nnc_bomb() -> bytes:
    """A real, tiny NNC bitstream (its header says nothing of the size: the tensor header claims it)."""
    payload = NNC.encode(np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8))
    assert payload[3:4] == b"N"
    return payload


def open_tensor(frame) -> str:
    from splitinfer.server.limits import is_open  # noqa: F401  (the server's notion of open)

    return next(n for n in frame.arrays if "Reshape" in n)


def bomb_frame(frame, codec, payload: bytes, shape) -> list[wire.EncodedTensor]:
    name = open_tensor(frame)
    tensors = frame.tensors(codec)
    i = [t.name for t in tensors].index(name)
    t = tensors[i]
    tensors[i] = wire.EncodedTensor(t.name, "float32", tuple(shape), codec.codec_id, t.codec_params, payload,
                                    int(np.prod(shape)) * 4)
    return tensors


def attack(server, fn):
    """Run `fn()` with the server's and its helpers' peaks reset; returns (result, growth MB per process)."""
    pids = [server.proc.pid, *children(server.proc.pid)]
    base = {p: _status_kb(p, "VmRSS") / 1024 for p in pids}
    reset_peaks(pids)
    result = fn()
    peak = peaks_mb(pids)
    return result, {p: peak[p] - base[p] for p in pids}


# -- decompression bombs --------------------------------------------------------------------------------------

BOMBS = [
    ("zstd-256MiB-stream", "zstd", 256 << 20, "stream"),
    ("zstd-1GiB-stream", "zstd", 1 << 30, "stream"),
    ("zstd-1GiB-unary", "zstd", 1 << 30, "unary"),
    ("nnc-1GiB-stream", "nnc:-38", 1 << 30, "stream"),
    ("nnc-1GiB-unary", "nnc:-38", 1 << 30, "unary"),
]


@pytest.mark.parametrize("rank", OPEN_RANKS)
@pytest.mark.parametrize("name,codec,claim,call", BOMBS, ids=[b[0] for b in BOMBS])
def test_decompression_bombs_are_refused_at_the_header(server, stubs, frames, live, warm, rank, name, codec,
                                                       claim, call):
    frame = frames[rank]
    c = get_codec(codec)
    payload = zstd_bomb(claim) if codec == "zstd" else nnc_bomb()
    assert len(payload) < 64 << 10
    tensors = bomb_frame(frame, c, payload, (1, 1 << 10, claim // 4 >> 10))
    if call == "stream":
        msgs = [setup_msg(rank, codec=codec), *wire.frame_messages(1, tensors, meta_json=frame.meta_json,
                                                                    max_message_bytes=LIMIT)]
        run = lambda: stream_status(stubs, msgs, metadata=AUTH, timeout_s=60)  # noqa: E731
    else:
        (msg,) = wire.frame_messages(1, tensors, meta_json=frame.meta_json, max_message_bytes=LIMIT,
                                     setup=setup_pb(rank, codec=codec))
        run = lambda: infer_status(stubs, msg, metadata=AUTH, timeout_s=60)  # noqa: E731
    t0 = time.monotonic()
    (code, details, _), grown = attack(server, run)
    took = time.monotonic() - t0
    print(f"bomb {name} at rank {rank}: {len(payload)} B payload, {code.name} in {took * 1e3:.0f} ms, peak RSS "
          f"+{grown[server.proc.pid]:.1f} MB (server), helpers {[round(v, 1) for p, v in grown.items() if p != server.proc.pid]}")
    assert code == RE, (code, details)
    assert open_tensor(frame) in details and "can need at most" in details, details
    assert max(grown.values()) < BOMB_MB, f"{name} at rank {rank}: peak memory grew by {grown} MB"
    assert took < 5, f"refusal took {took:.1f} s"
    live.check()


def test_every_shape_beyond_the_bound_is_refused_and_the_exact_shape_accepted(server, stubs, frames, live, warm):
    frame = frames[135]
    name = open_tensor(frame)
    real = frame.arrays[name].shape
    ok = stream_status(stubs, [setup_msg(135, codec="zstd"), *frame.messages(1, ZSTD, max_message_bytes=LIMIT)],
                       metadata=AUTH)
    assert ok[0] == grpc.StatusCode.OK and len(ok[2]) == 2
    for shape in [(real[0], real[1], real[2] + 1), (real[0] + 1, *real[1:]), (1, 1, 1 << 40), (1, 1 << 20, 1)]:
        arr = np.zeros(shape, np.float32) if np.prod(shape) < 1 << 22 else None
        payload = ZSTD.encode(arr) if arr is not None else zstd_bomb(1 << 22)
        msgs = [setup_msg(135, codec="zstd"), *wire.frame_messages(
            1, bomb_frame(frame, ZSTD, payload, shape), meta_json=frame.meta_json, max_message_bytes=LIMIT)]
        code, details, _ = stream_status(stubs, msgs, metadata=AUTH)
        assert code == RE and name in details, (shape, code, details)
    live.check()


def test_encoded_bytes_beyond_what_the_split_needs_are_refused_before_reassembly(server, stubs, frames, live,
                                                                                 warm):
    """A header announcing 64 MiB of encoded bytes for a 1.4 MB tensor (under the server's 1 GiB frame
    limit): refused with the split's own limit at part 0, before a 64 MiB buffer exists."""
    frame = frames[60]
    msgs = frame.messages(1, NONE, max_message_bytes=LIMIT)
    first = wire.pb.StreamRequest.FromString(msgs[0])
    first.frame.tensors[0].encoded_length = 64 << 20
    (code, details, _), grown = attack(server, lambda: stream_status(
        stubs, [setup_msg(60), first.SerializeToString(), *msgs[1:]], metadata=AUTH))
    assert code == RE and "frame limit" in details, details
    limit = int(details.rsplit("frame limit of ", 1)[1].split()[0].rstrip("."))
    assert limit < 16 << 20, f"the limit applied ({limit}) is not the split's"
    assert grown[server.proc.pid] < 32
    live.check()


# -- poisoned meta -------------------------------------------------------------------------------------------

META_CASES = {
    "deep-nesting": ('{"width": ' + "[" * 20000 + "]" * 20000 + ', "height": 480}', "nested too deeply"),
    "thousands-of-digits": ('{"width": 640, "height": 480, "pad": 1' + "0" * 5000 + "}", "'pad' is a number of"),
    "400-digit-width": ('{"width": 1' + "0" * 400 + ', "height": 480}', "'width' is a number of"),
    "negative-width": ('{"width": -640, "height": 480}', "'width' is -640"),
    "zero-height": ('{"width": 640, "height": 0}', "'height' is 0"),
    "nan-width": ('{"width": NaN, "height": 480}', "'width' is NaN"),
    "huge-width": ('{"width": 1e308, "height": 480}', "'width' is 1e+308"),
    "inf-width": ('{"width": 1e999, "height": 480}', "'width' is 1e999"),
    "tiny-input-width": ('{"width": 640, "height": 480, "input_width": 1e-300}', "'input_width'"),
    "string-width": ('{"width": "640", "height": 480}', "'width' must be a number"),
    "bool-width": ('{"width": true, "height": 480}', "'width' must be a number"),
    "no-width": ('{"height": 480}', "no 'width'"),
    "not-an-object": ("[640, 480]", "must be a JSON object"),
}


@pytest.mark.parametrize("case", list(META_CASES))
def test_poisoned_meta_is_invalid_argument_naming_the_field(server, stubs, frames, live, warm, case):
    meta, text = META_CASES[case]
    frame = frames[135]
    msgs = [setup_msg(135, codec="zstd"), *wire.frame_messages(1, frame.tensors(ZSTD), meta_json=meta,
                                                                max_message_bytes=LIMIT)]
    code, details, _ = stream_status(stubs, msgs, metadata=AUTH)
    assert code == IA and text in details, (code, details)
    (unary,) = wire.frame_messages(1, frame.tensors(ZSTD), meta_json=meta, max_message_bytes=LIMIT,
                                   setup=setup_pb(135, codec="zstd"))
    code, details, _ = infer_status(stubs, unary, metadata=AUTH)
    assert code == IA and text in details, (code, details)
    live.check()


# -- abandoned partial frames ---------------------------------------------------------------------------------


class HalfFrame:
    """A stream that sent all parts of a chunked 4.2 MB frame but the last, and waits."""

    def __init__(self, stubs, frame, how: str):
        self.how = how
        self.q: queue.Queue = queue.Queue()
        self.q.put(setup_msg(60))
        for m in frame.messages(1, NONE, max_message_bytes=256 << 10)[:-1]:
            self.q.put(m)
        self.call = stubs.stream(iter(self.q.get, None), timeout=6.0 if how == "timeout" else 120, metadata=AUTH)
        assert next(self.call).WhichOneof("kind") == "session"

    def abandon(self):
        """Cancel, let the deadline pass, or end the stream mid-frame; the server answers as it should."""
        if self.how == "cancel":
            self.call.cancel()
        elif self.how == "end":
            self.q.put(None)
        with pytest.raises(grpc.RpcError) as info:
            list(self.call)
        expected = {"cancel": grpc.StatusCode.CANCELLED, "timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
                    "end": IA}[self.how]
        assert info.value.code() == expected, (self.how, info.value.code(), info.value.details())
        self.q.put(None)


def _settled_rss_mb(pid: int, wait_s: float = 1.0) -> float:
    time.sleep(wait_s)
    return rss_kb(pid) / 1024


def _until(read, done, timeout_s: float) -> float:
    """`read()` once `done(value)` holds, or when `timeout_s` has passed (the last value: the caller asserts)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _rss_until(pid: int, done, timeout_s: float) -> float:
    """The server's RSS (MB) once `done(rss)` holds, or when `timeout_s` has passed."""
    return _until(lambda: rss_kb(pid) / 1024, done, timeout_s)


def _gauge(port: int, name: str) -> float:
    return scrape(port)[(name, frozenset())]


def _heap_mb(server) -> float:
    """What the server's C allocator has handed out and not had back (its gauge): freed buffers leave it at
    once, whatever the allocator then keeps resident."""
    return _gauge(server.metrics_port, "splitinfer_heap_in_use_bytes") / MIB


def _streams_until(port: int, done, timeout_s: float) -> float:
    """The server's count of open streams once `done(count)` holds, or when `timeout_s` has passed."""
    return _until(lambda: _gauge(port, "splitinfer_streams_active"), done, timeout_s)


@pytest.mark.parametrize("how", ["cancel", "timeout", "end"])
def test_abandoned_partial_frames_free_their_buffers_at_once(server, stubs, frames, live, warm, how):
    """12 streams hold half a 4.2 MB frame each: the server's heap (the allocator's bytes in use) and RSS rise by
    their buffers; once the streams are cancelled / time out / end and the server has closed them, the heap is
    back at once (the buffers are freed) and the RSS falls within 3 s (they are trimmed, not kept resident).
    The RSS also moves with pages other threads touch again after a trim (a few MB), hence its looser bound."""
    frame = frames[60]
    pid, port = server.proc.pid, server.metrics_port
    HalfFrame(stubs, frame, how).abandon()  # gRPC's own buffers for such streams exist before the baseline
    active = _streams_until(port, lambda n: n <= 1, 10.0)  # the live stream
    before_rss, before_heap = _settled_rss_mb(pid, 0.5), _heap_mb(server)
    halves = [HalfFrame(stubs, frame, how) for _ in range(12)]
    _rss_until(pid, lambda mb: mb - before_rss > 15, 5.0)  # all parts arrived (a loaded machine)
    held_heap, held_rss = _heap_mb(server) - before_heap, rss_kb(pid) / 1024 - before_rss
    for h in halves:
        h.abandon()
    closed = _streams_until(port, lambda n: n <= active, 10.0)
    after_heap = _heap_mb(server) - before_heap
    after_rss = _rss_until(pid, lambda mb: mb - before_rss < held_rss / 2, 3.0) - before_rss
    print(f"abandoned ({how}): 12 half frames; server heap +{held_heap:.1f} MB while held, {after_heap:+.1f} MB "
          f"after; RSS {before_rss:.0f} MB, +{held_rss:.0f} MB while held, {after_rss:+.0f} MB after")
    assert held_heap > 15 and held_rss > 15, "the half frames should hold memory: the test measures nothing"
    assert closed <= active, f"the server still counts {closed:.0f} open streams 10 s after they were abandoned"
    assert after_heap < held_heap / 5, f"abandoned frames ({how}) are not freed: heap +{after_heap:.1f} MB"
    assert after_rss < held_rss / 2, f"abandoned frames ({how}) stay resident: +{after_rss:.0f} of +{held_rss:.0f} MB"
    live.check()


# -- a flood of unauthenticated calls ------------------------------------------------------------------------


def test_flood_of_unauthenticated_calls_starves_no_one(server, stubs, frames, live, warm):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    frame = frames[135]
    (tiny,) = wire.frame_messages(1, bomb_frame(frame, NNC, nnc_bomb(), (1, 1024, 1 << 18)),
                                  meta_json=frame.meta_json, max_message_bytes=LIMIT, setup=setup_pb(135, codec="nnc:-38"))
    stop = threading.Event()
    codes: dict = {}
    lock = threading.Lock()

    def flood():
        s = Stubs(server.address, max_send_mb=4)
        try:
            while not stop.is_set():
                code, _, _ = call_status(lambda t: s.infer(tiny, timeout=t), 10)
                with lock:
                    codes[code] = codes.get(code, 0) + 1
        finally:
            s.close()

    health = health_pb2_grpc.HealthStub(stubs.channel)
    clients = [threading.Thread(target=flood, daemon=True) for _ in range(12)]
    for c in clients:
        c.start()
    time.sleep(0.5)
    health_ms, frame_ms = [], []
    t_end = time.monotonic() + 6
    while time.monotonic() < t_end:
        t0 = time.monotonic()
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        health_ms.append((time.monotonic() - t0) * 1e3)
        live.check()
        frame_ms.append(live.latencies[-1] * 1e3)
        time.sleep(0.05)
    stop.set()
    for c in clients:
        c.join(20)
    total = sum(codes.values())
    print(f"flood: {total} unauthenticated calls from 12 clients in 6 s, {codes}; health checks "
          f"{len(health_ms)}, median {np.median(health_ms):.1f} ms, max {max(health_ms):.1f} ms; good frames "
          f"{len(frame_ms)}, median {np.median(frame_ms):.0f} ms, max {max(frame_ms):.0f} ms")
    assert set(codes) == {UA} and total > 100, codes
    assert len(health_ms) >= 10 and max(health_ms) < 2000
    assert max(frame_ms) < 5000


def test_flood_of_real_nnc_calls_without_a_token_gets_fast_refusals_and_health_stays_up(frames):
    """A server without a token: 12 clients re-send a real NNC unary call (decoding work, so slots fill up).
    Calls past the work slots and their queue are refused UNAVAILABLE (busy, retry) fast, health checks never
    wait on them, and a good frame is answered after the flood."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from splitinfer.experiments.server_process import ServerProcess

    frame = frames[60]  # four tensors, ~2 MB raw: each call keeps the one NNC helper busy for a while
    (call,) = wire.frame_messages(1, frame.tensors(NNC), meta_json=frame.meta_json, max_message_bytes=LIMIT,
                                  setup=setup_pb(60, codec="nnc:-38"))
    srv = ServerProcess(threads=1, device="cpu", max_message_mb=2, env={"SPLITINFER_NNC_WORKERS": "1"},
                        extra_args=["--queue-wait-s", "1", "--work-slots", "2", "--queue", "4"])
    stubs = Stubs(srv.address, max_send_mb=4)
    try:
        assert infer_status(stubs, call, timeout_s=60)[0] == grpc.StatusCode.OK  # Part II built, helper warm
        stop = threading.Event()
        codes: dict = {}
        slowest = [0.0]
        lock = threading.Lock()

        def flood():
            s = Stubs(srv.address, max_send_mb=4)
            try:
                while not stop.is_set():
                    t0 = time.monotonic()
                    code, _, _ = call_status(lambda t: s.infer(call, timeout=t), 2.0)
                    with lock:
                        codes[code] = codes.get(code, 0) + 1
                        slowest[0] = max(slowest[0], time.monotonic() - t0)
            finally:
                s.close()

        health = health_pb2_grpc.HealthStub(stubs.channel)
        clients = [threading.Thread(target=flood, daemon=True) for _ in range(12)]
        for c in clients:
            c.start()
        time.sleep(0.5)
        health_ms = []
        t_end = time.monotonic() + 6
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            health_ms.append((time.monotonic() - t0) * 1e3)
            time.sleep(0.1)
        stop.set()
        for c in clients:
            c.join(20)
        print(f"NNC flood without token: {sum(codes.values())} calls, {codes}, slowest {slowest[0]:.2f} s; "
              f"health checks {len(health_ms)}, median {np.median(health_ms):.1f} ms, max {max(health_ms):.1f} ms")
        busy = grpc.StatusCode.UNAVAILABLE
        assert set(codes) <= {grpc.StatusCode.OK, busy}, codes  # never a deadline: refusals come fast
        assert codes.get(grpc.StatusCode.OK, 0) > 0, codes  # the work slots kept working
        assert codes.get(busy, 0) > 10 * codes[grpc.StatusCode.OK], codes  # the rest refused at once, not queued
        assert max(health_ms) < 1000, health_ms
        ok = infer_status(stubs, call, timeout_s=30)
        assert ok[0] == grpc.StatusCode.OK and len(ok[2][0].result.detections) >= 0
    finally:
        stubs.close()
        assert srv.stop() == 0


def test_many_set_ups_without_frames_stay_within_the_part2_cache_budget(frames):
    """16 set-ups at different splits, no frame: the kept Part IIs stay within --cache-mb (the issue: 16 such
    set-ups pushed the server to ~1.1 GB), and a client naming a new (split, codec) per session does not grow
    the /metrics page past its label-set bound."""
    import urllib.request

    from splitinfer.experiments.server_process import ServerProcess

    srv = ServerProcess(threads=1, device="cpu", extra_args=["--cache-mb", "100"], env={"SPLITINFER_NNC_WORKERS": "1"})
    stubs = Stubs(srv.address)
    try:
        assert stream_status(stubs, [setup_msg(130)], timeout_s=60)[0] == grpc.StatusCode.OK
        before = rss_kb(srv.proc.pid) / 1024
        peak = before
        for k, rank in enumerate(range(5, 85, 5)):
            code, details, _ = stream_status(stubs, [setup_msg(rank, codec=f"zstd:{1 + k}")], timeout_s=60)
            assert code == grpc.StatusCode.OK, details
            peak = max(peak, rss_kb(srv.proc.pid) / 1024)
        for k in range(100):  # many (split, codec) label sets
            stream_status(stubs, [setup_msg(126 + k % 10, codec=f"nnc:-{k % 60}" if k % 2 else f"zstd:{1 + k % 22}")])
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=10) as r:
            page = r.read()
        print(f"16 set-ups at ranks 5..80 with --cache-mb 100: server RSS {before:.0f} MB, peak +{peak - before:.0f} MB; "
              f"/metrics {len(page) / 1e3:.0f} kB after 116 sessions")
        assert peak - before < 150, f"+{peak - before:.0f} MB"  # measured +64 MB; +551 MB without the budget
        assert len(page) < 2_000_000
    finally:
        stubs.close()
        assert srv.stop() == 0
