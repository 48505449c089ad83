"""JSON form of a network description (``"format": "kernelshape.network"``, version 1.0).

```
{"format": "kernelshape.network", "format_version": "1.0", "name": ..., "spec": ...,
 "input_shape": [32, 32, 3], "outputs": ["head/logits"],
 "nodes": [{"id": "input", "type": "Input", "parents": [], "shape": [32, 32, 3]},
           {"id": "stem/conv", "type": "Conv", "parents": ["input"], "channels": 64,
            "kernel_size": 7, "stride": 2}, ...,
           {"id": "g0/b1/conv0", ..., "share": "g0/b0/conv0"}]}
```
Each node holds its layer's constructor arguments; ``share`` names the node whose weights it
reuses. Loading re-validates everything (cycles, shapes, normalization, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any, NamedTuple

from kernelshape.engine.activations import Activation
from kernelshape.topology.graph import Node
from kernelshape.topology.layers import LAYER_TYPES, Input, Nonlinearity

if TYPE_CHECKING:
    from kernelshape.topology.network import Network

FORMAT = "kernelshape.network"
FORMAT_VERSION = "1.0"
_NODE_KEYS = {"id", "type", "parents", "share"}


def network_to_dict(net: Network) -> dict[str, Any]:
    nodes = []
    for node in net.nodes:
        entry: dict[str, Any] = {"id": node.id, "type": node.layer.type_name,
                                 "parents": list(node.parents)}
        entry.update(node.layer.params())
        if node.share is not None:
            entry["share"] = node.share
        nodes.append(entry)
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "name": net.name,
            "spec": net.spec, "input_shape": list(net.input_shape),
            "outputs": list(net.outputs), "nodes": nodes}


class Description(NamedTuple):
    """What a saved description holds: the nodes (validated by ``Network``), the outputs,
    the name and the SPEC."""

    nodes: list[Node]
    outputs: list[str]
    name: str | None
    spec: str | None


def description_from_dict(data: Mapping[str, Any]) -> Description:
    """The nodes and outputs of a JSON description (checked field by field)."""
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise ValueError(f"not a network description: expected \"format\": \"{FORMAT}\"")
    version = str(data.get("format_version", ""))
    if version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
        raise ValueError(f"network format_version {version!r} is not supported (this "
                         f"kernelshape reads {FORMAT_VERSION})")
    for key in ("nodes", "outputs"):
        if key not in data:
            raise ValueError(f"network description has no {key!r}")
    nodes = [_node_from_dict(entry) for entry in data["nodes"]]
    return Description(nodes, list(data["outputs"]), data.get("name"), data.get("spec"))


def _node_from_dict(entry: Mapping[str, Any]) -> Node:
    if not isinstance(entry, Mapping) or "id" not in entry or "type" not in entry:
        raise ValueError(f"each node needs an \"id\" and a \"type\", got {entry!r}")
    node_id, type_name = entry["id"], entry["type"]
    cls = LAYER_TYPES.get(type_name)
    if cls is None:
        raise ValueError(f"node {node_id!r} has unknown type {type_name!r}; "
                         f"known types: {', '.join(LAYER_TYPES)}")
    params = {k: v for k, v in entry.items() if k not in _NODE_KEYS}
    allowed = [f.name for f in fields(cls) if f.name != "name"]
    if set(params) - set(allowed):
        raise ValueError(f"node {node_id!r} ({type_name}) has unknown fields "
                         f"{sorted(set(params) - set(allowed))}; allowed: {allowed}")
    if cls is Nonlinearity and isinstance(params.get("activation"), Mapping):
        params["activation"] = Activation.from_dict(params["activation"])
    if cls is Input and "shape" in params:
        params["shape"] = tuple(params["shape"])
    try:
        layer = cls(**params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"node {node_id!r} ({type_name}): {exc}") from None
    return Node(node_id, layer, tuple(entry.get("parents", ())), share=entry.get("share"))
