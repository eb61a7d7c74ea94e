"""The one rate parser follows tc(8)'s units: bits for `bit`/bare numbers, BYTES for `bps`."""

import pytest

from splitinfer.common.core.errors import UserError
from splitinfer.common.core.rates import parse_rate, rate_label


@pytest.mark.parametrize("text,bps", [
    # tc: bit or a bare number = bits per second; kbit/mbit/gbit/tbit = decimal multiples of bits
    ("1000", 1e3), ("64000bit", 64e3), ("800kbit", 800e3), ("50mbit", 50e6), ("1.5gbit", 1.5e9), ("2tbit", 2e12),
    # tc: bps = BYTES per second, kbps/mbps/gbps = decimal multiples of bytes (x 8 bits)
    ("100bps", 800.0), ("10kbps", 80e3), ("50mbps", 400e6), ("1gbps", 8e9),
    # tc compares suffixes case-insensitively: 50MBps is megaBYTES, 50Mbit megabits
    ("50MBps", 400e6), ("50Mbit", 50e6), ("1GBit", 1e9),
    # IEC prefixes: powers of 1024
    ("1kibit", 1024.0), ("2mibit", 2 * 2**20), ("1gibit", 2**30), ("1mibps", 8 * 2**20),
    # our two extensions, kept for earlier command lines: a bare SI prefix and bit/s
    ("500M", 5e8), ("1G", 1e9), ("100k", 1e5), ("100K", 1e5), ("2.5Gbit/s", 2.5e9), ("1e9", 1e9),
    (" 20mbit ", 20e6),
])
def test_tc_units(text, bps):
    assert parse_rate(text) == pytest.approx(bps)


def test_numbers_are_bits_per_second():
    assert parse_rate(1000) == 1000.0
    assert parse_rate(2.5e6) == 2.5e6


@pytest.mark.parametrize("text", ["", "fast", "5X", "-1G", "0", "0mbit", "G", "mbit", "5%", "10mbps/s",
                                  "1GB", "3 mb", "nan", "inf", "1e999", True])
def test_refuses_what_tc_refuses(text):
    with pytest.raises(UserError, match="rate"):
        parse_rate(text)


def test_labels_read_back():
    for text in ("500M", "1G", "5G", "100k", "1.5G", "50mbps"):
        bps = parse_rate(text)
        assert parse_rate(rate_label(bps)) == pytest.approx(bps)
    assert [rate_label(parse_rate(b)) for b in ("500M", "1G", "100k", "10mbps")] == ["500M", "1G", "100k", "80M"]
