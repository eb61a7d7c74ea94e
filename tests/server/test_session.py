"""Session set-up pieces without gRPC: codec specs a client sends are refused with INVALID_ARGUMENT, never an
exception of the codec registry (found by the fuzz test: '²' passes str.isdigit but not int())."""

import pytest

from splitinfer.server.errors import RequestError
from splitinfer.server.session import Codecs


@pytest.mark.parametrize("spec", ["²", "zstd:²", "8²", "nnc:-٣", "zstd\x00", "x" * 65, "rot13", "zstd:99", "nnc:abc"])
def test_bad_codec_specs_are_invalid_argument(spec):
    with pytest.raises(RequestError) as info:
        Codecs().get(spec)
    assert info.value.code == "INVALID_ARGUMENT"


def test_a_good_spec_is_made_once():
    codecs = Codecs()
    assert codecs.get("zstd:5") is codecs.get("zstd:5")


def test_the_set_up_codec_profile_is_read_and_must_agree_with_its_spec():
    from splitinfer.common.codecs import get_codec
    from splitinfer.common.transport.proto import splitinfer_pb2 as pb
    from splitinfer.server.session import check_codec_profile

    codec = get_codec("zstd:5")
    check_codec_profile(pb.CodecProfile(spec="zstd:5", codec_id=codec.codec_id, params={"level": "5"}), codec)
    check_codec_profile(pb.CodecProfile(spec="zstd:5"), codec)  # id and parameters are optional
    for bad in (pb.CodecProfile(spec="zstd:5", codec_id=838), pb.CodecProfile(spec="zstd:5", params={"level": "9"})):
        with pytest.raises(RequestError) as info:
            check_codec_profile(bad, codec)
        assert info.value.code == "INVALID_ARGUMENT" and "set-up codec" in str(info.value)


def test_a_tensor_whose_codec_parameters_lie_is_refused():
    import numpy as np

    from splitinfer.common.codecs import get_codec
    from splitinfer.common.transport import wire
    from splitinfer.server.session import check_tensor_params

    codec = get_codec("zstd:5")
    t = wire.encode_tensor("x", np.zeros((2, 3), np.float32), codec)
    check_tensor_params(t, codec, 0)
    t.codec_params = {"level": "19"}
    with pytest.raises(RequestError) as info:
        check_tensor_params(t, codec, 7)
    assert info.value.code == "INVALID_ARGUMENT" and "frame 7, tensor 'x'" in str(info.value)
