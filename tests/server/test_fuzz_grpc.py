"""Property test: thousands of malformed messages at one network process. No crash, no hang, bounded memory.

Hypothesis draws batches of streams; each stream starts from a valid exchange (set-up + a frame at NanoDet's
split 130, zstd, one or several parts) and gets a few mutations: flipped, truncated or random bytes,
protobuf fields set to hostile values (dtypes, shapes, lengths, chunk indices, frame ids, meta JSON, model
ids with paths, split ranks, codec specs), messages dropped, duplicated or swapped, plus raw unary calls.
Each batch goes out on 4 client threads at once. Every call must end within its deadline with OK or one
of the refusals (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, FAILED_PRECONDITION): an UNKNOWN or
INTERNAL means an exception escaped the servicer, DEADLINE_EXCEEDED a hang. Meanwhile a good stream keeps
getting answers, and the server's resident memory (from /proc) must not grow beyond a bound.

The tensors are constant (zstd makes each a few dozen bytes, and post-processing finds nothing), so the
server's time goes to parsing and refusing, and a few thousand messages take about a minute on 2 cores.
"""

import os
import random
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grpc_helpers import REFUSALS, RealFrame, Stubs, call_status, real_frame, rss_kb, scrape, setup_msg
from splitinfer.common.codecs import get_codec
from splitinfer.common.transport.proto import splitinfer_pb2 as pb

pytestmark = pytest.mark.timeout(400)

RANK = 130
OTHER_RANKS = [129, 131, 136]
WARM_RANKS = {RANK, *OTHER_RANKS}
ZSTD = get_codec("zstd")
CALL_DEADLINE_S = 30.0
EXAMPLES = int(os.environ.get("SPLITINFER_FUZZ_EXAMPLES", 150))  # ~200 messages each
WARM_EXAMPLES = max(1, EXAMPLES // 3)  # examples before the steady-state memory is measured
STATS = {"messages": 0, "streams": 0, "unary": 0, "codes": {}, "rss_mb": []}


@pytest.fixture(scope="module")
def server():
    from splitinfer.experiments.server_process import ServerProcess

    # --cache-mb: set-ups at ranks hypothesis draws build Part IIs (50-100 MB each at early ranks); the budget
    # keeps about one of them, so the memory bound below holds whatever ranks are drawn
    srv = ServerProcess(threads=1, device="cpu", max_message_mb=1, env={"SPLITINFER_NNC_WORKERS": "1"},
                        extra_args=["--cache-mb", "64"])
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def stubs(server):
    s = Stubs(server.address, max_send_mb=4)
    yield s
    s.close()


@pytest.fixture(scope="module")
def bases():
    """Valid exchanges to mutate: name -> list of serialized StreamRequests."""
    f = real_frame(RANK)
    rng = np.random.default_rng(0)
    # low scores everywhere (nothing to post-process); a 700-value pattern repeated so zstd keeps ~3 KB
    quiet = RealFrame(RANK, {n: np.resize((-8 + 0.01 * rng.standard_normal(700)).astype(a.dtype), a.shape)
                             for n, a in f.arrays.items()}, f.meta_json)
    setup = setup_msg(RANK, codec="zstd")
    one = quiet.messages(1, ZSTD)
    parts = quiet.messages(1, ZSTD, max_message_bytes=1200)  # chunks over many parts
    assert len(one) == 1 and len(parts) >= 6, len(parts)
    return {
        "one-part": [setup, *one],
        "many-parts": [setup, *parts],
        "two-frames": [setup, *one, *quiet.messages(2, ZSTD)],
        "float16-session": [setup_msg(RANK, codec="float16"), *quiet.messages(1, get_codec("float16"),
                                                                              max_message_bytes=256 << 10)],
    }


# -- mutations -----------------------------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
texts = st.text(max_size=24)
HEADER_EDITS = st.one_of(
    st.tuples(st.just("dtype"), st.one_of(st.sampled_from(
        ["float32", "float16", "int64", "bool", "complex64", "object", "V8", "<f4", "float32\x00", "", "U3"]), texts)),
    st.tuples(st.just("shape"), st.lists(st.integers(-2**40, 2**40), max_size=6)),
    st.tuples(st.just("shape"), st.lists(st.integers(0, 3000), min_size=4, max_size=4)),
    st.tuples(st.just("name"), st.one_of(texts, st.sampled_from(["Identity_2:0", "Conv__176:0"]))),
    st.tuples(st.just("codec_id"), st.one_of(u32, st.sampled_from([0, 1, 2, 222, 838, 899, 3]))),
    st.tuples(st.just("encoded_length"), st.one_of(u64, st.integers(0, 100))),
    st.tuples(st.just("chunk_count"), st.one_of(u32, st.integers(0, 3))),
    st.tuples(st.just("codec_params"), st.dictionaries(texts, texts, max_size=3)),
)
FRAME_EDITS = st.one_of(
    st.tuples(st.just("frame_id"), st.one_of(u64, st.integers(0, 3))),
    st.tuples(st.just("part"), st.one_of(u32, st.integers(0, 3))),
    st.tuples(st.just("part_count"), st.one_of(u32, st.integers(0, 3))),
    st.tuples(st.just("timestamp_ns"), st.integers(-2**63, 2**63 - 1)),
    st.tuples(st.just("meta_json"), st.one_of(texts, st.sampled_from([
        '{"width": -5, "height": 0}', '{"width": 1e308, "height": 1e308}', "[]", '{"width": "x"}', "{}",
        '{"width": 0, "height": 0, "input_width": 0, "input_height": 0}', '{"width": NaN}', "null",
        '{"width": 640, "height": 480, "input_width": -1, "input_height": 416}',
        '{"width": 640, "height": 480, "input_width": 1e-300, "input_height": 416}']))),
    st.tuples(st.just("chunk_tensor"), st.one_of(u32, st.integers(0, 6))),
    st.tuples(st.just("chunk_index"), st.one_of(u32, st.integers(0, 3))),
    st.tuples(st.just("chunk_data"), st.binary(max_size=64)),
    st.tuples(st.just("drop_tensor"), st.integers(0, 5)),
    st.tuples(st.just("add_tensor"), texts),
)
SETUP_EDITS = st.one_of(
    st.tuples(st.just("model_id"), st.one_of(texts, st.sampled_from(
        ["../nanodet", "/etc/passwd", "nanodet/../nanodet", "nanodet/model.onnx", "", "NANODET", "nanodet\x00"]))),
    # valid ranks other than 130 build (and cache) another Part II: a few, warmed up before memory is measured
    st.tuples(st.just("rank"), st.one_of(st.integers(-2**31, 2**31 - 1), st.sampled_from(OTHER_RANKS + [-1, 137, 999]))),
    st.tuples(st.just("node"), texts),
    st.tuples(st.just("flag"), st.one_of(texts, st.sampled_from(["before", "after"]))),
    st.tuples(st.just("codec"), st.one_of(texts, st.sampled_from(
        ["zstd", "zstd:99", "zstd:-5", "float16", "none", "2", "899", "nnc:abc", "1", "0", "zstd:1:2"]))),
)
MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), u32, st.lists(st.tuples(u32, st.integers(1, 255)), min_size=1, max_size=8)),
    st.tuples(st.just("truncate"), u32, st.floats(0, 1)),
    st.tuples(st.just("append"), u32, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("replace"), u32, st.binary(max_size=128)),
    st.tuples(st.just("header"), u32, st.integers(0, 5), HEADER_EDITS),
    st.tuples(st.just("frame"), u32, FRAME_EDITS),
    st.tuples(st.just("setup"), SETUP_EDITS),
    st.tuples(st.just("drop"), u32),
    st.tuples(st.just("duplicate"), u32),
    st.tuples(st.just("swap"), u32, u32),
)
STREAMS = st.tuples(st.sampled_from(["one-part"] * 3 + ["many-parts"] * 3 + ["two-frames"] * 2 + ["float16-session"]),
                    st.lists(MUTATIONS, min_size=1, max_size=4))


def _edit_proto(msg: bytes, edit) -> bytes:
    try:
        req = pb.StreamRequest.FromString(msg)
    except Exception:  # already broken by a byte mutation: leave it
        return msg
    try:
        edit(req)
    except (ValueError, TypeError, IndexError, OverflowError):  # a value protobuf itself refuses
        return msg
    return req.SerializeToString()


def _set_header(req, ti, field, value):
    if not req.HasField("frame") or not req.frame.tensors:
        return
    h = req.frame.tensors[ti % len(req.frame.tensors)]
    if field == "shape":
        del h.shape[:]
        h.shape.extend(value)
    elif field == "codec_params":
        h.codec_params.clear()
        h.codec_params.update(value)
    else:
        setattr(h, field, value)


def _set_frame(req, field, value):
    if not req.HasField("frame"):
        return
    fr = req.frame
    if field in ("chunk_tensor", "chunk_index", "chunk_data"):
        if fr.chunks:
            setattr(fr.chunks[0], {"chunk_tensor": "tensor", "chunk_index": "index", "chunk_data": "data"}[field], value)
    elif field == "drop_tensor":
        if fr.tensors:
            del fr.tensors[value % len(fr.tensors)]
    elif field == "add_tensor":
        fr.tensors.add(name=value, dtype="float32", shape=[1, 2], encoded_length=8, chunk_count=1)
    else:
        setattr(fr, field, value)


def _set_setup(req, field, value):
    if not req.HasField("setup"):
        return
    s = req.setup
    if field == "model_id":
        s.model_id = value
    elif field == "rank":
        # a valid rank not warmed up would build (and cache) a Part II of 10-100 MB: memory the bound below
        # cannot tell from a leak; many set-ups at many ranks are test_hostile.py's cache-budget test
        s.split.rank = value if not 0 <= value <= 136 or value in WARM_RANKS else OTHER_RANKS[value % len(OTHER_RANKS)]
    elif field == "node":
        s.split.node = value
    elif field == "flag":
        s.split.flag = value
    elif field == "codec":
        s.codec.spec = value


def mutate(messages: list[bytes], mutations) -> list[bytes]:
    msgs = list(messages)
    for m in mutations:
        kind = m[0]
        if not msgs:
            msgs = [b""]
        if kind in ("flip", "truncate", "append", "replace", "header", "frame", "drop", "duplicate"):
            i = m[1] % len(msgs)
        if kind == "flip":
            b = bytearray(msgs[i])
            for pos, x in m[2]:
                if b:
                    b[pos % len(b)] ^= x
            msgs[i] = bytes(b)
        elif kind == "truncate":
            msgs[i] = msgs[i][: int(len(msgs[i]) * m[2])]
        elif kind == "append":
            msgs[i] = msgs[i] + m[2]
        elif kind == "replace":
            msgs[i] = m[2]
        elif kind == "header":
            msgs[i] = _edit_proto(msgs[i], lambda r: _set_header(r, m[2], *m[3]))
        elif kind == "frame":
            msgs[i] = _edit_proto(msgs[i], lambda r: _set_frame(r, *m[2]))
        elif kind == "setup":
            msgs[0] = _edit_proto(msgs[0], lambda r: _set_setup(r, *m[1]))
        elif kind == "drop":
            del msgs[i]
        elif kind == "duplicate":
            msgs.insert(i, msgs[i])
        elif kind == "swap":
            a, b = m[1] % len(msgs), m[2] % len(msgs)
            msgs[a], msgs[b] = msgs[b], msgs[a]
    return msgs


STRUCTURED = {"header", "frame", "setup"}
ZSTD_IDS = {2, *range(201, 223)}  # any zstd level decodes a zstd payload


def _must_refuse(m, before: bytes, after: bytes) -> bool:
    """Whether one structured edit that changed a valid message makes the stream one the server must refuse."""
    from splitinfer.common.codecs import get_codec as codec_of
    from splitinfer.server.errors import RequestError
    from splitinfer.server.meta import clean_meta

    if before == after:
        return False
    kind = m[0]
    field, value = m[3] if kind == "header" else (m[2] if kind == "frame" else m[1])
    if kind == "header":
        if field == "codec_id":
            old = [t.codec_id for t in pb.StreamRequest.FromString(before).frame.tensors]
            return not (set(old) <= ZSTD_IDS and value in ZSTD_IDS)
        return field != "codec_params"
    if kind == "frame":
        if field == "meta_json":
            try:
                clean_meta(value)
            except RequestError:
                return True
            return False
        return field in ("part", "part_count", "chunk_tensor", "chunk_index", "drop_tensor", "add_tensor")
    if field == "model_id":
        return True
    if field == "rank":
        return not 0 <= value <= 136
    if field == "node":
        return True
    if field == "flag":
        return value not in ("", "before", "after")
    if field == "codec":  # an empty spec falls back to the profile's codec id (0 here: "none")
        try:
            codec_of(value or "0")
        except Exception:
            return True
        return len(value) > 64
    return False


def mutate_checked(messages: list[bytes], mutations) -> tuple[list[bytes], bool]:
    """`mutate`, and whether the result must be refused: only structured edits were made, and one of them
    changed a message in a way no valid stream has (a wrong dtype, shape, length, part, meta, model id...),
    with no later edit touching that message."""
    msgs = list(messages)
    must, touched_after = {}, set()
    structured_only = all(m[0] in STRUCTURED for m in mutations)
    for m in mutations:
        before = list(msgs)
        msgs = mutate(msgs, [m])
        if not structured_only or not before:
            continue
        i = 0 if m[0] == "setup" else m[1] % len(before)
        if i in must:
            touched_after.add(i)
        if _must_refuse(m, before[i], msgs[i]):
            must[i] = True
    return msgs, structured_only and any(i not in touched_after for i in must)


def _count(code):
    STATS["codes"][code.name] = STATS["codes"].get(code.name, 0) + 1


def _check_replies(replies):
    """An accepted stream's answers: the session first, then results in frame order with finite boxes."""
    import math

    assert not replies or replies[0].WhichOneof("kind") == "session"
    ids = [r.result.frame_id for r in replies[1:]]
    assert all(r.WhichOneof("kind") == "result" for r in replies[1:]) and ids == sorted(set(ids)), ids
    for r in replies[1:]:
        for d in r.result.detections:
            assert all(math.isfinite(v) and v >= 0 for v in (d.x1, d.y1, d.x2, d.y2, d.score)), d


def _check(code, details, what):
    assert code == grpc.StatusCode.OK or code in REFUSALS, f"{what}: {code} {details!r}"
    _count(code)


@pytest.fixture(scope="module")
def live(stubs, bases):
    """A well-behaved stream answered between the batches."""
    import queue

    q: queue.Queue = queue.Queue()
    q.put(bases["one-part"][0])
    replies = stubs.stream(iter(q.get, None), timeout=600)
    assert next(replies).WhichOneof("kind") == "session"
    frame = pb.StreamRequest.FromString(bases["one-part"][1])
    state = {"next": 1}

    def check():
        frame.frame.frame_id = state["next"]
        q.put(frame.SerializeToString())
        assert next(replies).result.frame_id == state["next"]
        state["next"] += 1

    check()
    yield check
    q.put(None)
    list(replies)


def steady_heap_mb(server, stubs, bases) -> float:
    """The server's heap in use in its steady state: the warm-up's Part IIs cached again (the fuzz builds others,
    and the cache keeps about one), a half frame of 1.3 MB sent and abandoned, then the lowest of a few samples of
    `splitinfer_heap_in_use_bytes` (glibc mallinfo2: bytes handed out and not freed). Unlike the resident size it
    does not move with freed pages glibc keeps or with arena fragmentation (measured: the steady RSS moved by
    0..+38 MB between runs without a leak), so what remains above the same measure before is memory the server
    really holds."""
    import time

    pool = ThreadPoolExecutor(4)
    warm = list(bases.values()) * 4 + [[setup_msg(r, codec="zstd")] for r in (*OTHER_RANKS, RANK)]
    list(pool.map(lambda b: call_status(lambda t: stubs.stream(iter(b), timeout=t)), warm))
    pool.shutdown()
    f = real_frame(RANK)  # real values: codec none, a 1.3 MB tensor over 3 parts of 512 KiB
    parts = f.messages(1, get_codec("none"), max_message_bytes=512 << 10)
    code, details, _ = call_status(lambda t: stubs.stream(iter([setup_msg(RANK), *parts[:-1]]), timeout=t))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "stream ended with" in details, (code, details)
    samples = []
    for _ in range(5):
        time.sleep(0.2)
        samples.append(scrape(server.metrics_port)[("splitinfer_heap_in_use_bytes", frozenset())] / 2**20)
    assert min(samples) > 0, "the server does not report its heap (glibc mallinfo2)"
    return min(samples)


@pytest.fixture(scope="module")
def memory(server, stubs, bases):
    """Resident memory after a warm-up of every base and error path (caches, Part II, thread stacks); the
    steady state the end is compared with is measured after the first third of the fuzz (`WARM_EXAMPLES`):
    by then every kind of hostile message has met the server (codec objects and their per-thread contexts,
    gRPC's threads, label sets and caches at their size)."""
    pool = ThreadPoolExecutor(4)
    warm = list(bases.values()) * 4 + [[setup_msg(r, codec="zstd")] for r in OTHER_RANKS]
    for _ in range(3):
        list(pool.map(lambda b: call_status(lambda t: stubs.stream(iter(b), timeout=t)), warm))
    pool.shutdown()
    return {"before": rss_kb(server.proc.pid), "pool": ThreadPoolExecutor(4, thread_name_prefix="fuzz")}


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(streams=st.lists(STREAMS, min_size=30, max_size=50),
       unary=st.lists(st.binary(max_size=256), min_size=5, max_size=15), seed=st.integers(0, 2**32 - 1))
def test_malformed_streams_never_crash_hang_or_leak(server, stubs, bases, live, memory, streams, unary, seed):
    checked = [mutate_checked(bases[name], muts) for name, muts in streams]
    batches = [msgs for msgs, _ in checked]
    STATS["must"] = STATS.get("must", 0) + sum(m for _, m in checked)

    def send_stream(msgs):
        return call_status(lambda t: stubs.stream(iter(msgs), timeout=t), CALL_DEADLINE_S)

    rng = random.Random(seed)
    setup_pb = pb.StreamRequest.FromString(bases["one-part"][0]).setup
    frame_pb = pb.StreamRequest.FromString(bases["one-part"][1]).frame
    unary_msgs = [rng.choice([
        raw,  # arbitrary bytes
        pb.InferRequest(setup=setup_pb, frame=frame_pb).SerializeToString()[: len(raw)],  # truncated valid call
        pb.InferRequest(setup=setup_pb).SerializeToString() + raw,  # valid start, garbage after
    ]) for raw in unary]

    def send_unary(msg):
        return call_status(lambda t: stubs.infer(msg, timeout=t), CALL_DEADLINE_S)

    for (code, details, replies), (msgs, must), (name, muts) in zip(
            memory["pool"].map(send_stream, batches), checked, streams):
        _check(code, details, f"stream of {len(msgs)} messages")
        assert not (must and code == grpc.StatusCode.OK), f"malformed stream answered OK: {name} {muts}"
        if code == grpc.StatusCode.OK:
            _check_replies(replies)
        STATS["messages"] += len(msgs)
        STATS["streams"] += 1
    for code, details, _ in memory["pool"].map(send_unary, unary_msgs):
        _check(code, details, "unary call")
        STATS["messages"] += 1
        STATS["unary"] += 1
    assert server.proc.poll() is None, "the network process died"
    live()
    STATS["rss_mb"].append(rss_kb(server.proc.pid) // 1024)
    STATS["examples"] = STATS.get("examples", 0) + 1
    if STATS["examples"] == WARM_EXAMPLES:
        memory["steady"] = steady_heap_mb(server, stubs, bases)


def test_thousands_of_messages_and_memory_stayed_bounded(server, stubs, bases, live, memory):
    from grpc_helpers import error_counts

    if STATS["messages"] < 3000:  # run alone: do the fuzzing first
        test_malformed_streams_never_crash_hang_or_leak(server=server, stubs=stubs, bases=bases, live=live,
                                                        memory=memory)

    memory["pool"].shutdown()
    assert STATS["messages"] >= 3000, STATS
    assert STATS.get("must", 0) > 0, STATS  # the OK-oracle had streams to judge
    refused = sum(v for k, v in STATS["codes"].items() if k != "OK")
    assert refused >= 0.8 * (STATS["streams"] + STATS["unary"]), STATS  # most really were malformed
    live()  # still answering
    after = rss_kb(server.proc.pid)
    steady = steady_heap_mb(server, stubs, bases)
    grown_mb = steady - memory["steady"]
    later = STATS["messages"] * (1 - WARM_EXAMPLES / max(STATS["examples"], 1))
    print(f"fuzz: {STATS}; server RSS {memory['before'] / 1024:.0f} -> {after / 1024:.0f} MB (peak of the "
          f"batches {max(STATS['rss_mb'])} MB); steady heap in use (same Part IIs cached) "
          f"{memory['steady']:.0f} -> {steady:.0f} MB")
    # Measured: without a leak +0..9 MB (4 runs); with 1 kB leaked per stream message, +19 MB (caught). The raw
    # RSS varies by a Part II (50-100 MB) with the splits hypothesis drew last, and by freed pages glibc keeps:
    # the heap in use with the same Part IIs cached has neither.
    assert grown_mb < 14, f"steady heap in use grew by {grown_mb:.0f} MB over the last {later:.0f} messages"
    assert (after - memory["before"]) / 1024 < 250, f"raw RSS {memory['before'] // 1024} -> {after // 1024} MB"
    counts = error_counts(server.metrics_port)
    assert "INTERNAL" not in counts and counts.get("INVALID_ARGUMENT", 0) > 0.25 * STATS["streams"], counts
    tail = "\n".join(server.stderr_tail)
    assert "Traceback" not in tail, tail
