"""Every limit docs/aips.md documents is enforced by `aips.decode`: at the limit a record decodes, one past it
the record is refused with an AIPSError naming the limit (issue 23: 4,097 tensors and 65 codec parameters
were accepted; the name-length and field-count limits could be removed without a test failing)."""

from __future__ import annotations

import struct

import pytest

from splitinfer.common.transport import aips


def _tensor(i: int = 0, name: str = "x", params: dict | None = None, shape=(1,)) -> aips.AIPSTensor:
    return aips.AIPSTensor(i, name, "uint8", shape, 0, params or {}, b"\x00" * max(1, len(shape) and 1))


def _record(tensors, **kw) -> bytes:
    return aips.encode(aips.AIPSFrame(1, kw.pop("model_id", "m"), 7, tensors, **kw))


def _with_extra_fields(record: bytes, n: int, inside_tensor: bool) -> bytes:
    """`record` (one tensor) with `n` fields of an unknown type added to the AIPS container or to its tensor."""
    extra = b"".join(struct.pack(">HI", 0x6000 + k, 1) + b"z" for k in range(n))  # each type once
    body = bytes(record[6:])
    if inside_tensor:
        pos = body.index(struct.pack(">H", aips.T_TENSOR))
        (size,) = struct.unpack(">I", body[pos + 2:pos + 6])
        tensor = body[pos + 6:pos + 6 + size] + extra
        body = body[:pos] + struct.pack(">HI", aips.T_TENSOR, len(tensor)) + tensor + body[pos + 6 + size:]
    else:
        body += extra
    return struct.pack(">HI", aips.T_AIPS, len(body)) + body


def test_tensor_count_limit():
    at = [_tensor(i) for i in range(aips.MAX_TENSORS)]
    assert len(aips.decode(_record(at)).tensors) == aips.MAX_TENSORS
    with pytest.raises(aips.AIPSError, match="4097 tensors \\(limit 4096\\)"):
        aips.decode(_record(at + [_tensor(aips.MAX_TENSORS)]))


def test_parameter_count_limit_and_unique_keys():
    at = {f"k{i}": "v" for i in range(aips.MAX_PARAMS)}
    assert aips.decode(_record([_tensor(params=at)])).tensors[0].params == at
    with pytest.raises(aips.AIPSError, match="65 compression parameters \\(limit 64\\)"):
        aips.decode(_record([_tensor(params={**at, "one-more": "v"})]))
    rec = _record([_tensor(params={"a": "1", "b": "2"})])
    twice = rec.replace(b"\x00\x17\x00\x00\x00\x01b", b"\x00\x17\x00\x00\x00\x01a")  # key "b" renamed "a"
    with pytest.raises(aips.AIPSError, match="'a' given twice"):
        aips.decode(twice)


@pytest.mark.parametrize("what, limit, make", [
    ("name", aips.MAX_NAME, lambda s: _record([_tensor(name=s)])),
    ("partition node", aips.MAX_NAME,
     lambda s: aips.encode(aips.AIPSFrame(1, "m", None, [_tensor()], partition_node=s))),
    ("model id", 128, lambda s: _record([_tensor()], model_id=s)),
    ("meta", aips.MAX_META, lambda s: _record([_tensor()], meta_json=s)),
    ("parameter key", aips.MAX_PARAM_KEY, lambda s: _record([_tensor(params={s: "v"})])),
    ("parameter value", aips.MAX_PARAM_VALUE, lambda s: _record([_tensor(params={"k": s})])),
])
def test_string_length_limits(what, limit, make):
    aips.decode(make("n" * limit))
    with pytest.raises(aips.AIPSError, match=f"{what}: {limit + 1} bytes \\(limit {limit}\\)"):
        aips.decode(make("n" * (limit + 1)))


def test_rank_limit():
    aips.decode(_record([aips.AIPSTensor(0, "x", "uint8", (1,) * aips.MAX_RANK, 0, {}, b"\x00")]))
    with pytest.raises(aips.AIPSError, match="at most 32"):
        aips.decode(_record([aips.AIPSTensor(0, "x", "uint8", (1,) * (aips.MAX_RANK + 1), 0, {}, b"\x00")]))


@pytest.mark.parametrize("inside_tensor, known", [(False, 8), (True, 7)])
def test_field_count_limit(inside_tensor, known):
    """Unknown fields are skipped, but a container holds at most 8 + MAX_EXTRA_FIELDS + its repeated limit
    fields in all (the count check is what bounds a record of millions of tiny fields)."""
    rec = _record([_tensor()], meta_json="{}")  # every known top-level field present: 8
    room = 8 + aips.MAX_EXTRA_FIELDS + (aips.MAX_TENSORS if not inside_tensor else aips.MAX_PARAMS) - known
    aips.decode(_with_extra_fields(rec, room, inside_tensor))
    with pytest.raises(aips.AIPSError, match="more than .* fields"):
        aips.decode(_with_extra_fields(rec, room + 1, inside_tensor))
