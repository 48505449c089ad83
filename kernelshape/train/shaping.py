"""From (network, method) to what the trainer needs: an init scheme and activation transforms.

The constants come from a ``Solution`` (handed over as it is), a constants document (checked:
the same network hash and method), or the solver run now. A document or solution recorded for
another network or method is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from kernelshape.constants import entry_transform, network_hash
from kernelshape.solve import Solution, shape
from kernelshape.solve.recheck import checked
from kernelshape.topology import Network
from kernelshape.train.config import TrainConfig

RELU_LIKE = ("relu", "leaky_relu")


@dataclass(frozen=True)
class Shaping:
    """``init``: suo | lecun | he | eoc | ll; ``transforms``: activation key -> the dks
    parameter dict; EOC weight and bias variances; where the constants came from."""

    method: str
    init: str
    transforms: dict[str, dict[str, float]] = field(default_factory=dict)
    weight_variance: float = 1.0
    bias_variance: float = 0.0
    source: str = "builtin"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Shaping:
        return Shaping(**dict(d))


def _baseline_init(net: Network) -> str:
    """He init for ReLU-like networks, LeCun otherwise."""
    names = {act.name for act in net.activations.values()}
    return "he" if names and names <= set(RELU_LIKE) else "lecun"


def _from_solution(sol: Solution, net: Network, source: str) -> Shaping:
    if sol.method == "eoc":
        keys = list(net.activation_keys)
        if len(keys) != 1 or not sol.eoc:
            raise ValueError(f"eoc runs need a single activation, the network has {keys}")
        v = sol.eoc[keys[0]]
        return Shaping("eoc", "eoc", {}, float(v["weight_variance"]), float(v["bias_variance"]),
                       source)
    return Shaping(sol.method, "suo", {k: dict(sol.params[k]) for k in net.activation_keys},
                   source=source)


def _check_record(what: str, method: str, digest: str | None, net: Network,
                  wanted: str) -> None:
    if method != wanted:
        raise ValueError(f"the {what} was solved with method {method!r}, but this run asks "
                         f"for {wanted!r}")
    mine = network_hash(net.to_dict())
    if digest != mine:
        raise ValueError(f"the {what} is for another network (network.hash {digest!r}); this "
                         f"network's description hash is {mine!r}: re-run `kernelshape shape` "
                         "on this network")


def _from_document(doc: Mapping[str, Any], net: Network, method: str,
                   verify: bool) -> Shaping:
    _check_record("constants document", str(doc.get("method", "")).lower(),
                  (doc.get("network") or {}).get("hash"), net, method)
    doc = checked(doc, verify)
    keys = list(net.activation_keys)
    if method == "eoc":
        entry = (doc.get("eoc") or {}).get(keys[0]) if len(keys) == 1 else None
        if entry is None:
            raise ValueError(f"eoc runs need a single activation with an eoc entry in the "
                             f"constants document; the network has {keys}")
        return Shaping(method, "eoc", {}, float(entry["weight_variance"]),
                       float(entry["bias_variance"]), "document")
    acts = doc.get("activations") or {}
    missing = [k for k in keys if k not in acts]
    if missing:
        raise ValueError(f"the constants document has no constants for {missing} "
                         f"(it has {sorted(acts)})")
    return Shaping(method, "suo", {k: entry_transform(acts[k]).as_dict() for k in keys},
                   source="document")


def resolve_shaping(net: Network, config: TrainConfig, *,
                    constants: Mapping[str, Any] | None = None,
                    solution: Solution | None = None, verify: bool = True) -> Shaping:
    """The Shaping of ``config.method`` for ``net`` (for resnet-bn: the BatchNorm network)."""
    method = config.method
    if method in ("none", "ll", "resnet-bn"):
        if constants is not None or solution is not None:
            raise ValueError(f"method {method!r} uses no constants")
        if method != "ll":
            return Shaping(method, _baseline_init(net))
        names = sorted({act.name for act in net.activations.values()})
        if names != ["relu"]:
            raise ValueError(f"looks-linear init is for ReLU networks, this one uses {names}")
        return Shaping(method, "ll")
    if constants is not None and solution is not None:
        raise ValueError("give constants (a document) or solution, not both")
    if solution is not None:
        digest = network_hash(solution.network.to_dict()) if solution.network is not None \
            else None
        _check_record("solution", solution.method, digest, net, method)
        return _from_solution(solution, net, "solution")
    if constants is not None:
        return _from_document(constants, net, method, verify)
    return _from_solution(shape(net, method, **config.targets), net, "solver")
