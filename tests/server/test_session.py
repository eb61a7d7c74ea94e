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
