"""`clean_meta`: the only meta families see is {width, height[, input_width, input_height]}, finite, in
[1, 65536] pixels; anything else is INVALID_ARGUMENT naming the field, never another exception."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitinfer.server.errors import RequestError
from splitinfer.server.meta import MAX_SIDE, clean_meta


def test_the_ue_s_meta_passes_and_unknown_keys_are_dropped():
    meta = clean_meta('{"width": 768, "height": 576, "input_width": 416, "input_height": 416, "x": [1, 2]}')
    assert meta == {"width": 768, "height": 576, "input_width": 416, "input_height": 416}


@pytest.mark.parametrize("text,named", [
    ('{"width": -1, "height": 5}', "'width'"), ('{"width": 5, "height": 0}', "'height'"),
    ('{"width": 5e-324, "height": 5}', "'width'"), ('{"width": 1e308, "height": 5}', "'width'"),
    ('{"width": 5, "height": 5, "input_height": 1e-300}', "'input_height'"),
    ('{"width": NaN, "height": 5}', "'width'"), ('{"width": 5, "height": -Infinity}', "'height'"),
    ('{"width": 1' + "0" * 400 + ', "height": 5}', "'width'"), ('{"width": 5, "height": "5"}', "'height'"),
    ('{"width": 5, "height": null}', "'height'"), ('{"width": false, "height": 5}', "'width'"),
    ('{"height": 5}', "'width'"), ('{"width": 5, "height": 5, "z": 1' + "0" * 5000 + "}", "'z'"),
    ("[" * 50000 + "]" * 50000, "meta"), ('{"w": ' + "[" * 30000 + "]" * 30000 + "}", "nested too deeply"),
    ("{", "not JSON"), ("null", "JSON object"),
])
def test_bad_meta_is_invalid_argument_naming_the_field(text, named):
    with pytest.raises(RequestError) as info:
        clean_meta(text, frame_id=3)
    assert info.value.code == "INVALID_ARGUMENT" and named in str(info.value) and "frame 3" in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(
                        ["width", "height", "input_width", "input_height", "x"]), c, max_size=5), max_leaves=12))
def test_any_json_is_either_clean_or_invalid_argument(value):
    try:
        meta = clean_meta(json.dumps(value))
    except RequestError as exc:
        assert exc.code == "INVALID_ARGUMENT"
        return
    assert set(meta) >= {"width", "height"}
    assert all(1 <= v <= MAX_SIDE for v in meta.values())
