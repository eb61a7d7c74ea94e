"""One vocabulary for cuts and lists: ranks vs names, comma- or space-separated lists, `-f`."""

import argparse
import re

import pytest

from splitinfer.common.cli.options import add_family_option, add_flag_option, add_list_option, split_list
from splitinfer.common.core.errors import UserError
from splitinfer.common.split.cut import parse_cut, parse_cuts


def test_rank_or_name():
    assert parse_cut("60") == 60 and parse_cut(" 7 ") == 7 and parse_cut(3) == 3
    assert parse_cut("-1") == -1  # a rank; SplitGraph refuses it as out of range
    assert parse_cut("Conv_12") == "Conv_12" and parse_cut("/backbone/conv1/Conv") == "/backbone/conv1/Conv"
    assert parse_cut("1e3") == "1e3" and parse_cut("12a") == "12a"  # not ranks: names
    with pytest.raises(UserError):
        parse_cut(" ")


def test_lists_take_commas_and_spaces():
    assert parse_cuts("9,60,120") == parse_cuts(["9", "60", "120"]) == parse_cuts(["9,60", "120"]) == [9, 60, 120]
    assert parse_cuts(["9", "Relu_3"]) == [9, "Relu_3"]
    assert split_list(["a, b", "c"]) == ["a", "b", "c"]


def _parser():
    p = argparse.ArgumentParser()
    add_list_option(p, "--splits", default="9,22")
    add_family_option(p)
    return p


def test_list_option_both_forms_and_default():
    p = _parser()
    assert p.parse_args([]).splits == ["9", "22"]
    assert p.parse_args(["--splits", "9,60,120"]).splits == ["9", "60", "120"]
    assert p.parse_args(["--splits", "9", "60", "120"]).splits == ["9", "60", "120"]
    assert p.parse_args(["-f", "nanodet"]).family == "nanodet"


def test_flag_option_and_its_field_alias():
    p = argparse.ArgumentParser()
    add_flag_option(p)
    assert p.parse_args([]).flag == "before"
    assert p.parse_args(["--flag", "after"]).flag == "after"
    assert p.parse_args(["-f", "after"]).flag == "after"  # split_onnx_multi.py's spelling
    assert not re.search(r"(?<![-\w])-f\b", p.format_help())  # hidden: -f is the family elsewhere
    with pytest.raises(SystemExit):
        p.parse_args(["--flag", "sideways"])
