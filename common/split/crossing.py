"""Which tensors cross each cut, for every rank at once, from one pass over the graph.

Why intervals: a non-constant tensor made by node p and last read by a live node c crosses at exactly
the ranks p+1 .. c, so the crossing set of *every* rank comes from one sweep over these intervals
(adding a tensor where its interval starts, dropping it after it ends), not one graph walk per rank.

Defined terms
- crossing interval [a, b] of tensor t: t crosses at every rank r with a <= r <= b.
- shape-only reads: a graph input that live nodes read only through Shape/Size from some rank s on
  need not cross from s: those Shape/Size nodes are hoisted into Part I and their small outputs cross
  instead (`shape_start[x]` = s, `shape_nodes[x]` = those nodes).
- key: the deterministic order of a crossing set (graph inputs first, then by producer rank and output slot).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from splitinfer.common.core.errors import UserError

SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})  # read only the input's shape, never its values


@dataclass
class Crossings:
    """Crossing intervals of a graph and the shape-only facts that go with them."""

    num_nodes: int
    interval: dict[str, tuple[int, int]] = field(default_factory=dict)
    key: dict[str, tuple] = field(default_factory=dict)
    shape_start: dict[str, int] = field(default_factory=dict)
    shape_nodes: dict[str, list[int]] = field(default_factory=dict)

    def at(self, rank: int) -> list[str]:
        """Names crossing at one rank (graph inputs first, then by producer rank)."""
        if not 0 <= rank <= self.num_nodes:
            raise UserError(f"rank {rank} out of range 0..{self.num_nodes}")
        hits = [t for t, (a, b) in self.interval.items() if a <= rank <= b]
        return sorted(hits, key=self.key.__getitem__)

    def every_rank(self) -> list[list[str]]:
        """Crossing sets for every rank 0..N from one sweep over the intervals."""
        n = self.num_nodes
        add: list[list[str]] = [[] for _ in range(n + 2)]
        drop: list[list[str]] = [[] for _ in range(n + 2)]
        for t, (a, b) in self.interval.items():
            add[a].append(t)
            drop[b + 1].append(t)
        active: dict[str, None] = {}
        out = []
        key = self.key.__getitem__
        for r in range(n + 1):
            for t in drop[r]:
                del active[t]
            for t in add[r]:
                active[t] = None
            out.append(sorted(active, key=key))
        return out


def _is_shape_only(node) -> bool:
    return node.op_type in SHAPE_ONLY_OPS and node.domain in ("", "ai.onnx")


def crossing_intervals(input_names, nodes, outs, consumers, producer, out_index, constants) -> Crossings:
    """The crossing interval of every tensor that crosses somewhere (see the module's terms)."""
    c = Crossings(num_nodes=len(nodes))
    hoistable_start: dict[str, int] = {}  # a Shape/Size output -> first rank it crosses through hoisting
    for k, x in enumerate(input_names):
        c.key[x] = (-1, k)
        cons = consumers.get(x)
        if not cons:
            continue
        shape_nodes = [i for i in cons if _is_shape_only(nodes[i])]
        others = [i for i in cons if not _is_shape_only(nodes[i])]
        s = (max(others) + 1) if others else 0
        c.shape_start[x], c.shape_nodes[x] = s, shape_nodes
        if s > 0:
            c.interval[x] = (0, s - 1)
        for i in shape_nodes:
            for y in outs[i]:
                hoistable_start[y] = s
    for t, cons in consumers.items():
        p = producer.get(t)
        if p is None or p < 0 or t in constants:
            continue
        start = min(hoistable_start.get(t, p + 1), p + 1)
        c.interval[t] = (start, cons[-1])
        c.key[t] = (p, out_index[t])
    return c
