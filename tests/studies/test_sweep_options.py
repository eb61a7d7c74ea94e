"""The sweep's split and codec lists: both list forms on the command line, ranks and node names read by the
one cut parser (split.cut.parse_cut)."""

import numpy as np
import pytest

from splitinfer.common.assets import default_model_path
from splitinfer.common.cli import build_parser
from splitinfer.common.core.errors import UserError
from splitinfer.common.core.onnx_io import load_model
from splitinfer.common.split.graph import SplitGraph
from splitinfer.common.studies.sweep.splits import resolve_splits


@pytest.mark.parametrize("splits, codecs", [(["27,46,95"], ["none,float16+zstd:3"]),
                                            (["27", "46", "95"], ["none", "float16+zstd:3"]),
                                            (["27,46", "95"], ["none,", "float16+zstd:3"])])
def test_sweep_lists_take_commas_and_spaces(splits, codecs):
    args = build_parser().parse_args(["sweep", "nanodet", "--splits", *splits, "--codecs", *codecs])
    assert args.splits == ["27", "46", "95"]
    assert args.codecs == ["none", "float16+zstd:3"]


@pytest.fixture(scope="module")
def graph():
    return SplitGraph(load_model(default_model_path()))


def test_resolve_splits_reads_ranks_and_names(graph):
    assert graph.nodes[46].name
    assert resolve_splits(graph, ["27", 46, np.int64(95), " 95 ", graph.nodes[46].name]) == [27, 46, 95]
    assert resolve_splits(graph, [graph.nodes[60].name]) == [60]
    with pytest.raises(UserError, match="rank -1 out of range"):
        resolve_splits(graph, ["-1"])
