"""The trainer's layer plan: a flat list of Dense / Act steps derived from a network description.

The plan is never written by hand for a shaped run: `plan_from_network` walks the topology's
node list, so the trained model and the network the solver shaped are the same object.
`Plan.mlp` exists for tests and for users without the topology package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Dense:
    """Affine layer `y = x W + b` with `W` of shape (fan_in, units); `units=None` = n_classes."""

    name: str
    units: int | None


@dataclass(frozen=True)
class Act:
    """Elementwise `phi` (`activation`: a built-in name or an expression in x).

    `key` is the solver slot whose constants apply (default: the activation name).
    """

    name: str
    activation: str
    params: tuple[tuple[str, float], ...] = ()
    key: str = ""

    @property
    def slot(self) -> str:
        return self.key or self.activation


@dataclass(frozen=True)
class Plan:
    """Sequence of layers plus the JSON description it came from (hashed for constants checks)."""

    layers: tuple[Dense | Act, ...]
    description: dict[str, Any] = field(hash=False, compare=False)
    spec: str = ""

    @staticmethod
    def mlp(depth: int, width: int, activation: str, **params: float) -> Plan:
        """D blocks Dense(width) -> activation, then a Dense readout (the `mlp` preset's shape)."""
        if depth < 1 or width < 1:
            raise ValueError(f"mlp needs depth >= 1 and width >= 1, got {depth=} {width=}")
        layers: list[Dense | Act] = []
        p = tuple(sorted(params.items()))
        for i in range(depth):
            layers += [Dense(f"dense{i}", width), Act(f"act{i}", activation, p)]
        layers.append(Dense("readout", None))
        desc = {"kind": "trainer_plan", "preset": "mlp", "depth": depth, "width": width,
                "activation": activation, "params": dict(p)}
        return Plan(tuple(layers), desc, f"mlp:depth={depth},width={width},activation={activation}")

    @property
    def activation_names(self) -> list[str]:
        """Distinct activation slots (constants keys), in order of first use."""
        return list(dict.fromkeys(a.slot for a in self.layers if isinstance(a, Act)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (used in run configs): the description plus the flat layers."""
        layers = [{"type": "dense", "name": l.name, "units": l.units} if isinstance(l, Dense)
                  else {"type": "act", "name": l.name, "activation": l.activation,
                        "params": dict(l.params), "key": l.key} for l in self.layers]
        return {"spec": self.spec, "description": self.description, "layers": layers}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Plan:
        layers: list[Dense | Act] = []
        for l in d["layers"]:
            if l["type"] == "dense":
                layers.append(Dense(l["name"], l["units"]))
            else:
                layers.append(Act(l["name"], l["activation"], tuple(sorted(l["params"].items())),
                                  l["key"]))
        return Plan(tuple(layers), d["description"], d.get("spec", ""))


def description_hash(description: dict[str, Any]) -> str:
    """The constants document's `network.hash` of a description ("sha256:" + canonical JSON)."""
    from kernelshape.constants import network_hash

    return network_hash(description)
