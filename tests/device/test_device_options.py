"""The UE commands' options, parsed for real (no server): lists in both forms, every codec in the help,
the demo's table sized by its content, `--split` read by the one cut parser."""

import pytest

from splitinfer.common.cli import build_parser
from splitinfer.common.codecs import codec_names
from splitinfer.experiments.demo import table_lines
from splitinfer.device.part1 import parse_split


@pytest.mark.parametrize("argv", [["--splits", "9,60,120"], ["--splits", "9", "60", "120"],
                                  ["--splits", "9,60", "120"]])
def test_demo_splits_take_commas_and_spaces(argv):
    args = build_parser().parse_args(["demo", *argv, "--codecs", "none", "float16+zstd:3,fq:4"])
    assert args.splits == ["9", "60", "120"]
    assert args.codecs == ["none", "float16+zstd:3", "fq:4"]


def test_device_codec_help_lists_every_registered_codec():
    text = build_parser()._subparsers._group_actions[0].choices["device"].format_help()
    flat = " ".join(text.split())
    missing = [n for n in codec_names() if f"{n} (" not in flat and f"{n}[" not in flat]
    assert not missing, flat


def test_demo_table_fits_chained_specs():
    row = (60, "4", 100000, 25000, 4.0, 1.0, 2.0, 0.5, 3.0, 7.0, "float16+zstd:3", "yes", "CPU")
    short = (60, "4", 100000, 50000, 2.0, 1.0, 2.0, 0.5, 3.0, 7.0, "none", "yes", "CPU")
    lines = table_lines([row, short])
    assert len({line.rindex("  yes") for line in lines[2:]}) == 1  # the agreement column starts at one place
    assert lines[2].split()[2] == "float16+zstd:3" and lines[2].split()[5] == "4.00"
    for head, cell in (("codec", "float16+zstd:3"), ("ratio", "4.00"), ("e2e ms", "7.0")):  # right-aligned
        assert lines[0].index(head) + len(head) == lines[2].index(cell) + len(cell), (head, lines)
    assert lines[0].index("codec") + len("codec") == lines[3].index("none") + len("none")


@pytest.mark.parametrize("text, want", [("60", (60, None)), (" 7 ", (7, None)), ("-1", (-1, None)),
                                        ("Conv_12", (None, "Conv_12")), (None, (None, None)), ("  ", (None, None))])
def test_split_option_reads_ranks_and_node_names(text, want):
    assert parse_split(text) == want
