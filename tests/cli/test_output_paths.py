"""Every command's output options go through one output-path rule (core/files.py): a file in the way is one
line naming the option, exit 2; a missing parent folder of an output file is made (issue 19, section 3).

Before: `device -results_dir FILE` (FileExistsError), `map -r newdir/r.csv` (FileNotFoundError) and
`map --plot/--coco-results`, `visualize -o`, `netexp -o`, `models export -o`, `recommend --json` into a
file in the way all ended in tracebacks.
"""

import argparse
import shutil
from pathlib import Path

import pytest

from splitinfer.common.assets import IMAGES_DIR
from splitinfer.common.cli import build_parser, main

# minimal command lines per command; the output option is added by the test
BASE = {
    "analyze": ["analyze", "nanodet"],
    "dataset": ["dataset", "frames", "v.mp4"],
    "detect": ["detect", "x.jpg"],
    "export": ["export", "triton", "-r", "9"],
    "map": ["map", "p", "--gt", "g"],
    "models": ["models", "export", "retinanet"],
    "netexp": ["netexp"],
    "recommend": ["recommend", "nanodet", "--results", "r"],
    "split": ["split", "-a", "nanodet", "-r", "9"],
    "splitability": ["splitability"],
    "study": ["study", "nanodet"],
    "sweep": ["sweep", "nanodet"],
    "visualize": ["visualize", "a", "b"],
    "device": ["device", "-no_split"],
}
# options whose names say they write: each must be declared in its command's OUTPUTS
WRITE_WORDS = ("out", "csv", "json", "plot", "results_filename", "results_dir", "coco_results", "save_profiles",
               "cache_dir", "output", "out_dir")


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _declared(name, p, argv):
    outputs = p.get_default("_outputs")
    return outputs(p.parse_args(argv[1:])) if callable(outputs) else outputs


def _option(p, dest):
    actions = list(p._actions)
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for s in a.choices.values():
                actions += s._actions
    return next(max(a.option_strings, key=len) for a in actions if a.dest == dest and a.option_strings)


def _cases():
    cases = []
    for name, p in _commands().items():
        if name not in BASE:
            continue
        for dest, kind in _declared(name, p, BASE[name]).items():
            cases.append((name, _option(p, dest), kind))
    return cases


def test_every_writing_option_is_declared():
    for name, p in _commands().items():
        argv = BASE.get(name)
        declared = _declared(name, p, argv) if argv else (p.get_default("_outputs") or {})
        if callable(declared):
            declared = {}
        writing = {a.dest for a in p._actions if a.option_strings and a.dest in WRITE_WORDS}
        assert writing <= set(declared), f"{name}: output options {writing - set(declared)} not in OUTPUTS"
        if declared:
            assert name in BASE, f"{name} declares outputs: add it to BASE"


@pytest.mark.parametrize("name,option,kind", _cases(), ids=lambda v: str(v))
def test_file_in_the_way_is_one_line(name, option, kind, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("x")
    targets = ["afile/sub"] + (["afile"] if kind == "dir" else [])
    if kind == "file":
        Path("adir").mkdir()
        targets.append("adir")
    for target in targets:
        code = main(BASE[name] + [option, target])
        err = capsys.readouterr().err.strip()
        assert code == 2, (target, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert option in err and target in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"afile"} | ({"adir"} if kind == "file" else set()))


@pytest.fixture()
def preds(tmp_path):
    """Predictions of two bundled photos (real detect run) and the bundled terrain2 ground truth."""
    src = tmp_path / "imgs"
    src.mkdir()
    for n in ("terrain2.png", "dog.jpg"):
        shutil.copy(IMAGES_DIR / n, src / n)
    assert main(["detect", str(src / "terrain2.png"), "-o", str(tmp_path / "preds"), "--threshold", "0.05",
                 "--no-overlay"]) == 0
    return tmp_path / "preds", IMAGES_DIR / "terrain2_coco.json"


def test_missing_parents_are_made(preds, tmp_path, capsys):
    pred_dir, gt = preds
    new = tmp_path / "new" / "deeper"
    assert main(["map", str(pred_dir), "--gt", str(gt), "--csv", str(new / "m.csv"), "--plot", str(new / "ap.png"),
                 "--coco-results", str(new / "r.json")]) == 0
    assert main(["map", "-d", str(IMAGES_DIR), "-p", str(pred_dir), "-g", str(gt), "-r", str(new / "r" / "r.csv"),
                 "--no_plot"]) == 0
    for f in ("m.csv", "ap.png", "r.json", "r/r.csv"):
        assert (new / f).stat().st_size > 0, f
    assert main(["visualize", str(IMAGES_DIR / "terrain2.png"), str(pred_dir), "-o", str(new / "v" / "t.png")]) == 0
    assert (new / "v" / "t.png").stat().st_size > 0
    assert main(["device", "-no_split", "-no_GPU_anchor", "-s", str(IMAGES_DIR / "dog.jpg"),
                 "-results_dir", str(new / "dev"), "-results_filename", str(new / "csv" / "res.csv")]) == 0
    assert (new / "csv" / "res.csv").is_file() and (new / "dev" / "predictions" / "dog.txt").is_file()
    assert "Traceback" not in capsys.readouterr().err
