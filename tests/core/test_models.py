"""One resolver for model specs, the recorded family, file hashes, one video opener."""

import hashlib
import json
import shutil

import onnx
import pytest

from splitinfer.common.assets import default_model_path
from splitinfer.common.core.errors import UserError
from splitinfer.common.core.files import file_sha256
from splitinfer.common.core.images import open_video
from splitinfer.common.core.models import find_model, recorded_family


def test_find_model_id_folder_and_file(tmp_path):
    bundled = default_model_path()
    assert find_model("nanodet") == bundled
    assert find_model(bundled.parent) == bundled
    assert find_model(str(bundled)) == bundled
    with pytest.raises(UserError, match="model not found: no_such_model .*bundled: nanodet"):
        find_model("no_such_model")
    with pytest.raises(UserError, match="or a survey model"):
        find_model(tmp_path / "nope.onnx", what="a survey model")


def test_recorded_family_from_metadata_then_model_json(tmp_path):
    assert recorded_family(default_model_path()) == "nanodet"
    bare = tmp_path / "copy.onnx"
    shutil.copy(default_model_path(), bare)
    assert recorded_family(bare) is None  # no metadata entry, no model.json beside it
    (tmp_path / "model.json").write_text(json.dumps({"family": "ssd_resnet"}))
    assert recorded_family(bare) == "ssd_resnet"
    m = onnx.load(str(bare), load_external_data=False)
    m.metadata_props.add(key="splitinfer.family", value="retinanet")
    assert recorded_family(bare, model=m) == "retinanet"  # the model's own record wins
    (tmp_path / "model.json").write_text("[]")
    with pytest.raises(UserError, match="model.json"):
        recorded_family(bare)


def test_file_sha256_is_sha256_of_the_bytes(tmp_path):
    p = tmp_path / "blob"
    data = bytes(range(256)) * 9000  # over one read chunk
    p.write_bytes(data)
    assert file_sha256(p) == hashlib.sha256(data).hexdigest()


def test_open_video_names_the_file(tmp_path):
    with pytest.raises(UserError, match="video not found"):
        open_video(tmp_path / "none.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(UserError, match="junk.mp4: cannot open video"):
        open_video(junk)
