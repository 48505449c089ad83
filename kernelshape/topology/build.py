"""Expand a description (layers and combinators) into graph nodes.

Node ids are paths: a named combinator ``C(name="blk")`` prefixes ``blk/`` to the ids of the
nodes inside it; an unnamed layer gets ``{auto_name}{k}`` (``dense0``, ``act3``, ...) within its
prefix; a named layer object used again gets ``{name}.1``, ``{name}.2``, ...
Reusing one layer object with weights (Dense, Conv, LayerNorm) marks the later uses as sharing
the first use's weights; every copy made by ``Repeat`` has its own weights.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

from kernelshape.topology.combinators import (
    Concat,
    Description,
    Heads,
    Identity,
    Repeat,
    Serial,
    Sum,
)
from kernelshape.topology.graph import INPUT_ID, Node
from kernelshape.topology.layers import ChannelConcat, Input, Layer, Shape, WeightedSum
from kernelshape.topology.validation import node_shape

_NO_SINGLE_OUTPUT = ""
_HEADS_LAST = "Heads must be the last part of a description (it ends the network)"


#: layers one network may have (an mlp of depth 100,000 has 200,002; shaping it takes
#: seconds and a few hundred MB)
MAX_NODES = 250_000


@dataclass
class _Builder:
    nodes: list[Node] = field(default_factory=list)
    shapes: dict[str, Shape] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    owners: dict[tuple[tuple[int, ...], int], str] = field(default_factory=dict)
    counters: Counter = field(default_factory=Counter)
    copies: itertools.count = field(default_factory=itertools.count)
    layer_of: dict[str, Layer] = field(default_factory=dict)

    def add(self, layer: Layer, parents: tuple[str, ...], prefix: str,
            scope: tuple[int, ...]) -> str:
        if len(self.nodes) >= MAX_NODES:
            raise ValueError(f"the network has more than {MAX_NODES:,} layers, the most a "
                             "description may hold (memory and time grow with the layers)")
        if layer.name is not None:
            node_id = prefix + layer.name
        else:
            base = prefix + layer.auto_name
            node_id = f"{base}{self.counters[base]}"
            self.counters[base] += 1
        if node_id in self.shapes:
            if self.layer_of[node_id] is not layer:
                raise ValueError(f"two layers get the id {node_id!r}; give them distinct names "
                                 "(or put them in differently named combinators)")
            base, uses = node_id, 1  # the same named layer object used again: "name.1", ...
            while node_id in self.shapes:
                node_id, uses = f"{base}.{uses}", uses + 1
        self.layer_of[node_id] = layer
        share = None
        if layer.has_weights:
            key = (scope, id(layer))
            share = self.owners.setdefault(key, node_id)
            share = None if share == node_id else share

        node = Node(node_id, layer, parents, share=share)
        self.shapes[node_id] = node_shape(node, [self.shapes[p] for p in parents])
        self.nodes.append(node)
        return node_id

    def emit(self, part: Description, parent: str, prefix: str, scope: tuple[int, ...]) -> str:
        """Emit ``part`` applied to node ``parent``; return the id of its output node."""
        if isinstance(part, Layer):
            return self.add(part, (parent,), prefix, scope)
        if isinstance(part, Identity):
            return parent
        if isinstance(part, Heads):
            raise ValueError(_HEADS_LAST)
        inner = prefix + part.name + "/" if getattr(part, "name", None) else prefix
        if isinstance(part, Serial):
            for i, layer in enumerate(part.layers):
                if parent == _NO_SINGLE_OUTPUT:
                    raise ValueError(_HEADS_LAST)
                if isinstance(layer, Heads) and i == len(part.layers) - 1:
                    self.emit_heads(layer, parent, inner, scope)
                    return _NO_SINGLE_OUTPUT
                parent = self.emit(layer, parent, inner, scope)
            return parent
        if isinstance(part, Repeat):
            base = inner if part.name else self.fresh_prefix(prefix, "repeat")
            for i in range(part.n):
                parent = self.emit(part.layer, parent, f"{base}{i}/", scope + (next(self.copies),))
            return parent
        ends = tuple(self.emit(branch, parent, inner, scope) for branch in part.branches)
        if _NO_SINGLE_OUTPUT in ends:
            raise ValueError(_HEADS_LAST)
        if isinstance(part, Sum):
            return self.add(WeightedSum(part.weights, name="sum" if part.name else None), ends,
                            inner, scope)
        assert isinstance(part, Concat)
        channels = tuple(self.shapes[e][-1] for e in ends)
        return self.add(ChannelConcat(channels, name="concat" if part.name else None), ends,
                        inner, scope)

    def emit_heads(self, heads: Heads, parent: str, prefix: str, scope: tuple[int, ...]) -> None:
        for i, head in enumerate(heads.heads):
            self.outputs.append(self.emit(head, parent, f"{prefix}head{i}/", scope))

    def fresh_prefix(self, prefix: str, stem: str) -> str:
        base = prefix + stem
        k = self.counters[base]
        self.counters[base] += 1
        return f"{base}{k}/"


def expand(body: Description, input_shape: Shape) -> tuple[list[Node], list[str]]:
    """Nodes (input first, parents before children) and output ids of ``body``."""
    builder = _Builder()
    input_layer = Input(tuple(input_shape))
    builder.nodes.append(Node(INPUT_ID, input_layer, ()))
    builder.shapes[INPUT_ID] = input_layer.shape
    if isinstance(body, Heads):
        builder.emit_heads(body, INPUT_ID, "", ())
    else:
        end = builder.emit(body, INPUT_ID, "", ())
        if end != _NO_SINGLE_OUTPUT:
            builder.outputs.append(end)
    if builder.outputs == [INPUT_ID]:
        raise ValueError("the description has no layers")
    shapes = builder.shapes
    nodes = [Node(n.id, n.layer, n.parents, shapes[n.id], n.share) for n in builder.nodes]
    return nodes, builder.outputs
