"""Graph nodes and the graph algorithms the network needs (ordering, dominators)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kernelshape.topology.layers import Layer, Shape

INPUT_ID = "input"


@dataclass(frozen=True)
class Node:
    """One layer application: ``layer`` applied to the outputs of ``parents`` (node ids).

    ``shape`` is the output shape (filled in by the network). ``share`` is the id of the node
    whose weights this node reuses (``None``: its own weights).
    """

    id: str
    layer: Layer
    parents: tuple[str, ...]
    shape: Shape = ()
    share: str | None = None


def topological_order(nodes: Sequence[Node]) -> list[Node]:
    """Nodes sorted so that parents come first (stable: keeps the given order when possible).

    Raises ValueError naming the nodes of a cycle, or an unknown parent.
    """
    by_id: dict[str, Node] = {}
    for node in nodes:
        if node.id in by_id:
            raise ValueError(f"two nodes have the id {node.id!r}; node ids must be unique")
        by_id[node.id] = node
    for node in nodes:
        for parent in node.parents:
            if parent not in by_id:
                raise ValueError(f"node {node.id!r} has unknown parent {parent!r}")
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    order: list[Node] = []
    for root in nodes:
        if root.id in state:
            continue
        stack: list[tuple[str, int]] = [(root.id, 0)]
        state[root.id] = 1
        while stack:
            node_id, i = stack[-1]
            parents = by_id[node_id].parents
            if i < len(parents):
                stack[-1] = (node_id, i + 1)
                parent = parents[i]
                if state.get(parent) == 1:
                    path = [n for n, _ in stack]
                    cycle = path[path.index(parent):] + [parent]
                    raise ValueError("the network has a cycle: " + " -> ".join(reversed(cycle))
                                     + "; a network must be a directed acyclic graph")
                if parent not in state:
                    state[parent] = 1
                    stack.append((parent, 0))
            else:
                state[node_id] = 2
                order.append(by_id[node_id])
                stack.pop()
    return order


def immediate_dominators(order: Sequence[Node]) -> dict[str, str | None]:
    """``idom[v]``: the last node through which every path from the input to ``v`` passes.

    For a DAG in topological order, ``idom(v)`` is the nearest common dominator of v's parents.
    """
    idom: dict[str, str | None] = {}
    depth: dict[str, int] = {}
    for node in order:
        if not node.parents:
            idom[node.id], depth[node.id] = None, 0
            continue
        common = node.parents[0]
        for other in node.parents[1:]:
            common = _common_dominator(common, other, idom, depth)
        idom[node.id], depth[node.id] = common, depth[common] + 1
    return idom


def _common_dominator(a: str, b: str, idom: Mapping[str, str | None],
                      depth: Mapping[str, int]) -> str:
    while a != b:
        if depth[a] >= depth[b]:
            a = idom[a]  # type: ignore[assignment]
        else:
            b = idom[b]  # type: ignore[assignment]
    return a


def ancestors_until(end: str, start: str, parents: Mapping[str, Sequence[str]]) -> set[str]:
    """Nodes on paths from ``start`` to ``end`` (both included), walking back from ``end``.

    ``start`` must dominate ``end``, so every backward path stops at ``start``.
    """
    seen = {end}
    stack = [end]
    while stack:
        node_id = stack.pop()
        if node_id == start:
            continue
        for parent in parents[node_id]:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen
