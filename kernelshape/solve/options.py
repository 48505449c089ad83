"""What the solver accepts, defined once: methods, targets with their defaults and ranges, the
``dps`` range, the transform keys and the ``Shapeable`` protocol. The CLI, the trainer, the
checks and the plots read these instead of writing their own."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

from kernelshape.engine.transform import TRANSFORM_KEYS

if TYPE_CHECKING:
    from kernelshape.engine.activations import Activation

METHODS = ("dks", "tat", "eoc", "none")


class InfeasibleError(ValueError):
    """The requested targets cannot be met; the message names the nearest feasible value."""

DPS_RANGE = (16, 100)  # solve(..., dps=N): N-digit Newton polish and certificate


class Target(NamedTuple):
    """A network or local target: which methods take it, its default and its valid range."""

    methods: tuple[str, ...]
    default: float
    meaning: str
    why: str  # why values outside the range cannot be met
    low: float  # exclusive unless low_inclusive
    high: float = math.inf  # exclusive
    low_inclusive: bool = False

    def range_text(self, name: str) -> str:
        low = f"{name} {'>=' if self.low_inclusive else '>'} {self.low:g}"
        return low if math.isinf(self.high) else f"{self.low:g} < {name} < {self.high:g}"


TARGETS: dict[str, Target] = {
    "zeta": Target(("dks",), 1.5, "DKS: the network's largest subnetwork slope C'_f(1)",
                   "a network C map has C'(1) >= 1, with 1 only for a linear network "
                   "(smaller zeta is closer to linear)", 1.0),
    "local_q_slope": Target(("dks",), 1.0, "DKS: every layer's Q'(1)",
                            "Q maps of nonconstant activations increase", 0.0),
    "tau": Target(("tat",), 0.3, "TAT (smooth activations): the largest subnetwork C''_f(1)",
                  "a nonlinear network has C''(1) > 0", 0.0),
    "eta": Target(("tat",), 0.9, "TAT (Leaky ReLU): the largest subnetwork C_f(0)",
                  "it is the network's C(0), which lies in (0, 1) for Leaky ReLU networks",
                  0.0, 1.0),
    "bias_variance": Target(("eoc",), 0.0, "EOC: the bias variance sigma_b^2",
                            "a variance is nonnegative", 0.0, low_inclusive=True),
}


def default(name: str) -> float:
    """The default value of target ``name``."""
    return TARGETS[name].default


def check_method(method: str) -> str:
    """``method`` in lower case, or ValueError listing the methods."""
    name = str(method).lower()
    if name not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    return name


def check_targets(method: str, targets: Mapping[str, float | None]) -> dict[str, float]:
    """The given targets (None values dropped) checked against ``method`` and their ranges."""
    out: dict[str, float] = {}
    for name, value in targets.items():
        if value is None:
            continue
        target = TARGETS.get(name)
        if target is None:
            raise ValueError(f"unknown target {name!r}; targets: {', '.join(TARGETS)}")
        if method not in target.methods:
            raise ValueError(f"{name} applies to method {'/'.join(target.methods)} only, not "
                             f"to {method}")
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
            raise ValueError(f"{name} must be a number, got {value!r}")
        value = float(value)
        low_ok = value >= target.low if target.low_inclusive else value > target.low
        if not (math.isfinite(value) and low_ok and value < target.high):
            raise InfeasibleError(f"{name} = {value:g} is unattainable: {target.why}; choose "
                                  f"{target.range_text(name)} (default {target.default:g})")
        out[name] = value
    return out


def applicable_targets(method: str, activations: Iterable[Activation]) -> tuple[str, ...]:
    """The targets of ``method`` that apply to a network with these activations: TAT takes
    ``eta`` for Leaky-ReLU networks and ``tau`` otherwise."""
    names = [t for t, target in TARGETS.items() if method in target.methods]
    if method == "tat":
        leaky = all(act.name == "leaky_relu" for act in activations)
        names = [t for t in names if t == ("eta" if leaky else "tau")]
    return tuple(names)


def check_dps(dps: int | None) -> int | None:
    """``dps`` as an int in :data:`DPS_RANGE`, or None."""
    if dps is None:
        return None
    low, high = DPS_RANGE
    if isinstance(dps, bool) or not isinstance(dps, int | np.integer) or not low <= dps <= high:
        raise ValueError(f"dps must be an integer in [{low}, {high}]; got {dps!r}")
    return int(dps)


class Shapeable(Protocol):
    """What ``shape`` needs from a network: its activations and subnetwork functions."""

    kernel_refusal: str | None

    @property
    def activations(self) -> dict[str, Activation]: ...

    def max_slope(self, xi: float) -> float: ...

    def max_curvature(self, tau: float) -> float: ...

    def subnet_max(self, x: float, r: Callable[[float], float]) -> float: ...


__all__ = ["DPS_RANGE", "METHODS", "TARGETS", "TRANSFORM_KEYS", "InfeasibleError", "Shapeable",
           "Target", "applicable_targets", "check_dps", "check_method", "check_targets",
           "default"]
