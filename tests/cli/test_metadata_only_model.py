"""One model resolver for every command (issue 19, section 4): a model that names its family only in its
ONNX metadata (`splitinfer.family`, as `models export` writes it) and has no model.json works with detect,
sweep, analyze, study, `serve` and `device -anchor`; the TR's `device -anchor ./models/x.onnx` takes the
model id from the model (`x`, not the folder name `models`) and says which id it used.

Before: `serve` refused such a repository ("no models") and `device -anchor` said "no model.json beside".
"""

import shutil

import onnx
import pytest

from grpc_helpers import env_one_thread
from splitinfer.common.assets import IMAGES_DIR, default_model_path
from splitinfer.common.cli import main
from splitinfer.common.core.models import model_json, resolve

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """models/x.onnx: the bundled NanoDet with its family in the metadata only, no model.json anywhere."""
    d = tmp_path_factory.mktemp("field") / "models"
    d.mkdir()
    m = onnx.load(str(default_model_path()))
    prop = m.metadata_props.add()
    prop.key, prop.value = "splitinfer.family", "nanodet"
    onnx.save(m, str(d / "x.onnx"))
    return d


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    d = tmp_path_factory.mktemp("photo")
    shutil.copy(IMAGES_DIR / "dog.jpg", d / "dog.jpg")
    return d


def test_resolver_reads_metadata_and_names_the_id(models_dir):
    r = resolve(str(models_dir / "x.onnx"))
    assert (r.model_path.name, r.model_id, r.family_name, r.info) == ("x.onnx", "x", "nanodet", {})
    assert model_json(models_dir / "x.onnx") == {}
    bundled = resolve("nanodet")
    assert (bundled.model_id, bundled.family_name) == ("nanodet", "nanodet") and bundled.info["family"] == "nanodet"


def test_detect_sweep_analyze_study(models_dir, photo, tmp_path):
    model = str(models_dir / "x.onnx")
    assert main(["detect", str(photo / "dog.jpg"), "--model", model, "-o", str(tmp_path / "det"), "--no-overlay"]) == 0
    assert (tmp_path / "det" / "dog.txt").read_text().strip()
    assert main(["analyze", model, "--static-only", "--no-plots", "-o", str(tmp_path / "an")]) == 0
    assert any((tmp_path / "an").iterdir())
    common = ["--data", str(photo), "--splits", "60", "--workers", "0", "-q", "--no-plots"]
    assert main(["sweep", model, *common, "--codecs", "none", "-o", str(tmp_path / "sw")]) == 0
    assert (tmp_path / "sw" / "results.json").is_file()
    assert main(["study", model, *common, "--codecs", "fq:4", "-o", str(tmp_path / "st")]) == 0
    assert any((tmp_path / "st").iterdir())


def test_serve_and_device_anchor_take_the_id_from_the_model(models_dir, photo, tmp_path, capsys):
    from splitinfer.experiments.server_process import ServerProcess

    with ServerProcess(models_dir, threads=1, device="cpu", env=env_one_thread()) as srv:
        assert " models x " in srv.ready_line + " "
        code = main(["device", "--server", srv.address, "-anchor", str(models_dir / "x.onnx"), "--split", "60",
                     "-s", str(photo), "-results_dir", str(tmp_path / "out"), "-no_CPU_anchor", "-no_GPU_anchor",
                     "--no-overlay", "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "model id 'x' (from file name x.onnx" in out
    assert (tmp_path / "out" / "predictions" / "dog.txt").read_text().strip()


def test_random_weights_are_said_at_the_cli_and_beside_the_predictions(models_dir, photo, tmp_path, capsys):
    """An export with random weights (metadata `splitinfer.weights`, as `models export` writes offline):
    detect and device say so on stderr and leave WARNING.md in the predictions folder; map still reads it."""
    m = onnx.load(str(models_dir / "x.onnx"))
    prop = m.metadata_props.add()
    prop.key, prop.value = "splitinfer.weights", "random (seed 0, non-trivial batch-norm statistics)"
    rnd = tmp_path / "rnd.onnx"
    onnx.save(m, str(rnd))
    assert main(["detect", str(photo / "dog.jpg"), "--model", str(rnd), "-o", str(tmp_path / "det"),
                 "--no-overlay", "--threshold", "0.05"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: rnd.onnx has random weights" in err
    assert "random weights" in (tmp_path / "det" / "WARNING.md").read_text()
    assert main(["device", "-no_split", "-no_GPU_anchor", "-anchor", str(rnd), "-s", str(photo),
                 "-results_dir", str(tmp_path / "dev"), "--no-overlay"]) == 0
    assert "random weights" in capsys.readouterr().err
    assert "random weights" in (tmp_path / "dev" / "predictions" / "WARNING.md").read_text()
    assert main(["map", str(tmp_path / "dev" / "predictions"), "--anchor", str(tmp_path / "det")]) == 0
    assert main(["sweep", str(rnd), "--data", str(photo), "--splits", "60", "--codecs", "none", "--workers", "0",
                 "-q", "--no-plots", "-o", str(tmp_path / "sw")]) == 0
    assert "splitinfer sweep: WARNING: rnd.onnx has random weights" in capsys.readouterr().err
    assert main(["detect", str(photo / "dog.jpg"), "--model", str(models_dir / "x.onnx"), "-o",
                 str(tmp_path / "det2"), "--no-overlay"]) == 0
    assert "random weights" not in capsys.readouterr().err and not (tmp_path / "det2" / "WARNING.md").exists()
