"""From (network, method, constants) to what the trainer needs: an init scheme and activations.

The constants document is the interface between solver and trainer; a document recorded for
another network (`network.hash`) or another method is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kernelshape.train.numpy_backend import RELU_LIKE, Elementwise
from kernelshape.train.plan import Act, Plan, description_hash

METHODS = ("dks", "tat", "eoc", "none", "ll")
TRANSFORM_KEYS = ("input_scale", "input_shift", "output_shift", "output_scale", "negative_slope")


@dataclass(frozen=True)
class Shaping:
    """init: suo | lecun | he | eoc | ll; transforms: activation name -> dks parameter dict."""

    method: str
    init: str
    transforms: dict[str, dict[str, float]] = field(default_factory=dict)
    weight_variance: float = 1.0
    bias_variance: float = 0.0
    source: str = "builtin"

    def activation(self, layer: Act) -> Elementwise:
        """The layer's activation, transformed with the solved constants when there are any."""
        from kernelshape.engine.activations import Transform, activation

        act = activation(layer.activation, **dict(layer.params))
        t = self.transforms.get(layer.slot)
        return act if t is None else act.transformed(Transform(**t))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "init": self.init, "transforms": self.transforms,
                "weight_variance": self.weight_variance, "bias_variance": self.bias_variance,
                "source": self.source}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Shaping:
        return Shaping(**d)


def resolve_network(net_or_spec: Any) -> tuple[Any, Plan, str]:
    """(topology network or None, plan, description hash) from a network, SPEC string or Plan."""
    if isinstance(net_or_spec, Plan):
        return None, net_or_spec, description_hash(net_or_spec.description)
    from kernelshape.train.topology_bridge import network_hash, parse_network, plan_from_network

    net = parse_network(net_or_spec) if isinstance(net_or_spec, str) else net_or_spec
    return net, plan_from_network(net), network_hash(net)


def _from_document(doc: dict[str, Any], plan: Plan, net_hash: str, method: str) -> Shaping:
    recorded = str(doc.get("method", "")).lower()
    if recorded != method:
        raise ValueError(f"the constants document was solved with method {recorded!r}, "
                         f"but this run asks for {method!r}")
    got = (doc.get("network") or {}).get("hash")
    if got != net_hash:
        raise ValueError(f"the constants document is for another network (network.hash {got!r}); "
                         f"this model's description hash is {net_hash!r}: re-run "
                         "`kernelshape shape` on this network")
    names = plan.activation_names
    if method == "eoc":
        if len(names) != 1:
            raise ValueError(f"eoc runs need a single activation, the network has {names}")
        entry = (doc.get("eoc") or {}).get(names[0])
        if entry is None:
            raise ValueError(f"the constants document has no eoc entry for {names[0]!r}")
        return Shaping(method, "eoc", {}, float(entry["weight_variance"]),
                       float(entry["bias_variance"]), "document")
    acts = doc.get("activations") or {}
    missing = [n for n in names if n not in acts]
    if missing:
        raise ValueError(f"the constants document has no constants for {missing} "
                         f"(it has {sorted(acts)})")
    transforms = {n: {k: float(acts[n][k]) for k in TRANSFORM_KEYS if acts[n].get(k) is not None}
                  for n in names}
    return Shaping(method, "suo", transforms, source="document")


def resolve_shaping(net: Any, plan: Plan, net_hash: str, method: str,
                    constants: dict[str, Any] | None, options: dict[str, float]) -> Shaping:
    """The Shaping for a method: from the given constants document, the solver, or built-in."""
    base = sorted({a.activation for a in plan.layers if isinstance(a, Act)})
    if method == "none":
        if constants is not None:
            raise ValueError("method 'none' uses no constants document")
        he = all(n in RELU_LIKE for n in base)
        return Shaping(method, "he" if he else "lecun")
    if method == "ll":
        if base != ["relu"]:
            raise ValueError(f"looks-linear init is for ReLU networks, this one uses {base}")
        return Shaping(method, "ll")
    if constants is None:
        if net is None:
            raise ValueError(f"method {method!r} needs constants: pass constants= (a document "
                             "from `kernelshape shape -o`) or a topology network / SPEC string")
        from kernelshape.train.topology_bridge import solve_document

        constants = solve_document(net, method, options)
        shaping = _from_document(constants, plan, net_hash, method)
        return Shaping(**{**shaping.to_dict(), "source": "solver"})
    return _from_document(constants, plan, net_hash, method)
