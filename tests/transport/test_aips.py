"""The AIPS TLV record (3GPP intermediate-data header): round trips with our wire format on real frames,
every field mapped, bounded parsing of truncated, corrupted and random records."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from grpc_helpers import real_frame, setup_pb  # noqa: E402

from splitinfer.common.codecs import get_codec
from splitinfer.common.transport import aips, wire
from splitinfer.common.transport.proto import splitinfer_pb2 as pb


@pytest.fixture(scope="module")
def frame():
    return real_frame(60)


@pytest.mark.parametrize("spec", ["none", "float16", "zstd:3"])
def test_round_trip_through_our_wire_format(frame, spec):
    codec = get_codec(spec)
    tensors = frame.tensors(codec)
    setup = setup_pb(rank=60, codec=spec)
    record = aips.encode(aips.from_wire(setup, 7, tensors, timestamp_ns=123456789, meta_json=frame.meta_json))
    back = aips.decode(record)
    assert (back.frame_id, back.model_id, back.partition_id, back.partition_flag, back.timestamp_ns,
            back.meta_json) == (7, "nanodet", 60, "before", 123456789, frame.meta_json)
    assert [t.tensor_id for t in back.tensors] == list(range(len(tensors)))
    assert [t.tensor_length for t in back.tensors] == [t.raw_nbytes for t in tensors]
    assert all(t.profile_id == codec.codec_id for t in back.tensors)
    assert aips.encode(back) == record  # byte-identical re-encoding
    # back into our wire format, through the server's reassembly, and decoded to the same arrays
    setup2, tensors2 = aips.to_wire(back)
    assert setup2.model_id == setup.model_id and setup2.split.rank == 60 and setup2.codec.codec_id == codec.codec_id
    asm = wire.FrameAssembler(1 << 30)
    done = None
    for raw in wire.frame_messages(7, tensors2, meta_json=back.meta_json, timestamp_ns=back.timestamp_ns,
                                   max_message_bytes=256 << 10):
        _, part = wire.parse_stream_request(raw)
        done = asm.add(part) or done
    assert done is not None and done.meta_json == frame.meta_json
    for rt, (name, arr) in zip(done.tensors, frame.arrays.items()):
        got = wire.decode_tensor(rt, codec)
        assert rt.name == name
        if codec.lossless:
            assert np.array_equal(got, arr)
        else:
            assert np.allclose(got, arr, atol=1e-2, rtol=1e-2)


def test_split_by_node_and_flag_and_codec_parameters():
    t = aips.AIPSTensor(0, "x", "float32", (2, 3), 838, {"qp": "-38", "b": "1"}, b"\x01\x02\x03")
    f = aips.AIPSFrame(1, "m", None, [t], partition_node="Conv_12", partition_flag="after")
    back = aips.decode(aips.encode(f))
    assert back.partition_id is None and back.partition_node == "Conv_12" and back.partition_flag == "after"
    assert back.tensors == [t] and back.tensors[0].tensor_length == 24
    setup, _ = aips.to_wire(back)
    assert setup.split.WhichOneof("point") == "node" and setup.split.flag == "after"


def _record():
    t = aips.AIPSTensor(0, "x", "float32", (2, 2), 0, {}, np.arange(4, dtype="<f4").tobytes())
    return aips.encode(aips.AIPSFrame(3, "nanodet", 9, [t], meta_json='{"w":1}'))


def test_refusals_name_the_field():
    good = _record()
    with pytest.raises(aips.AIPSError, match="trailing bytes"):
        aips.decode(good + b"\x00")
    with pytest.raises(aips.AIPSError, match="remain"):
        aips.decode(good[:-1])
    # profile 0 payload that does not match the derived tensor length
    t = aips.AIPSTensor(0, "x", "float32", (2, 2), 0, {}, b"\x00" * 15)
    with pytest.raises(aips.AIPSError, match="profile 0"):
        aips.decode(aips.encode(aips.AIPSFrame(1, "m", 1, [t])))
    # a shape that claims more than the reader accepts, before anything is allocated
    t = aips.AIPSTensor(0, "x", "float32", (1 << 20, 1 << 20), 2, {}, b"\x00")
    with pytest.raises(aips.AIPSError, match="exceeds the limit"):
        aips.decode(aips.encode(aips.AIPSFrame(1, "m", 1, [t])), max_tensor_bytes=1 << 30)
    # tensor ids out of order
    a = aips.AIPSTensor(1, "x", "float32", (1,), 0, {}, b"\x00" * 4)
    with pytest.raises(aips.AIPSError, match="tensor ids"):
        aips.decode(aips.encode(aips.AIPSFrame(1, "m", 1, [a])))
    # a duplicated singleton field
    body = good[6:]
    dup = struct.pack(">HI", aips.T_AIPS, len(body) + 7) + body + struct.pack(">HI", aips.T_VERSION, 1) + b"\x01"
    with pytest.raises(aips.AIPSError, match="twice"):
        aips.decode(dup)
    with pytest.raises(aips.AIPSError, match="exceeds the limit"):
        aips.decode(good, max_bytes=10)
    # the good record itself still decodes, its payload a view of the input
    assert aips.decode(good).tensors[0].payload.tobytes() == np.arange(4, dtype="<f4").tobytes()


def test_unknown_fields_are_skipped():
    good = _record()
    body = good[6:] + struct.pack(">HI", 0x7FFF, 3) + b"new"
    rec = struct.pack(">HI", aips.T_AIPS, len(body)) + body
    assert aips.decode(rec).frame_id == 3


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_records_give_aips_error_only(data):
    good = bytearray(_record())
    kind = data.draw(st.sampled_from(["flip", "truncate", "random"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(good) - 1))
        good[i] ^= data.draw(st.integers(1, 255))
        blob = bytes(good)
    elif kind == "truncate":
        blob = bytes(good[: data.draw(st.integers(0, len(good) - 1))])
    else:
        blob = data.draw(st.binary(max_size=200))
    try:
        aips.decode(blob, max_tensor_bytes=1 << 20)
    except aips.AIPSError:
        pass
