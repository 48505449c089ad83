"""Glue to the topology DSL and the solver (imported lazily: the trainer works without them).

`plan_from_nodes` walks the network's node list, so the trained model is the described one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

from kernelshape.train.plan import INPUT, Act, Add, Concat, Conv, Dense, Layer, Norm, Plan, Pool


def _tuple(value: Any, ndim: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, tuple | list) else (int(value),) * ndim


def plan_from_nodes(nodes: Sequence[Any], description: dict[str, Any], spec: str = "") -> Plan:
    """A Plan from topology nodes (in topological order): Dense, Conv, Nonlinearity, LayerNorm,
    GlobalAvgPool, Flatten, WeightedSum (residual / normalized sums) and ChannelConcat.

    Each layer reads its node's parents (the Input node ``"input"`` is the model input); a layer
    whose only parent is the previous layer gets no explicit `inputs`, so a chain network gives
    the same plan (and JSON) as before DAG support. The Input node gives the plan's input shape
    when the network has spatial layers; a Flatten before any spatial layer is skipped (the
    trainer flattens MLP inputs itself). Other layers (BatchNorm, MaxPool, gates, attention)
    and weight sharing are refused with the node found.
    """
    layers: list[Layer] = []
    alias: dict[str, str] = {}           # node id -> the plan name of the value it outputs
    shapes: dict[str, tuple[int, ...]] = {}
    input_shape: tuple[int, ...] | None = None
    for node in nodes:
        kind = node.layer.type_name
        shapes[node.id] = tuple(int(s) for s in getattr(node, "shape", ()) or ())
        if kind == "Input":
            input_shape = tuple(int(s) for s in node.layer.shape)
            alias[node.id] = INPUT
            continue
        try:
            parents = tuple(alias[p] for p in node.parents)
        except KeyError as e:
            raise ValueError(f"node {node.id!r} reads {e.args[0]!r}, which comes later or does "
                             "not exist (nodes must be in topological order)") from None
        previous = layers[-1].name if layers else INPUT
        inputs = () if parents == (previous,) else parents
        spatial = any(isinstance(l, Conv | Pool) for l in layers)
        if kind == "Flatten" and not spatial:
            if len(parents) != 1:
                raise ValueError(f"node {node.id!r} (Flatten) must have one parent")
            alias[node.id] = parents[0]
            continue
        if getattr(node, "share", None) is not None:
            raise ValueError(f"node {node.id!r} shares the weights of {node.share!r}; the "
                             "trainer gives every layer its own weights (build the network "
                             "without reusing a layer object)")
        layer: Layer
        if kind == "Dense":
            layer = Dense(node.id, int(node.layer.width), inputs)
        elif kind == "Conv":
            parent_shape = shapes.get(node.parents[0], ()) if node.parents else ()
            nd = max(len(parent_shape or input_shape or ()) - 1, 1)
            layer = Conv(node.id, int(node.layer.channels), _tuple(node.layer.kernel_size, nd),
                         _tuple(node.layer.stride, nd), inputs)
        elif kind == "GlobalAvgPool":
            layer = Pool(node.id, "mean", inputs)
        elif kind == "Flatten":
            layer = Pool(node.id, "flatten", inputs)
        elif kind == "Nonlinearity":
            act = node.layer.activation
            name = act if isinstance(act, str) else act.name
            params = () if isinstance(act, str) else tuple(sorted(act.params.items()))
            layer = Act(node.id, name, params, node.layer.activation_key, inputs)
        elif kind == "LayerNorm":
            layer = Norm(node.id, inputs)
        elif kind == "WeightedSum":
            layer = Add(node.id, tuple(float(w) for w in node.layer.weights), parents)
        elif kind == "ChannelConcat":
            layer = Concat(node.id, parents)
        else:
            raise ValueError(f"the trainer supports Dense, Conv, Nonlinearity, LayerNorm, "
                             f"GlobalAvgPool, Flatten, WeightedSum and ChannelConcat layers; "
                             f"node {node.id!r} is a {kind}")
        layers.append(layer)
        alias[node.id] = layer.name
    if not layers or not isinstance(layers[-1], Dense):
        raise ValueError("the network must end with a Dense readout")
    spatial = any(isinstance(l, Conv | Pool) for l in layers)
    return Plan(tuple(layers), description, spec, input_shape if spatial else None)


def plan_from_network(net: Any) -> Plan:
    """Plan of a topology network (its `nodes` and its `to_dict()` description)."""
    spec = getattr(net, "spec", "")
    outputs = tuple(getattr(net, "outputs", ()) or ())
    if len(outputs) > 1 or (outputs and outputs[0] != net.nodes[-1].id):
        raise ValueError(f"the trainer trains networks with one output (the last node); this "
                         f"one has outputs {list(outputs)}")
    return plan_from_nodes(net.nodes, net.to_dict(), spec if isinstance(spec, str) else "")


def network_hash(net: Any) -> str:
    """The constants document's network.hash of this network's description."""
    from kernelshape.constants import network_hash as hash_description

    return hash_description(net.to_dict())


def parse_network(spec: str) -> Any:
    """A topology network from a SPEC string or a saved network JSON path."""
    try:
        from kernelshape.topology import parse_spec
    except ImportError as e:
        raise ValueError(f"cannot build {spec!r}: kernelshape.topology.parse_spec is not "
                         "available; pass a Plan or a network object") from e
    return parse_spec(spec)


def solve_document(net: Any, method: str, options: dict[str, float]) -> dict[str, Any]:
    """Shape `net` with `kernelshape.solve.shape` and return its constants document."""
    from kernelshape.constants import load_constants
    from kernelshape.solve import shape

    sol = shape(net, method=method, **options)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "constants.json")
        sol.save(path)
        return dict(load_constants(path))
