"""Sequence codecs (codecs/sequence.py) through the lossless inter codec `dzstd`: frames coded in order round trip
bit-exactly, predicted frames are smaller than keyframes on a slowly changing sequence, and a decoder refuses a
predicted frame whose reference it does not hold (new session, lost frame, out of order, replay) with
FAILED_PRECONDITION, and corrupt or hostile headers with a CodecError, never decoding against a wrong reference."""

import numpy as np
import pytest

from splitinfer.common.codecs import CodecError, get_codec
from splitinfer.common.codecs.sequence import HEADER, MissingReference, pack_header, read_header


def relu_sequence(n=6, shape=(1, 16, 20, 24), seed=0):
    """Slowly changing ReLU features: a fixed field plus a small moving part (a static camera's features)."""
    rng = np.random.default_rng(seed)
    base = np.maximum(rng.standard_normal(shape).astype(np.float32), 0)
    frames = []
    for k in range(n):
        f = base.copy()
        f[..., k:k + 4, :] += 0.25 * rng.random(f[..., k:k + 4, :].shape, dtype=np.float32)
        frames.append(f)
    return frames


def code(codec, frames, names=("a",)):
    enc = codec.sequence_encoder()
    out = []
    for f in frames:
        out.append((enc.encode_frame(names, [f] * len(names)), enc.last_keyframe))
    return enc, out


def test_dzstd_is_sequential_and_its_spec_and_id_round_trip():
    c = get_codec("dzstd:5:30")
    assert c.sequential and c.lossless and c.gop == 30
    assert get_codec(c.codec_id) == c and get_codec(c.spec) == c
    assert get_codec("dzstd").codec_id == 700003
    assert not get_codec("zstd").sequential
    for bad in ("dzstd:0", "dzstd:3:x", "dzstd:3:1000", "dzstd:23"):
        with pytest.raises(Exception):
            get_codec(bad)


def test_a_sequential_codec_cannot_start_a_chain():
    from splitinfer.common.core.errors import UserError

    for spec in ("dzstd+zstd", "fqi+blosc2", "video+zstd"):
        with pytest.raises(UserError, match="sequential"):
            get_codec(spec)


def test_frames_in_order_round_trip_bit_exact_and_predicted_frames_are_smaller():
    codec = get_codec("dzstd")
    frames = relu_sequence()
    _, coded = code(codec, frames)
    dec = codec.sequence_decoder()
    for k, ((payloads,), key) in enumerate([(p, k) for p, k in coded]):
        assert key == (k == 0)
        got = dec.bind("a").decode(payloads, np.float32, frames[k].shape)
        assert got.dtype == np.float32 and np.array_equal(got, frames[k])
    assert dec.keyframes == 1 and dec.predicted == len(frames) - 1
    key_size = len(coded[0][0][0])
    assert max(len(p[0]) for p, _ in coded[1:]) < key_size / 2, [len(p[0]) for p, _ in coded]


@pytest.mark.parametrize("dtype", ["float32", "float16", "int64", "uint8", "bool"])
def test_every_dtype_round_trips_through_predicted_frames(dtype):
    rng = np.random.default_rng(1)
    frames = [(rng.random((3, 5, 7)) * 10).astype(dtype) for _ in range(3)]
    codec = get_codec("dzstd:1")
    enc, dec = codec.sequence_encoder(), codec.sequence_decoder()
    for f in frames:
        (p,) = enc.encode_frame(["t"], [f])
        assert np.array_equal(dec.decode("t", p, dtype, f.shape), f)


def test_gop_puts_keyframes_at_its_period_and_restart_makes_the_next_frame_a_keyframe():
    codec = get_codec("dzstd:3:3")
    _, coded = code(codec, relu_sequence(7))
    assert [key for _, key in coded] == [True, False, False, True, False, False, True]
    enc = get_codec("dzstd").sequence_encoder()
    frames = relu_sequence(4)
    enc.encode_frame(["a"], [frames[0]])
    enc.encode_frame(["a"], [frames[1]])
    assert not enc.last_keyframe
    enc.restart()
    enc.encode_frame(["a"], [frames[2]])
    assert enc.last_keyframe


def test_a_tensor_whose_shape_changes_is_coded_as_a_keyframe_by_itself():
    enc = get_codec("dzstd").sequence_encoder()
    dec = get_codec("dzstd").sequence_decoder()
    a, b = np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)
    for arr in (a, a, b, b):
        (p,) = enc.encode_frame(["x"], [arr])
        assert np.array_equal(dec.decode("x", p, np.float32, arr.shape), arr)
    assert dec.keyframes == 2 and dec.predicted == 2
    # two tensors, one new in frame 2: the frame is predicted on both sides (the UE's count and the server's)
    enc, dec = get_codec("dzstd").sequence_encoder(), get_codec("dzstd").sequence_decoder()
    for names in (["x"], ["x", "y"]):
        payloads = enc.encode_frame(names, [a] * len(names))
        for name, p in zip(names, payloads):
            dec.decode(name, p, np.float32, a.shape)
        assert dec.last_keyframe == enc.last_keyframe == (names == ["x"])


def test_a_predicted_frame_without_its_reference_is_refused_and_nothing_is_decoded_from_it():
    codec = get_codec("dzstd")
    frames = relu_sequence(5)
    _, coded = code(codec, frames)
    p = [c[0][0] for c in coded]
    # a new session (e.g. after a reconnect) that did not see the keyframe
    with pytest.raises(MissingReference, match="needs frame 0 as its reference, and this session holds no frame"):
        codec.sequence_decoder().decode("a", p[1], np.float32, frames[1].shape)
    # a lost frame: 0 then 2
    dec = codec.sequence_decoder()
    dec.decode("a", p[0], np.float32, frames[0].shape)
    with pytest.raises(MissingReference, match="needs frame 1 .* holds frame 0"):
        dec.decode("a", p[2], np.float32, frames[2].shape)
    # in order again from the right reference still works: the refusal spoiled nothing
    assert np.array_equal(dec.decode("a", p[1], np.float32, frames[1].shape), frames[1])
    # a replayed (duplicated) frame: its reference is no longer the one held
    with pytest.raises(MissingReference):
        dec.decode("a", p[1], np.float32, frames[1].shape)
    # the per-frame path decodes keyframes only
    assert np.array_equal(codec.decode(p[0], np.float32, frames[0].shape), frames[0])
    with pytest.raises(MissingReference):
        codec.decode(p[3], np.float32, frames[3].shape)
    assert MissingReference.code == "FAILED_PRECONDITION"


def test_a_predicted_frame_announced_with_another_shape_than_its_reference_is_refused():
    codec = get_codec("dzstd")
    frames = relu_sequence(2)
    _, coded = code(codec, frames)
    dec = codec.sequence_decoder()
    dec.decode("a", coded[0][0][0], np.float32, frames[0].shape)
    with pytest.raises(MissingReference):
        dec.decode("a", coded[1][0][0], np.float32, (1, 16, 20, 12, 2))


def test_hostile_headers_and_bodies_are_codec_errors_and_drop_the_reference():
    codec = get_codec("dzstd")
    frames = relu_sequence(3)
    _, coded = code(codec, frames)
    p0, p1 = coded[0][0][0], coded[1][0][0]
    shape = frames[0].shape
    bad = [b"", b"SQ", b"XX" + p0[2:], p0[:2] + b"\x02" + p0[3:], p0[:3] + b"\x80" + p0[4:],
           pack_header(True, 5, 4) + p0[HEADER.size:], pack_header(False, 5, 3) + p1[HEADER.size:],
           p0[:HEADER.size] + b"garbage", p0[:-7]]
    for payload in bad:
        with pytest.raises(CodecError):
            codec.sequence_decoder().decode("a", payload, np.float32, shape)
    # a body whose size disagrees with the announced shape is refused before allocating (zstd content size)
    with pytest.raises(CodecError, match="exactly"):
        codec.sequence_decoder().decode("a", p0, np.float32, (1, 16, 20, 25))
    # a corrupt predicted frame drops the state: the next frame is not decoded against a spoiled reference
    dec = codec.sequence_decoder()
    dec.decode("a", p0, np.float32, shape)
    with pytest.raises(CodecError):
        dec.decode("a", p1[:HEADER.size] + b"\x00" * 20, np.float32, shape)
    with pytest.raises(MissingReference):
        dec.decode("a", p1, np.float32, shape)


def test_a_decoder_keeps_state_for_a_bounded_number_of_tensor_names():
    from splitinfer.common.codecs.sequence import StatefulDecoder

    codec = get_codec("dzstd")
    dec = StatefulDecoder(codec, max_tensors=3)
    payload = codec.encode(np.zeros(4, np.float32))
    for k in range(3):
        dec.decode(f"t{k}", payload, np.float32, (4,))
    with pytest.raises(CodecError, match="3 tensors at most"):
        dec.decode("t3", payload, np.float32, (4,))
    assert read_header(payload)[0] is True


def test_a_codec_outside_the_package_loads_as_a_plugin(tmp_path):
    """A distribution with an entry point in `splitinfer.codecs` (core/plugins.py, as families and commands):
    listed in order, resolved by spec and id, and round-tripping, in a fresh process."""
    import os
    import subprocess
    import sys

    (tmp_path / "acme_codec.py").write_text(
        "from splitinfer.common.codecs import Codec, from_raw, raw_bytes\n"
        "NAME = 'acme'\nORDER = 50\nHELP = 'acme (id 4242; a test plug-in)'\n"
        "class Acme(Codec):\n"
        "    name = NAME\n"
        "    def encode(self, arr):\n        return raw_bytes(arr)[::-1]\n"
        "    def decode(self, payload, dtype, shape, *, trusted=False):\n"
        "        return from_raw(bytes(payload)[::-1], dtype, shape, NAME)\n"
        "def from_id(number):\n    return Acme(4242) if number == 4242 else None\n"
        "def from_param(param):\n    return Acme(4242)\n")
    info = tmp_path / "acme_codec-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-codec\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[splitinfer.codecs]\nacme = acme_codec\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    script = ("import numpy as np\n"
              "from splitinfer.common.codecs import codec_names, codecs_help, get_codec\n"
              "c = get_codec('acme')\n"
              "assert get_codec(4242) == c and codec_names()[-1] == 'acme' and 'acme (id 4242' in codecs_help()\n"
              "a = np.arange(12, dtype=np.float32).reshape(3, 4)\n"
              "assert np.array_equal(c.decode(c.encode(a), a.dtype, a.shape), a)\n"
              "print(codec_names())\n")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'video', 'acme')" in done.stdout
