"""Checks that a graph is a network DKS/TAT can shape; every error names the layer.

Rules (each message offers the supported alternative):
* a directed acyclic graph with one input node ``"input"`` whose every node feeds an output;
* shapes agree (sum operands equal, concat operands equal outside channels, convs need spatial
  axes, shared weights see equal input shapes);
* no max-pooling or multiplicative units;
* networks with a trainer-only layer (BatchNorm: no kernel map, see ``kernel_refusal``) are
  checked for structure only; every other network also needs
* normalized sums (``sum_i w_i^2 = 1``) whose operands, all but at most one, end in their own
  Dense/Conv layer (so their cross-kernels vanish);
* every nonlinear layer is fed through a Dense/Conv layer (or a normalized sum): never directly
  by the network input or another nonlinear layer, nor by a concat / flatten whose parts can
  have different q values (possibly through LayerNorm / pooling);
* one activation per activation key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from kernelshape.topology.graph import (
    INPUT_ID,
    Node,
    ancestors_until,
    immediate_dominators,
    topological_order,
)
from kernelshape.topology.layers import (
    ChannelConcat,
    Conv,
    Dense,
    Flatten,
    Input,
    Nonlinearity,
    Shape,
    Unsupported,
    WeightedSum,
)

NORMALIZATION_TOLERANCE = 1e-9


def layer_error(node: Node, message: str) -> ValueError:
    return ValueError(f"layer {node.id!r} ({node.layer.describe()}): {message}")


def node_shape(node: Node, input_shapes: Sequence[Shape]) -> Shape:
    """Output shape of ``node``; raises a ValueError naming the node on any mismatch."""
    layer = node.layer
    if isinstance(layer, Unsupported):
        raise layer_error(node, f"{layer.reason}; {layer.alternative}")
    arity = layer.arity
    if arity is not None and len(input_shapes) != arity:
        raise layer_error(node, f"takes {arity} input(s) but has {len(input_shapes)}")
    if arity is None and not input_shapes:
        raise layer_error(node, "needs at least one operand")
    try:
        return layer.output_shape(input_shapes)
    except ValueError as exc:
        raise layer_error(node, str(exc)) from None


def validate(nodes: Sequence[Node], outputs: Sequence[str]) -> list[Node]:
    """Check ``nodes``; return them in topological order with their output shapes filled in."""
    order = topological_order(nodes)
    inputs = [n for n in order if isinstance(n.layer, Input)]
    if len(inputs) != 1 or inputs[0].id != INPUT_ID:
        raise ValueError(f"a network needs exactly one Input node, with id {INPUT_ID!r}; "
                         f"found {[n.id for n in inputs]}")
    shapes: dict[str, Shape] = {}
    filled: list[Node] = []
    for node in order:
        shape = node_shape(node, [shapes[p] for p in node.parents])
        shapes[node.id] = shape
        filled.append(Node(node.id, node.layer, node.parents, shape, node.share))
    by_id = {n.id: n for n in filled}
    _check_outputs(filled, outputs)
    graph = _Graph(by_id, immediate_dominators(filled))
    kernel = kernel_refusal(filled) is None
    for node in filled:
        if node.share is not None:
            _check_share(node, by_id, shapes)
        if isinstance(node.layer, WeightedSum):
            _check_sum(node, graph, kernel)
    if kernel:
        _check_nonlinearity_inputs(filled)
    _check_activation_keys(filled)
    return filled


def kernel_refusal(nodes: Sequence[Node]) -> str | None:
    """Why a network has no kernel maps (its first trainer-only layer), or None."""
    for node in nodes:
        if node.layer.kernel_refusal:
            return (f"layer {node.id!r} ({node.layer.describe()}): {node.layer.kernel_refusal}. "
                    "A network with it can be trained (e.g. as the ResNet-BN baseline) but has "
                    "no kernel maps, so it cannot be shaped or checked")
    return None


def _check_outputs(order: Sequence[Node], outputs: Sequence[str]) -> None:
    if not outputs:
        raise ValueError("a network needs at least one output node")
    ids = {n.id for n in order}
    for out in outputs:
        if out not in ids:
            raise ValueError(f"output {out!r} is not a node of the network")
        if out == INPUT_ID:
            raise ValueError("the network input cannot be an output; add at least one layer")
    used = set(outputs)
    for node in reversed(order):
        if node.id in used:
            used.update(node.parents)
    dead = [n.id for n in order if n.id not in used]
    if dead:
        raise ValueError(f"node(s) {', '.join(map(repr, dead))} feed no output; remove them "
                         "or list them as outputs")


def _check_share(node: Node, by_id: dict[str, Node], shapes: dict[str, Shape]) -> None:
    owner = by_id.get(node.share)  # type: ignore[arg-type]
    if owner is None or owner.share is not None:
        raise layer_error(node, f"shares weights with {node.share!r}, which is not a node that "
                          "owns weights")
    if type(owner.layer) is not type(node.layer) or owner.layer.params() != node.layer.params():
        raise layer_error(node, f"shares weights with {owner.id!r} ({owner.layer.describe()}), "
                          "a different layer; only identical layers can share weights")
    here, there = shapes[node.parents[0]], shapes[owner.parents[0]]
    if here != there:
        raise layer_error(node, f"reuses the weights of {owner.id!r} on an input of shape "
                          f"{here}, but {owner.id!r} gets shape {there}")


class _Graph:
    """Lookups shared by the sum checks."""

    def __init__(self, by_id: dict[str, Node], idom: dict[str, str | None]) -> None:
        self.by_id = by_id
        self.idom = idom
        self.parents = {node_id: node.parents for node_id, node in by_id.items()}
        self.share_groups: dict[str, set[str]] = {}
        for node in by_id.values():
            if node.layer.has_weights:
                self.share_groups.setdefault(node.share or node.id, set()).add(node.id)


def _check_sum(node: Node, graph: _Graph, kernel: bool) -> None:
    """Distinct operands; with kernel maps (``kernel``) also normalized weights and operands
    whose cross-kernels vanish."""
    if len(set(node.parents)) < len(node.parents):
        raise layer_error(node, "adds the same operand more than once; combine its weights "
                          "into one operand")
    if not kernel:
        return
    weights = node.layer.weights  # type: ignore[attr-defined]
    total = sum(w * w for w in weights)
    if not math.isclose(total, 1.0, rel_tol=0.0, abs_tol=NORMALIZATION_TOLERANCE):
        raise layer_error(node, f"weights {weights} have sum of squares {total:.12g}, not 1, so "
                          "the sum does not preserve q. Use weights whose squares sum to 1, "
                          "e.g. Residual(branch, shortcut_weight=w) for sqrt(1-w^2)*branch + "
                          "w*shortcut, or Sum(..., normalize=True) to rescale them (it warns)")
    dependent = [p for p in node.parents if not _independent(p, node, graph)]
    if len(dependent) > 1:
        raise layer_error(node, f"operands {', '.join(map(repr, dependent))} do not end in their "
                          "own Dense/Conv layer (one that no other operand depends on, with "
                          "weights not reused by another operand), so their cross-kernel does "
                          "not vanish and the normalized-sum map does not apply; let all "
                          "operands but one end in their own Dense/Conv layer (e.g. a projection "
                          "shortcut)")


def _independent(operand: str, merge: Node, graph: _Graph) -> bool:
    """Whether ``operand`` ends in a Dense/Conv layer that is inside its own branch only.

    The layer must come after the fork ``idom(merge)``, be no ancestor of another operand, and
    no other use of its weights may feed another operand.
    """
    fork = graph.idom[merge.id]
    weight = _last_weight_layer(operand, graph.by_id)
    if weight is None or weight.id == fork:
        return False
    others = [p for p in merge.parents if p != operand]
    if any(weight.id in ancestors_until(p, fork, graph.parents) for p in others):  # type: ignore[arg-type]
        return False
    reused = graph.share_groups[weight.share or weight.id] - {weight.id}
    return not any(reused & ancestors_until(p, INPUT_ID, graph.parents) for p in others)


def _last_weight_layer(node_id: str, by_id: dict[str, Node]) -> Node | None:
    """The Dense/Conv node that ``node_id`` passes through last (via pass-through layers)."""
    node = by_id[node_id]
    while node.layer.role in ("linear", "normalize") and not isinstance(node.layer, Dense | Conv):
        node = by_id[node.parents[0]]
    return node if isinstance(node.layer, Dense | Conv) else None


def _check_nonlinearity_inputs(order: Sequence[Node]) -> None:
    """Every nonlinear layer must see identically distributed Gaussian pre-activations.

    Forward pass: what feeds each node is ``("gaussian", None)`` after a Dense/Conv layer (or a
    normalized sum), ``("nonlinear", id)`` / ``("input", id)`` straight from a nonlinear layer or
    the input, ``("mixture", id)`` after a concat / flatten whose parts can have different q.
    """
    feed: dict[str, tuple[str, Node | None]] = {}
    for node in order:
        layer = node.layer
        if isinstance(layer, Dense | Conv):
            feed[node.id] = ("gaussian", None)
        elif layer.role in ("nonlinear", "input"):
            feed[node.id] = (layer.role, node)
        elif isinstance(layer, ChannelConcat | Flatten) and (
                len(node.parents) > 1 or isinstance(layer, Flatten)):
            feed[node.id] = ("mixture", node)
        elif isinstance(layer, WeightedSum):
            mixtures = [feed[p] for p in node.parents if feed[p][0] == "mixture"]
            feed[node.id] = mixtures[0] if mixtures else ("gaussian", None)
        else:  # LayerNorm, GlobalAvgPool, one-operand concat: as their input
            feed[node.id] = feed[node.parents[0]]
        if isinstance(layer, Nonlinearity):
            _check_feed(node, feed[node.parents[0]])


def _check_feed(node: Node, feed: tuple[str, Node | None]) -> None:
    kind, source = feed
    if kind == "gaussian":
        return
    assert source is not None
    if kind == "input":
        raise layer_error(node, "is applied to the network input with no Dense/Conv layer "
                          "before it; the kernel maps assume Gaussian pre-activations, so "
                          "put a Dense or Conv layer first")
    if kind == "nonlinear":
        raise layer_error(node, f"is applied to the output of nonlinear layer {source.id!r} "
                          "with no Dense/Conv layer between them; the kernel maps assume Gaussian "
                          "pre-activations. Insert a Dense/Conv layer, or fuse the two into one "
                          "activation expression (e.g. 'tanh(log(1 + exp(x)))')")
    what = "concatenation" if isinstance(source.layer, ChannelConcat) else "flatten"
    raise layer_error(node, f"is applied to the {what} {source.id!r}, whose parts can have "
                      "different q values, so its inputs are not identically distributed and "
                      "a single-q kernel map does not apply; put a Dense/Conv layer after the "
                      f"{what} (it mixes the channels)")


def _check_activation_keys(order: Sequence[Node]) -> None:
    seen: dict[str, tuple[Node, object]] = {}
    for node in order:
        if not isinstance(node.layer, Nonlinearity):
            continue
        try:
            act = node.layer.resolve()
        except (ValueError, TypeError) as exc:
            raise layer_error(node, str(exc)) from None
        key = node.layer.activation_key
        if key in seen and seen[key][1] != act:
            raise layer_error(node, f"uses activation key {key!r} for {act!r}, but layer "
                              f"{seen[key][0].id!r} uses that key for {seen[key][1]!r}; give "
                              "different activations different keys (Nonlinearity(..., key=...))")
        seen.setdefault(key, (node, act))
