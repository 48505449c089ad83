"""Glue to the topology DSL and the solver (imported lazily: the trainer works without them).

`plan_from_nodes` walks the network's node list, so the trained model is the described one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

from kernelshape.train.plan import Act, Conv, Dense, Layer, Plan, Pool


def _tuple(value: Any, ndim: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, tuple | list) else (int(value),) * ndim


def plan_from_nodes(nodes: Sequence[Any], description: dict[str, Any], spec: str = "") -> Plan:
    """A Plan from topology nodes (in order): a chain of Dense / Conv / Nonlinearity layers,
    GlobalAvgPool and Flatten.

    The Input node gives the plan's input shape when the chain has spatial layers; a Flatten
    before any spatial layer is skipped (the trainer flattens MLP inputs itself). Branches,
    sums and norm layers are refused with the node found: the trainers train chains only
    (Conv and pooling need the JAX backend).
    """
    layers: list[Layer] = []
    previous: str | None = None
    input_shape: tuple[int, ...] | None = None
    for node in nodes:
        kind = node.layer.type_name
        if previous is not None and tuple(node.parents) != (previous,):
            raise ValueError(f"the trainer trains chains; node {node.id!r} has parents "
                             f"{list(node.parents)}")
        previous = node.id
        if kind == "Input":
            input_shape = tuple(int(s) for s in node.layer.shape)
            continue
        spatial = any(isinstance(l, Conv | Pool) for l in layers)
        if kind == "Flatten" and not spatial:
            continue
        if getattr(node, "share", None) is not None:
            raise ValueError(f"node {node.id!r} shares weights; the trainer does not")
        if kind == "Dense":
            layers.append(Dense(node.id, int(node.layer.width)))
        elif kind == "Conv":
            nd = max(len(input_shape or ()) - 1, 1)
            layers.append(Conv(node.id, int(node.layer.channels),
                               _tuple(node.layer.kernel_size, nd), _tuple(node.layer.stride, nd)))
        elif kind == "GlobalAvgPool":
            layers.append(Pool(node.id, "mean"))
        elif kind == "Flatten":
            layers.append(Pool(node.id, "flatten"))
        elif kind == "Nonlinearity":
            act = node.layer.activation
            name = act if isinstance(act, str) else act.name
            params = () if isinstance(act, str) else tuple(sorted(act.params.items()))
            layers.append(Act(node.id, name, params, node.layer.activation_key))
        else:
            raise ValueError(f"the trainer supports Dense, Conv, Nonlinearity, GlobalAvgPool and "
                             f"Flatten layers; node {node.id!r} is a {kind}")
    if not layers or not isinstance(layers[-1], Dense):
        raise ValueError("the network must end with a Dense readout")
    spatial = any(isinstance(l, Conv | Pool) for l in layers)
    return Plan(tuple(layers), description, spec, input_shape if spatial else None)


def plan_from_network(net: Any) -> Plan:
    """Plan of a topology network (its `nodes` and its `to_dict()` description)."""
    spec = getattr(net, "spec", "")
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
