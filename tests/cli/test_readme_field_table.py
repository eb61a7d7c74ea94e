"""The README maps every TR 26.847 Annex B.3 script to its splitinfer command in one table, says that the TR
form of `device` needs `serve` and a model id, lists the model.json fields and where the compose results
land (issue 19, section 6); each command the table names exists."""

import re
from pathlib import Path

from splitinfer.common.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"
ANNEX_B3 = ["convert_ssd300_to_onnx.py", "split_onnx.py", "split_onnx_multi.py", "split_ssd_resnet.sh",
            "split_retinanet.sh", "infer_onnx.py", "infer_onnx_multi.py", "infer_image.sh", "infer_video.sh",
            "infer_dataset_image.sh", "calc_map_image.py", "calc_map_video.py", "calc_map_image_dataset.py",
            "calc_map.py", "visualize.py", "get_cocodataset_annotations.sh", "get_cocodataset_selection.sh"]


def _section(text, title):
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_one_table_maps_every_script_to_an_existing_command():
    table = _section(README.read_text(), "The field's scripts (TR 26.847 Annex B.3) and their commands")
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    for script in ANNEX_B3:
        assert any(f"`{script}" in row.split(" | ")[0] or f" `{script}" in row.split(" | ")[0] for row in rows), script
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    for row in rows:
        for used in re.findall(r"`splitinfer (\w+)", row.split(" | ", 1)[1]):
            assert used in commands, (used, row)


def test_readme_says_what_the_tr_form_needs():
    text = README.read_text()
    table = _section(text, "The field's scripts (TR 26.847 Annex B.3) and their commands")
    assert "needs a network process and a model" in table and "splitinfer serve" in table and "--model-id" in table
    for field in ("`family`", "`id`", "`weights`", "`input`", "`open_dim_slack`"):
        assert field in table, field
    assert "deploy/results/" in _section(text, "Deployment and running across machines")
    top = text.split("\n## ", 1)[0]
    assert len(top.splitlines()) <= 20 and "splitinfer demo" in top and "pytest -q" in top
