"""Every kind of bad input to the network process gets its gRPC status and a message naming the problem,
and the server keeps serving: a stream opened before the first bad request answers a real frame after
each one, and at the end the process is alive, never logged a traceback and counted each refusal.

One real network process (`python -m splitinfer.server.main`, 2 MiB message limit) for the module; frames
are NanoDet's Part I outputs at split 60 (four crossing tensors, 4.2 MB) on a real photo.
"""

import queue
import struct
import threading
import zlib

import grpc
import numpy as np
import pytest

from grpc_helpers import (
    Stubs, error_counts, infer_status, real_frame, rewrite, rss_kb, setup_msg, setup_pb, stream_status,
)
from splitinfer.common.transport import wire
from splitinfer.common.codecs import get_codec
from splitinfer.common.transport.proto import splitinfer_pb2 as pb

pytestmark = pytest.mark.timeout(300)

IA, NF, RE, FP = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED,
                  grpc.StatusCode.FAILED_PRECONDITION)
NONE = get_codec("none")
NNC = get_codec("nnc:-38")
SMALL = 256 << 10  # chunking limit of the many-part frames


@pytest.fixture(scope="module")
def server():
    from splitinfer.experiments.server_process import ServerProcess

    srv = ServerProcess(threads=1, device="cpu", max_message_mb=2, env={"SPLITINFER_NNC_WORKERS": "1"})
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def stubs(server):
    s = Stubs(server.address)
    yield s
    s.close()


@pytest.fixture(scope="module")
def frame():
    return real_frame(60)


class LiveStream:
    """A stream opened once and fed one good frame at a time, between the bad requests."""

    def __init__(self, stubs, frame):
        self.frame = frame
        self.q: queue.Queue = queue.Queue()
        self.q.put(setup_msg(60))
        self.replies = stubs.stream(iter(self.q.get, None), timeout=240)
        assert next(self.replies).WhichOneof("kind") == "session"
        self.next_id = 1
        self.answered = 0

    def check(self):
        for m in self.frame.messages(self.next_id, NONE, max_message_bytes=2 << 20):
            self.q.put(m)
        reply = next(self.replies)
        assert reply.result.frame_id == self.next_id and len(reply.result.detections) > 0
        self.next_id += 1
        self.answered += 1

    def close(self):
        self.q.put(None)
        assert list(self.replies) == []


@pytest.fixture(scope="module")
def live(stubs, frame):
    ls = LiveStream(stubs, frame)
    ls.check()
    yield ls
    ls.close()


# -- the bad inputs ------------------------------------------------------------------------------------


def _replace(tensors, i, **changes):
    t = tensors[i]
    fields = dict(name=t.name, dtype=t.dtype, shape=t.shape, codec_id=t.codec_id, codec_params=t.codec_params,
                  payload=t.payload, raw_nbytes=t.raw_nbytes)
    fields.update(changes)
    tensors[i] = wire.EncodedTensor(**fields)
    return tensors


def _frame(f, tensors, frame_id=1, limit=2 << 20):
    return wire.frame_messages(frame_id, tensors, meta_json=f.meta_json, max_message_bytes=limit)


def _corrupt_nnc(f):
    """A real NNC bitstream with bytes overwritten in the middle, and its checksum made right again, so the
    deepCABAC decoder itself (in its helper process) meets the damage."""
    tensors = f.tensors(NNC)
    payload = bytes(tensors[0].payload)
    assert payload[:3] == b"NNC" and payload[3:4] in (b"N", b"P")  # one bitstream, or blocks of bitstreams
    body = bytearray(payload[8:])
    mid = len(body) // 3
    body[mid:mid + 256] = bytes(range(256))
    return _replace(tensors, 0, payload=struct.pack("<3scI", b"NNC", payload[3:4], zlib.crc32(bytes(body))) + bytes(body))


def _chunk_edit(parts, k, **fields):
    def edit(req):
        for name, value in fields.items():
            setattr(req.frame.chunks[0], name, value)
    return parts[:k] + [rewrite(parts[k], edit)] + parts[k + 1:]


def _header_edit(parts, edit_tensor):
    def edit(req):
        edit_tensor(req.frame.tensors)
    return [rewrite(parts[0], edit)] + parts[1:]


def _cases(f):
    """name -> (code, text the message must hold, messages of one stream). Built lazily per case."""
    setup = setup_msg(60)
    good = lambda: _frame(f, f.tensors(NONE))  # noqa: E731
    many = lambda: f.messages(1, NONE, max_message_bytes=SMALL)  # noqa: E731  ~17 parts, one chunk each
    names = lambda: list(f.arrays)  # noqa: E731
    return {
        "bytes-not-matching-shape-x-dtype": lambda: (IA, "needs 1384448", [setup, *_frame(
            f, _replace(f.tensors(NONE), 0, payload=b"\0" * 100))]),
        "unknown-dtype": lambda: (IA, "dtype 'complex64' not allowed", [setup, *_header_edit(
            good(), lambda ts: setattr(ts[1], "dtype", "complex64"))]),
        "dtype-not-what-part2-takes": lambda: (IA, "has dtype float64, Part II expects float32", [setup, *_frame(
            f, _replace(f.tensors(NONE), 2, dtype="float64"))]),
        "shape-not-what-part2-takes": lambda: (IA, "has shape [1, 64, 27, 28]", [setup, *_frame(
            f, _replace(f.tensors(NONE), 3, shape=(1, 64, 27, 28)))]),
        "unknown-codec-in-setup": lambda: (IA, "codec 'rot13'", [setup_msg(60, codec="rot13")]),
        "unknown-codec-id-in-tensor": lambda: (IA, f"tensor {names()[1]!r}: codec '77': unknown codec id", [
            setup, *_header_edit(good(), lambda ts: setattr(ts[1], "codec_id", 77))]),
        "missing-crossing-tensor": lambda: (IA, f"missing [{names()[3]!r}]", [setup, *_frame(f, f.tensors(NONE)[:3])]),
        "extra-crossing-tensor": lambda: (IA, "unexpected ['bogus']", [setup, *_frame(
            f, f.tensors(NONE) + [wire.encode_tensor("bogus", np.zeros(3, np.float32), NONE)])]),
        "corrupt-nnc-bitstream": lambda: (IA, "nnc: corrupt bitstream", [
            setup_msg(60, codec="nnc:-38"), *_frame(f, _corrupt_nnc(f))]),
        "nnc-payload-damaged-in-transit": lambda: (IA, "checksum mismatch", [setup_msg(60, codec="nnc:-38"), *_frame(
            f, _replace(f.tensors(NNC), 1, payload=bytes(f.tensors(NNC)[1].payload)[:-1] + b"\x01"))]),
        "part-missing": lambda: (IA, "part 3 arrived but part 2 is missing", [setup, *(many()[:2] + many()[3:])]),
        "part-duplicated": lambda: (IA, "part 1 duplicated", [setup, *(many()[:2] + many()[1:])]),
        "parts-out-of-order": lambda: (IA, "part 2 arrived but part 1 is missing", [
            setup, *(lambda m: [m[0], m[2], m[1], *m[3:]])(many())]),
        "chunk-missing": lambda: (IA, "chunk 2 arrived but chunk 1 is missing", [setup, *_chunk_edit(many(), 1, index=2)]),
        "chunk-duplicated": lambda: (IA, "chunk 0 of tensor 0", [setup, *_chunk_edit(many(), 1, index=0)]),
        "chunk-of-unknown-tensor": lambda: (IA, "chunk for tensor 9 but the frame has 4 tensors", [
            setup, *_chunk_edit(many(), 1, tensor=9)]),
        "chunks-longer-than-announced": lambda: (IA, "exceed its encoded_length", [setup, *_header_edit(
            many(), lambda ts: setattr(ts[0], "encoded_length", ts[0].encoded_length - 10))]),
        "stream-ends-mid-frame": lambda: (IA, "stream ended with frame 1 incomplete", [setup, *many()[:-1]]),
        "frame-id-repeated": lambda: (IA, "frame ids must increase", [setup, *good(), *good()]),
        "message-over-the-limit": lambda: (RE, "larger than max", [setup, *f.messages(1, NONE, max_message_bytes=8 << 20)]),
        # 64 MiB: over what split 60 can need (~4.4 MB), far under the server's own 1 GiB frame limit
        "frame-over-the-sessions-limit": lambda: (RE, "frame limit", [setup, *_header_edit(
            many(), lambda ts: setattr(ts[0], "encoded_length", 64 << 20))]),
        "unknown-model": lambda: (NF, "no model 'nope'", [setup_msg(60, model_id="nope")]),
        "model-id-is-a-path": lambda: (NF, "no model '../nanodet'", [setup_msg(60, model_id="../nanodet")]),
        "unknown-split-rank": lambda: (IA, "out of range", [setup_msg(10**6)]),
        "unknown-split-node": lambda: (IA, "no node named", [setup_msg(
            0, split=pb.SplitPoint(node="no-such-node"))]),
        "bad-split-flag": lambda: (IA, "neither 'before' nor 'after'", [setup_msg(
            0, split=pb.SplitPoint(rank=60, flag="sideways"))]),
        "frame-without-session": lambda: (FP, "frame 1 before the session set-up", good()),
        "setup-twice": lambda: (FP, "session already set up", [setup, setup]),
        "garbage-bytes": lambda: (IA, "truncated message", [setup, b"\x12\xff\xff\x03abc"]),
        "empty-request": lambda: (IA, "empty stream request", [setup, b""]),
        "meta-not-json": lambda: (IA, "frame meta is not JSON", [setup, *wire.frame_messages(
            1, f.tensors(NONE), meta_json="{width", max_message_bytes=2 << 20)]),
    }


CASES = list(_cases(None).keys())
SEEN_CODES: dict = {}


@pytest.mark.parametrize("case", CASES)
def test_bad_stream_input_gets_its_status_and_other_streams_go_on(case, server, stubs, frame, live):
    code, text, messages = _cases(frame)[case]()
    got, details, replies = stream_status(stubs, messages, timeout_s=120)
    assert got == code, f"{case}: {got} {details!r}"
    assert text in details, f"{case}: {details!r}"
    assert all(r.WhichOneof("kind") == "session" for r in replies)
    SEEN_CODES[code.name] = SEEN_CODES.get(code.name, 0) + 1
    live.check()  # the stream opened before keeps working
    assert server.proc.poll() is None


def test_unary_infer_refusals(server, stubs, frame, live):
    """The one-message call refuses the same things, plus a frame in several parts."""
    def unary(setup, tensors, limit=4 << 20):
        (msg,) = wire.frame_messages(1, tensors, setup=setup, meta_json=frame.meta_json, max_message_bytes=limit)
        return msg

    half = frame.tensors(get_codec("float16"))  # 1 MB: fits one 2 MiB message
    ok = infer_status(stubs, unary(setup_pb(codec="float16"), half))
    assert ok[0] == grpc.StatusCode.OK and len(ok[2][0].result.detections) > 0
    cases = [
        (NF, "no model 'nope'", unary(setup_pb(model_id="nope", codec="float16"), half)),
        (IA, "missing", unary(setup_pb(codec="float16"), half[:2])),
        (RE, "larger than max", unary(setup_pb(), frame.tensors(NONE), limit=8 << 20)),
        (IA, "needs both `setup` and `frame`", pb.InferRequest(setup=setup_pb()).SerializeToString()),
        (IA, "a unary Infer carries one part", pb.InferRequest(setup=setup_pb(), frame=pb.StreamRequest.FromString(
            frame.messages(1, NONE, max_message_bytes=SMALL)[0]).frame).SerializeToString()),
    ]
    for code, text, msg in cases:
        got, details, _ = infer_status(stubs, msg)
        assert got == code and text in details, (code, text, got, details)
        live.check()


def test_a_stalled_bad_stream_does_not_block_a_good_one(server, stubs, frame, live):
    """A client that opens a stream and sends half a frame, then nothing: other streams are served meanwhile."""
    q: queue.Queue = queue.Queue()
    stalled = stubs.stream(iter(q.get, None), timeout=60)
    q.put(setup_msg(60))
    for m in frame.messages(1, NONE, max_message_bytes=SMALL)[:3]:
        q.put(m)
    assert next(stalled).WhichOneof("kind") == "session"
    done = threading.Event()
    t = threading.Thread(target=lambda: (live.check(), live.check(), done.set()))
    t.start()
    t.join(60)
    assert done.is_set()
    q.put(None)  # the stalled client goes away: its half frame is refused, nothing else happens
    with pytest.raises(grpc.RpcError) as info:
        list(stalled)
    assert info.value.code() == IA and "incomplete" in info.value.details()


def test_after_all_that_the_server_is_healthy_and_counted_every_refusal(server, stubs, live):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    assert server.proc.poll() is None
    health = health_pb2_grpc.HealthStub(stubs.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    models = stubs.list(pb.ListModelsRequest(), timeout=10).models
    assert [m.model_id for m in models] == ["nanodet"]
    counts = error_counts(server.metrics_port)
    # every refusal the servicer made itself is counted (gRPC's own message-size check happens before it)
    assert counts.get("INVALID_ARGUMENT", 0) >= SEEN_CODES.get("INVALID_ARGUMENT", 0)
    assert counts.get("NOT_FOUND", 0) >= SEEN_CODES.get("NOT_FOUND", 0) >= 2
    assert counts.get("FAILED_PRECONDITION", 0) >= SEEN_CODES.get("FAILED_PRECONDITION", 0) >= 2
    assert "INTERNAL" not in counts
    assert live.answered >= len(CASES)
    tail = "\n".join(server.stderr_tail)
    assert "Traceback" not in tail, tail
    assert rss_kb(server.proc.pid) < 2_000_000  # well under 2 GB after ~40 bad streams
