"""Bounds a frame header must fit (server/limits.py), checked without gRPC: open dimensions get the model's
reference shape, a header beyond a bound is RESOURCE_EXHAUSTED naming the tensor, a misfit INVALID_ARGUMENT;
and the Part II cache stays within its memory budget."""

import pytest

from splitinfer.common.split.graph import TensorInfo
from splitinfer.common.transport.proto import splitinfer_pb2 as pb
from splitinfer.server.errors import RequestError
from splitinfer.server.limits import DEFAULT_OPEN_ELEMENTS, encoded_bound, split_bounds, tensor_bound


def header(frame_id=1, **tensors):
    fp = pb.FramePart(frame_id=frame_id, part_count=1)
    for name, (dtype, shape, length) in tensors.items():
        fp.tensors.add(name=name, dtype=dtype, shape=list(shape), encoded_length=length, chunk_count=1)
    return fp


def refused(bounds, fp) -> RequestError:
    with pytest.raises(RequestError) as info:
        bounds.check(fp)
    return info.value


@pytest.fixture
def bounds():
    expected = {"fixed": TensorInfo("fixed", "float32", [1, 8, 4, 4]),
                "open": TensorInfo("open", "float32", [None, None, None]),
                "symbolic": TensorInfo("symbolic", "float16", ["batch", 16]),
                "unknown": TensorInfo("unknown", "float32", None)}
    refs = {"open": (1, 44, 2704), "symbolic": (2, 16), "unknown": None}
    return split_bounds("split 7 of 'm'", expected, refs, slack=1, cap=None)


def good(**changes):
    t = {"fixed": ("float32", (1, 8, 4, 4), 512), "open": ("float32", (1, 44, 2704), 1000),
         "symbolic": ("float16", (2, 16), 64), "unknown": ("float32", (3, 3), 36)}
    t.update(changes)
    return header(**t)


def test_a_frame_within_its_bounds_passes_and_its_limits_are_the_models(bounds):
    bounds.check(good())
    b = bounds.tensors["open"]
    assert b.upper == (1, 44, 2704) and b.max_elements == 44 * 2704
    assert bounds.tensors["symbolic"].upper == (2, 16)
    assert bounds.tensors["unknown"].max_elements == DEFAULT_OPEN_ELEMENTS
    assert bounds.frame_bytes == sum(encoded_bound(t.max_raw_bytes) for t in bounds.tensors.values())


@pytest.mark.parametrize("shape", [(1, 44, 2705), (2, 44, 2704), (1, 1 << 20, 1 << 20), (1, 1, 1 << 62)])
def test_an_open_dimension_beyond_the_reference_is_resource_exhausted_naming_the_tensor(bounds, shape):
    exc = refused(bounds, good(open=("float32", shape, 100)))
    assert exc.code == "RESOURCE_EXHAUSTED" and "'open'" in str(exc) and "split 7 of 'm'" in str(exc)


def test_unknown_rank_is_bounded_by_elements(bounds):
    exc = refused(bounds, good(unknown=("float32", (1 << 12, 1 << 12, 2), 100)))
    assert exc.code == "RESOURCE_EXHAUSTED" and "'unknown'" in str(exc)


def test_encoded_length_beyond_the_tensors_need_is_refused(bounds):
    exc = refused(bounds, good(fixed=("float32", (1, 8, 4, 4), encoded_bound(512) + 1)))
    assert exc.code == "RESOURCE_EXHAUSTED" and "'fixed'" in str(exc) and "encoded bytes" in str(exc)


@pytest.mark.parametrize("change,text", [
    ({"fixed": ("float64", (1, 8, 4, 4), 512)}, "has dtype float64, Part II expects float32"),
    ({"fixed": ("float32", (1, 8, 4, 5), 512)}, "has shape [1, 8, 4, 5]"),
    ({"open": ("float32", (44, 2704), 512)}, "has shape [44, 2704]"),
])
def test_a_tensor_that_does_not_fit_the_split_is_invalid_argument(bounds, change, text):
    exc = refused(bounds, good(**change))
    assert exc.code == "INVALID_ARGUMENT" and text in str(exc)


def test_missing_and_extra_tensors_are_named(bounds):
    fp = good()
    del fp.tensors[1]
    fp.tensors.add(name="bogus", dtype="float32", shape=[1], encoded_length=4, chunk_count=1)
    exc = refused(bounds, fp)
    assert exc.code == "INVALID_ARGUMENT" and "missing ['open']" in str(exc) and "unexpected ['bogus']" in str(exc)


def test_slack_and_the_model_json_cap():
    info = TensorInfo("t", "float32", [1, None])
    assert tensor_bound(info, (1, 100), slack=2, cap=None).upper == (1, 200)
    assert tensor_bound(info, (1, 100), slack=2, cap=150).max_elements == 150
    assert tensor_bound(info, (1, 2, 3), slack=1, cap=None).max_elements == DEFAULT_OPEN_ELEMENTS  # rank disagrees


def test_reference_shapes_come_from_one_run_of_the_bundled_model():
    from splitinfer.common.assets import MODELS_DIR
    from splitinfer.server.model_repository import ModelRepository

    repo = ModelRepository(MODELS_DIR, device="cpu", threads=1)
    p = repo.part2("nanodet", rank=135)
    (name,) = [n for n in p.expected if "Reshape" in n]
    assert p.expected[name].shape == [None, None, None]  # open in the graph
    assert p.bounds.tensors[name].upper == (1, 44, 2704)  # NanoDet's 52x52 level: 2704 cells, 44 box logits


def test_the_part2_cache_stays_within_its_memory_budget():
    from splitinfer.common.assets import MODELS_DIR
    from splitinfer.server.model_repository import ModelRepository

    repo = ModelRepository(MODELS_DIR, device="cpu", threads=1, cache_size=16, cache_mb=120)
    for r in (20, 40, 60, 80):
        p = repo.part2("nanodet", rank=r)
        assert p.nbytes > 30 << 20  # 3 x ~13 MB of weights at these ranks
        assert repo.cached_bytes() <= 120 << 20 or len(repo.cached()) == 1
    assert len(repo.cached()) < 4 and repo.cached()[-1] == ("nanodet", 80)


def _repo_with(tmp_path, **settings):
    import json

    from splitinfer.common.assets import MODELS_DIR

    src = MODELS_DIR / "nanodet"
    dst = tmp_path / "repo" / "nanodet"
    dst.mkdir(parents=True)
    (dst / "model.onnx").symlink_to(src / "model.onnx")
    info = json.loads((src / "model.json").read_text())
    info.update(settings)
    (dst / "model.json").write_text(json.dumps(info))
    return dst.parent


def test_model_json_caps_and_slack_apply(tmp_path):
    from splitinfer.server.model_repository import ModelRepository

    repo = ModelRepository(_repo_with(tmp_path, max_crossing_elements=50_000, open_dim_slack=2), device="cpu",
                           threads=1)
    b = repo.part2("nanodet", rank=135).bounds
    (name,) = [n for n in b.tensors if "Reshape" in n]
    assert b.tensors[name].upper == (2, 88, 5408) and b.tensors[name].max_elements == 50_000
    assert all(t.max_elements <= 50_000 for t in b.tensors.values())


@pytest.mark.parametrize("bad", [{"max_crossing_elements": -1}, {"open_dim_slack": 0}, {"open_dim_slack": "2"}])
def test_bad_bounds_in_model_json_stop_the_start_with_one_line(tmp_path, bad):
    from splitinfer.common.core.errors import UserError
    from splitinfer.server.model_repository import ModelRepository

    with pytest.raises(UserError, match="model.json: '(max_crossing_elements|open_dim_slack)' must be a positive"):
        ModelRepository(_repo_with(tmp_path, **bad), device="cpu", threads=1)
