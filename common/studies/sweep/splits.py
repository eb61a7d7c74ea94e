"""Which ranks a sweep cuts at and which codecs it runs: rank/name resolution, automatic split choice.

Defined terms: a *rank* is a node's position in topological order (the split node goes to Part II);
what Part I *sends* at a rank is the crossing tensors plus the model outputs Part I already made.
"""

from __future__ import annotations

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.common.studies.sweep.config import DEFAULT_NUM_SPLITS


def _crossing_bytes(graph, names) -> int | None:
    total = 0
    for n in names:
        info = graph.tensor_info(n)
        if info.shape is None or info.dtype is None or any(not isinstance(d, int) for d in info.shape):
            return None
        try:
            total += int(np.prod(info.shape, dtype=np.int64)) * np.dtype(info.dtype).itemsize
        except TypeError:
            return None
    return total


def sent_names(graph, rank: int, crossing: list[str]) -> list[str]:
    """What Part I sends at a rank: the crossing tensors plus the model outputs it already made."""
    cross = set(crossing)
    return list(crossing) + [o for o in dict.fromkeys(graph.output_names)
                             if o not in cross and graph.producer.get(o, -1) < rank]


def auto_splits(graph, count: int = DEFAULT_NUM_SPLITS) -> list[int]:
    """`count` interior ranks spread over the model: in each of `count` equal segments, the rank where
    Part I sends the least data (static sizes; the segment's middle where sizes are unknown)."""
    n = graph.num_nodes
    sets = graph.all_crossing_sets()
    chosen = []
    for k in range(count):
        lo, hi = 1 + (n - 1) * k // count, 1 + (n - 1) * (k + 1) // count
        cands = [r for r in range(lo, max(hi, lo + 1)) if 0 < r < n and sets[r]]
        if not cands:
            continue
        sized = [(b, r) for r in cands if (b := _crossing_bytes(graph, sent_names(graph, r, sets[r]))) is not None]
        chosen.append(min(sized)[1] if sized else cands[len(cands) // 2])
    return sorted(set(chosen))


def resolve_splits(graph, specs) -> list[int]:
    """Ranks from ints / digit strings (a rank) or node names (split before that node)."""
    if not specs:
        return auto_splits(graph)
    from splitinfer.common.split.cut import parse_cut

    ranks = [graph.rank_of(parse_cut(s), "before") for s in specs]
    return list(dict.fromkeys(ranks))


def codec_list(specs) -> list:
    from splitinfer.common.codecs import get_codec

    if not specs:
        raise UserError("no codec given (e.g. --codecs none float16 nnc:-38)")
    codecs = [get_codec(s) for s in specs]
    return list({c.spec: c for c in codecs}.values())


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)
