"""The TR's RetinaNet (`splitinfer models export retinanet --variant tr`) against what TR 26.847 clause 5.3.9
says of its retinanet.onnx: input `input_images` [bs,3,h,w], numeric output names (boxes, scores, labels),
about 2,248 nodes, Part II needing `input_images` up to node 65, the exact 7 tensors + scores at node 2230,
and two of the three outputs made by Part I from node 2231 on. Then splitability verifies splits of it and
the retinanet_tr family reads its outputs. One export (~30 s on 2 cores) through the real CLI.
"""

from __future__ import annotations

import json

import onnx
import pytest

from splitinfer.common.assets import bundled_images
from splitinfer.common.cli import main
from splitinfer.common.core.images import read_image
from splitinfer.common.core.labels import CATEGORY_ID_TO_NAME
from splitinfer.common.core.runtime import make_session
from splitinfer.common.families import get_family
from splitinfer.common.split.graph import SplitGraph
from splitinfer.common.models import export as exporters

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def tr_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("retinanet_tr") / "retinanet_tr" / "model.onnx"
    assert main(["models", "export", "retinanet", "--variant", "tr", "-o", str(out)]) == 0
    return out


def _dims(vi):
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]


def test_structure_is_the_trs(tr_model):
    m = onnx.load(str(tr_model), load_external_data=False)
    assert [(i.name, _dims(i)) for i in m.graph.input] == [("input_images", ["bs", 3, "h", "w"])]
    assert m.opset_import[0].version == exporters.TR_RETINANET_OPSET
    outs = [o.name for o in m.graph.output]
    assert len(outs) == 3 and all(o.isdigit() for o in outs), outs
    # the TR's are 2734/2712/2713: consecutive scores/labels, boxes later, as here
    assert int(outs[2]) == int(outs[1]) + 1 and int(outs[0]) > int(outs[1]), outs
    assert abs(len(m.graph.node) - exporters.TR_RETINANET_NODES) <= 5, len(m.graph.node)
    assert json.loads(tr_model.with_name("model.json").read_text())["family"] == "retinanet_tr"


def test_split_points_match_the_trs_description(tr_model):
    m = onnx.load(str(tr_model))
    g = SplitGraph(m)
    sets = g.all_crossing_sets()
    carries_input = [r for r, s in enumerate(sets) if "input_images" in s]
    assert max(carries_input) == 65  # TR: "From nodes 1 to 65 ... Part II needs the input input_images"
    assert set(sets[2230]) == set(exporters.TR_RETINANET_NODE_2230)  # TR: node 2230, 7 tensors + scores
    late = [len(sets[r]) for r in range(2231, min(2249, g.num_nodes))]
    # TR: 6-8 tensors incl. the 2 outputs Part I made, i.e. 4-6 intermediates; this export: 3-6
    assert late and 3 <= min(late) and max(late) <= 6, late


def test_splitability_verifies_splits_and_family_reads_outputs(tr_model):
    from splitinfer.common.studies.splitability import assess

    row = assess(tr_model, samples=2)
    assert row.split_possible and row.verified, row
    fam = get_family("retinanet_tr")
    img = read_image(bundled_images()[0])
    feeds, meta = fam.preprocess(img)
    assert feeds["input_images"].shape == (1, 3, *img.shape[:2])
    sess = make_session(str(tr_model), device="cpu", threads=1)
    named = dict(zip(sess.output_names, sess.run(feeds)))
    ids = next(v for v in named.values() if v.dtype.kind in "iu")
    dets = fam.postprocess(named, meta, score_threshold=0.0)
    assert len(dets) == sum(1 for i in ids if int(i) in CATEGORY_ID_TO_NAME)  # every named class, none lost
    assert all(0 <= d.x1 <= d.x2 <= img.shape[1] and 0 <= d.y1 <= d.y2 <= img.shape[0] for d in dets)
