"""fq's ANS tables must count exactly the tensor's symbols (issue 23: dropping that check went unnoticed,
since a table scaled by 2 has the same probabilities and decodes to the same symbols)."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard

from splitinfer.common.codecs import CodecError
from splitinfer.common.codecs import fq_ans as fq  # the ANS coders (fq_ans.py), named fq.X as before


def _symbols(levels: int, n: int = 4000) -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.minimum(rng.geometric(0.3, n) - 1, levels - 1)


def _ans_body(q, counts) -> bytes:
    return fq._TABLE.pack(len(counts)) + counts.astype("<u4").tobytes() + fq.ans_encode(q, counts).astype("<u4").tobytes()


def _wide_body(q, counts) -> bytes:
    packed = zstandard.ZstdCompressor().compress(counts.astype("<u4").tobytes())
    return fq._WIDE_TABLE.pack(len(packed)) + packed + fq.ans_encode(q, counts).astype("<u4").tobytes()


def test_ans_table_must_count_the_tensors_symbols():
    q = _symbols(16)
    counts = np.bincount(q, minlength=16).astype(np.int64)
    assert np.array_equal(fq.ans_symbols(_ans_body(q, counts), q.size), q)  # the honest table decodes
    with pytest.raises(CodecError, match=f"ANS table counts {2 * q.size} symbols but the tensor needs {q.size}"):
        fq.ans_symbols(_ans_body(q, 2 * counts), q.size)  # same probabilities, twice the count
    with pytest.raises(CodecError, match="ANS table counts"):
        fq.ans_symbols(_ans_body(q, counts), q.size - 1)


def test_wide_ans_table_must_count_the_tensors_symbols():
    levels = 300
    q = _symbols(levels)
    counts = np.bincount(q, minlength=levels).astype(np.int64)
    d = zstandard.ZstdDecompressor()
    assert np.array_equal(fq.wide_ans_symbols(_wide_body(q, counts), q.size, levels, d), q)
    with pytest.raises(CodecError, match=f"wide ANS table counts {3 * q.size} symbols"):
        fq.wide_ans_symbols(_wide_body(q, 3 * counts), q.size, levels, d)
