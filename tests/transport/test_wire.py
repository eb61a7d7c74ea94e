"""Wire format: exact protobuf bytes, chunking under the limit, copies, and rejection of broken frames."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitinfer.common.transport import wire
from splitinfer.common.transport.proto import splitinfer_pb2 as pb


from splitinfer.common.codecs import get_codec

NONE = get_codec("none")


def arrays():
    rng = np.random.default_rng(0)
    return {
        "feat": rng.standard_normal((1, 16, 20, 20)).astype(np.float32),
        "half": rng.standard_normal((3, 5)).astype(np.float16),
        "idx": np.arange(7, dtype=np.int64),
        "mask": rng.random((4, 4)) < 0.5,
        "scalar": np.array(3.5, dtype=np.float64),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


def encode_all(arrs):
    return [wire.encode_tensor(k, v, NONE) for k, v in arrs.items()]


def assemble(messages, max_frame_bytes=wire.DEFAULT_MAX_FRAME_BYTES):
    asm = wire.FrameAssembler(max_frame_bytes)
    frames = []
    for m in messages:
        kind, part = wire.parse_stream_request(m)
        assert kind == "frame"
        f = asm.add(part)
        if f is not None:
            frames.append(f)
    assert asm.incomplete is None
    return frames


def test_messages_are_exactly_protobufs_serialization():
    msgs = wire.frame_messages(9, encode_all(arrays()), timestamp_ns=123, meta_json='{"width":640}',
                               max_message_bytes=1500)
    assert len(msgs) > 3
    for m in msgs:
        assert pb.StreamRequest.FromString(m).SerializeToString() == m


@pytest.mark.parametrize("limit", [700, 4096, wire.DEFAULT_MAX_MESSAGE_BYTES])
def test_round_trip_restores_every_dtype_and_shape(limit):
    arrs = arrays()
    msgs = wire.frame_messages(4, encode_all(arrs), timestamp_ns=77, meta_json='{"a":1}', max_message_bytes=limit)
    assert all(len(m) <= limit for m in msgs)
    (frame,) = assemble(msgs)
    assert (frame.frame_id, frame.timestamp_ns, frame.meta_json) == (4, 77, '{"a":1}')
    assert [t.name for t in frame.tensors] == list(arrs)
    for t in frame.tensors:
        out = wire.decode_tensor(t, NONE)
        ref = arrs[t.name]
        assert out.dtype == ref.dtype and out.shape == ref.shape
        assert np.array_equal(out, ref)


def test_identity_fast_path_sends_what_the_none_codec_encodes():
    for name, arr in arrays().items():
        enc = wire.encode_tensor(name, arr, NONE)
        assert bytes(enc.payload) == NONE.encode(arr), name
        assert (enc.dtype, enc.shape, enc.codec_id, enc.raw_nbytes) == (arr.dtype.name, arr.shape, 0, arr.nbytes)
    big_endian = np.arange(6, dtype=">i4").reshape(2, 3)
    assert bytes(wire.encode_tensor("be", big_endian, NONE).payload) == NONE.encode(big_endian)


@pytest.mark.parametrize("spec", ["float16", "zstd", "nnc:-38"])
def test_registry_codecs_round_trip_through_the_wire(spec):
    codec = get_codec(spec)
    arr = np.random.default_rng(2).standard_normal((1, 8, 24, 24)).astype(np.float32)
    enc = wire.encode_tensor("x", arr, codec)
    assert enc.codec_id == codec.codec_id and len(enc.payload) < arr.nbytes
    (frame,) = assemble(wire.frame_messages(1, [enc], max_message_bytes=2048))
    out = wire.decode_tensor(frame.tensors[0], codec)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    if codec.lossless:
        assert np.array_equal(out, arr)
    else:
        assert np.abs(out - arr).max() < 0.05


def test_corrupt_payload_becomes_a_wire_error():
    codec = get_codec("zstd")
    t = wire.ReceivedTensor("x", "float32", (4,), codec.codec_id, {}, memoryview(b"not zstd at all"))
    with pytest.raises(wire.WireError, match="cannot decode"):
        wire.decode_tensor(t, codec)


def test_large_tensor_is_chunked_and_each_side_copies_at_most_once():
    big = np.random.default_rng(1).standard_normal((1, 32, 128, 128)).astype(np.float32)  # 2 MiB
    enc = wire.encode_tensor("big", big, NONE)
    assert np.shares_memory(np.frombuffer(enc.payload, np.uint8), big)  # sender: no copy before framing
    msgs = wire.frame_messages(1, [enc], max_message_bytes=256 * 1024)
    assert len(msgs) >= 8 and all(len(m) <= 256 * 1024 for m in msgs)
    (frame,) = assemble(msgs)
    out = wire.decode_tensor(frame.tensors[0], NONE)
    assert np.array_equal(out, big) and out.flags.writeable  # receiver: one copy, into a writable buffer

    small = wire.frame_messages(2, [wire.encode_tensor("s", big[:, :1], NONE)])
    (frame,) = assemble(small)
    assert len(small) == 1
    assert frame.tensors[0].payload.obj is small[0]  # one chunk: a view into the received message, no copy


def test_unary_request_carries_setup_and_frame_in_one_message():
    setup = pb.SessionSetup(model_id="m", split=pb.SplitPoint(rank=3), codec=pb.CodecProfile(spec="none"))
    tensors = encode_all(arrays())
    (msg,) = wire.frame_messages(5, tensors, setup=setup)
    ref = pb.InferRequest.FromString(msg)
    assert ref.setup == setup and ref.frame.frame_id == 5
    got_setup, part = wire.parse_infer_request(msg)
    assert got_setup == setup and len(part.chunks) == len(tensors)
    with pytest.raises(wire.TooLarge, match="unary call cannot chunk"):
        wire.frame_messages(5, tensors, setup=setup, max_message_bytes=1000)


def _split(limit=600):
    return wire.frame_messages(3, encode_all(arrays()), max_message_bytes=limit)


def test_missing_part_is_detected():
    msgs = _split()
    with pytest.raises(wire.WireError, match="missing"):
        assemble(msgs[:2] + msgs[3:])


def test_duplicated_part_is_detected():
    msgs = _split()
    with pytest.raises(wire.WireError, match="duplicated"):
        assemble(msgs[:3] + msgs[2:])


def test_out_of_order_part_is_detected():
    msgs = _split()
    with pytest.raises(wire.WireError, match="out of order|missing"):
        assemble([msgs[0], msgs[2], msgs[1]] + msgs[3:])


def test_truncated_stream_leaves_frame_incomplete():
    msgs = _split()
    asm = wire.FrameAssembler()
    for m in msgs[:-1]:
        assert asm.add(wire.parse_stream_request(m)[1]) is None
    assert "incomplete" in asm.incomplete and "missing parts" in asm.incomplete


def test_repeated_frame_id_is_rejected():
    msgs = wire.frame_messages(3, encode_all(arrays()))
    with pytest.raises(wire.WireError, match="frame ids must increase"):
        assemble(msgs + msgs)


def _frame(chunks, headers, part_count=1):
    return pb.StreamRequest(frame=pb.FramePart(frame_id=1, part=0, part_count=part_count, tensors=headers,
                                               chunks=chunks)).SerializeToString()


def _header(name, n, chunks, dtype="uint8"):
    return pb.TensorHeader(name=name, dtype=dtype, shape=[n], codec_id=0, encoded_length=n, chunk_count=chunks)


@pytest.mark.parametrize("chunks, problem", [
    ([pb.TensorChunk(tensor=0, index=0, data=b"ab"), pb.TensorChunk(tensor=0, index=0, data=b"cd")], "duplicated"),
    ([pb.TensorChunk(tensor=0, index=1, data=b"cd"), pb.TensorChunk(tensor=0, index=0, data=b"ab")], "missing"),
    ([pb.TensorChunk(tensor=0, index=0, data=b"ab"), pb.TensorChunk(tensor=1, index=0, data=b"xy")], "missing chunks"),
    ([pb.TensorChunk(tensor=0, index=0, data=b"abcdef")], "exceed"),
    ([pb.TensorChunk(tensor=5, index=0, data=b"ab")], "frame has 2 tensors"),
    ([pb.TensorChunk(tensor=0, index=0, data=b"ab"), pb.TensorChunk(tensor=0, index=1, data=b"cd")], "tensor 1"),
])
def test_chunk_problems_are_named(chunks, problem):
    msg = _frame(chunks, [_header("a", 4, 2), _header("b", 2, 1)])
    with pytest.raises(wire.WireError, match=problem):
        assemble([msg])


@pytest.mark.parametrize("chunked", [False, True])
def test_every_chunk_there_but_fewer_bytes_than_announced_is_refused(chunked):
    """The final byte count check: all chunks arrive in order, together shorter than encoded_length."""
    chunks = [pb.TensorChunk(tensor=0, index=0, data=b"ab")] + (
        [pb.TensorChunk(tensor=0, index=1, data=b"c")] if chunked else [])
    msg = _frame(chunks + [pb.TensorChunk(tensor=1, index=0, data=b"xy")],
                 [_header("a", 4, 2 if chunked else 1), _header("b", 2, 1)])
    with pytest.raises(wire.WireError, match=f"tensor 0 \\('a'\\) has {3 if chunked else 2} bytes, encoded_length says 4"):
        assemble([msg])


def test_a_refused_header_allocates_nothing_and_discard_drops_a_half_frame():
    seen = []

    def refuse(fp):
        seen.append(fp.frame_id)
        raise wire.TooLarge("no")

    asm = wire.FrameAssembler(check_header=refuse)
    with pytest.raises(wire.TooLarge):
        asm.add(wire.parse_stream_request(_frame([pb.TensorChunk(data=b"ab")], [_header("a", 2, 1)]))[1])
    assert seen == [1] and asm.incomplete is None
    asm = wire.FrameAssembler()
    asm.add(wire.parse_stream_request(_frame([pb.TensorChunk(data=b"ab")], [_header("a", 4, 2)], part_count=2))[1])
    assert asm.incomplete is not None
    assert asm.discard() == 4
    assert asm.incomplete is None


def test_discard_says_how_many_buffer_bytes_it_dropped():
    asm = wire.FrameAssembler()
    chunks = [pb.TensorChunk(tensor=0, index=0, data=b"ab")]
    asm.add(wire.parse_stream_request(_frame(chunks, [_header("a", 4000, 2)], part_count=2))[1])
    assert asm.discard() == 4000 and asm.discard() == 0


@pytest.mark.parametrize("header, problem", [
    (_header("a", 2, 1, dtype="object"), "dtype"),
    (_header("", 2, 1), "empty name"),
    (pb.TensorHeader(name="a", dtype="uint8", shape=[-1], encoded_length=2, chunk_count=1), "negative"),
    (_header("a", 2, 0), "chunk_count"),
])
def test_bad_headers_are_named(header, problem):
    with pytest.raises(wire.WireError, match=problem):
        assemble([_frame([pb.TensorChunk(data=b"ab")], [header])])


def test_frame_over_the_servers_limit_is_resource_exhausted():
    msgs = wire.frame_messages(1, encode_all(arrays()))
    with pytest.raises(wire.TooLarge) as info:
        assemble(msgs, max_frame_bytes=100)
    assert info.value.code == "RESOURCE_EXHAUSTED"


def test_payload_size_must_match_dtype_and_shape():
    msg = _frame([pb.TensorChunk(data=b"abc")],
                 [pb.TensorHeader(name="a", dtype="float32", shape=[2], encoded_length=3, chunk_count=1)])
    (frame,) = assemble([msg])
    with pytest.raises(wire.WireError, match="needs 8"):
        wire.decode_tensor(frame.tensors[0], NONE)


@pytest.mark.parametrize("garbage", [b"\xff", b"\x12\x05ab", b"\x12\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
                                     b"\x0b", b"", b"\x12\x03\x3a\x01\x1a"])
def test_malformed_bytes_raise_wire_errors(garbage):
    with pytest.raises(wire.WireError):
        wire.parse_stream_request(garbage)


def test_meta_json_round_trip():
    import json

    meta = {"width": np.int64(640), "scale": np.float32(0.5), "pad": (1, 2), "arr": np.arange(3)}
    assert json.loads(wire.meta_to_json(meta)) == {"width": 640, "scale": 0.5, "pad": [1, 2], "arr": [0, 1, 2]}
    with pytest.raises(TypeError, match="cannot be sent"):
        wire.meta_to_json({"x": object()})


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=5), limit=st.integers(300, 9000))
def test_any_sizes_under_any_limit_round_trip(sizes, limit):
    rng = np.random.default_rng(len(sizes) * 7919 + limit)
    arrs = {f"t{i}": rng.integers(0, 255, n, dtype=np.uint8) for i, n in enumerate(sizes)}
    msgs = wire.frame_messages(1, encode_all(arrs), max_message_bytes=limit)
    assert all(len(m) <= limit for m in msgs)
    (frame,) = assemble(msgs)
    for t in frame.tensors:
        assert np.array_equal(wire.decode_tensor(t, NONE), arrs[t.name])
