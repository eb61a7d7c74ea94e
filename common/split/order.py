"""Node order and the facts every rank shares: inputs, producers, constants, liveness, consumers.

Why one fixed order: a *rank* r means "nodes [0, r) of this order are Part I", so the order must be
topological and stable. The stored order is kept when it is topological (it usually is: exporters
write it so), else a stable Kahn sort breaks ties by stored position.

Defined terms
- node inputs: a node's explicit inputs plus the names its If/Loop/Scan bodies read from the outer
  graph (they cross a cut like explicit inputs, which `onnx.utils.extract_model` misses).
- producer: the rank of the node making a tensor; -1 for graph inputs and initializers.
- constant: an initializer, a Constant node's output, or anything computed only from constants by a
  deterministic operator. Random* operators are never constant: recomputing one in Part II would give
  other values than Part I saw.
- live node: one some graph output depends on.
"""

from __future__ import annotations

import heapq

import onnx

from splitinfer.common.core.errors import UserError

NONDETERMINISTIC_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)


def subgraphs(node: onnx.NodeProto):
    """The bodies (GraphProto) of a node's graph attributes (If branches, Loop/Scan bodies)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def outer_reads(graph: onnx.GraphProto) -> list[str]:
    """Names a subgraph body reads from enclosing scopes (nested bodies included), in first-use order."""
    local = {i.name for i in graph.input}
    local.update(t.name for t in graph.initializer)
    local.update(t.values.name for t in graph.sparse_initializer)
    for n in graph.node:
        local.update(o for o in n.output if o)
    reads: dict[str, None] = {}
    for n in graph.node:
        for name in n.input:
            if name and name not in local:
                reads[name] = None
        for sub in subgraphs(n):
            for name in outer_reads(sub):
                if name not in local:
                    reads[name] = None
    return list(reads)


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Explicit inputs plus outer-scope reads of the node's subgraphs, unique, in order."""
    names = dict.fromkeys(i for i in node.input if i)
    for sub in subgraphs(node):
        names.update(dict.fromkeys(outer_reads(sub)))
    return list(names)


def node_outputs(node: onnx.NodeProto) -> list[str]:
    return [o for o in node.output if o]


def _is_topological(nodes, ins, produced_by) -> bool:
    known: set[str] = set()
    for i, n in enumerate(nodes):
        if any(t in produced_by and t not in known for t in ins[i]):
            return False
        known.update(node_outputs(n))
    return True


def topological_order(nodes, ins, graph_level) -> tuple[list[int], bool]:
    """(order as indices into `nodes`, whether the stored order was kept).

    `ins[i]` are node i's inputs (`node_inputs`); `graph_level` names tensors no node makes (initializers).
    """
    produced_by = {o: i for i, n in enumerate(nodes) for o in node_outputs(n)}
    if _is_topological(nodes, ins, produced_by):
        return list(range(len(nodes))), True
    deps = [{produced_by[t] for t in ins[i] if t in produced_by and t not in graph_level} - {i}
            for i in range(len(nodes))]
    users: list[list[int]] = [[] for _ in nodes]
    indeg = [len(ds) for ds in deps]
    for i, ds in enumerate(deps):
        for d in ds:
            users[d].append(i)
    heap = [i for i in range(len(nodes)) if indeg[i] == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        i = heapq.heappop(heap)
        order.append(i)
        for u in users[i]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(heap, u)
    if len(order) != len(nodes):
        stuck = next(nodes[i] for i in range(len(nodes)) if indeg[i] > 0)
        raise UserError(f"model graph has a cycle (node {stuck.name or stuck.op_type!r} never becomes ready)")
    return order, False


def display_names(nodes) -> list[str]:
    """A node's name, or `<op_type>_<rank>` for unnamed nodes."""
    return [n.name or f"{n.op_type}_{i}" for i, n in enumerate(nodes)]


def ranks_by_name(names) -> dict[str, list[int]]:
    by_name: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        by_name.setdefault(name, []).append(i)
    return by_name


def producers(outs, graph_level) -> tuple[dict[str, int], dict[str, int]]:
    """(tensor -> producer rank, -1 for `graph_level` names; tensor -> its position among the node's outputs)."""
    producer = {name: -1 for name in graph_level}
    out_index: dict[str, int] = {}
    for i, names in enumerate(outs):
        for j, o in enumerate(names):
            producer[o] = i
            out_index[o] = j
    return producer, out_index


def constants(nodes, ins, outs, const_inits) -> tuple[set[str], set[int]]:
    """(constant tensors, ranks of constant nodes): see the module's definition."""
    tensors = set(const_inits)
    const_nodes: set[int] = set()
    for i, n in enumerate(nodes):
        if n.op_type in NONDETERMINISTIC_OPS:
            continue
        deps = ins[i]
        if (deps and all(d in tensors for d in deps)) or (not deps and n.op_type == "Constant"):
            const_nodes.add(i)
            tensors.update(outs[i])
    return tensors, const_nodes


def live_nodes(ins, outs, output_names) -> list[bool]:
    """live[i]: some graph output depends on node i (one backward pass)."""
    needed = set(output_names)
    live = [False] * len(outs)
    for i in range(len(outs) - 1, -1, -1):
        if any(o in needed for o in outs[i]):
            live[i] = True
            needed.update(ins[i])
    return live


def consumers(ins, live) -> dict[str, list[int]]:
    """tensor -> ranks of the live nodes reading it, ascending."""
    out: dict[str, list[int]] = {}
    for i, names in enumerate(ins):
        if live[i]:
            for t in names:
                out.setdefault(t, []).append(i)
    return out
