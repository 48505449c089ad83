"""Combinators: build larger descriptions from layers (serial, branches, repeats, heads).

A description is a tree of layers and combinators; ``kernelshape.topology.network`` expands it
into a graph of nodes. Branching combinators (``Sum``, ``Concat``, ``Heads``) apply every branch
to the same input (an implicit fan-out).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Union

from kernelshape.topology.layers import Layer

Description = Union[Layer, "Serial", "Sum", "Concat", "Repeat", "Heads", "Identity"]


def _check_name(name: str | None) -> None:
    if name is not None and (not isinstance(name, str) or not name or "/" in name):
        raise ValueError(f"name must be a nonempty string without '/', got {name!r}")


def _check_parts(parts: tuple, owner: str) -> None:
    for part in parts:
        if not isinstance(part, Layer | Serial | Sum | Concat | Repeat | Heads | Identity):
            raise TypeError(f"{owner} got {part!r}, which is not a layer or combinator")


@dataclass(frozen=True, eq=False)
class Identity:
    """Passes its input through (e.g. an identity shortcut); creates no node."""


@dataclass(frozen=True, eq=False, init=False)
class Serial:
    """Composition ``layers[-1] o ... o layers[0]``. A ``name`` prefixes the ids of its nodes."""

    layers: tuple[Description, ...]
    name: str | None

    def __init__(self, *layers: Description, name: str | None = None) -> None:
        _check_parts(layers, "Serial")
        _check_name(name)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "name", name)


@dataclass(frozen=True, eq=False, init=False)
class Sum:
    """Normalized weighted sum of branches applied to the same input: ``sum_i w_i b_i(x)``.

    The weights must satisfy ``sum_i w_i^2 = 1`` (then q is preserved and the C map is the
    ``w_i^2``-weighted average of the branch C maps). ``normalize=True`` rescales other weights
    by ``1 / sqrt(sum_i w_i^2)`` and warns.
    """

    branches: tuple[Description, ...]
    weights: tuple[float, ...]
    name: str | None

    def __init__(self, *branches: Description, weights: tuple[float, ...],
                 normalize: bool = False, name: str | None = None) -> None:
        _check_parts(branches, "Sum")
        _check_name(name)
        weights = tuple(float(w) for w in weights)
        if len(weights) != len(branches):
            raise ValueError(f"Sum {name or ''} has {len(branches)} branches but "
                             f"{len(weights)} weights")
        total = sum(w * w for w in weights)
        if normalize and not math.isclose(total, 1.0, rel_tol=0.0, abs_tol=1e-12):
            if total == 0.0:
                raise ValueError(f"Sum {name or ''} weights are all zero; cannot normalize")
            warnings.warn(f"Sum {name or ''}: weights {weights} rescaled by 1/sqrt({total:g}) "
                          "so that their squares sum to 1", UserWarning, stacklevel=2)
            weights = tuple(w / math.sqrt(total) for w in weights)
        object.__setattr__(self, "branches", branches)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "name", name)


def Residual(branch: Description, *, shortcut_weight: float,
             shortcut: Description | None = None, name: str | None = None) -> Description:
    """``sqrt(1 - w^2) * branch(x) + w * shortcut(x)`` (identity shortcut by default).

    ``shortcut_weight = 0`` gives the branch alone (a vanilla network, no shortcut at all).
    """
    w = float(shortcut_weight)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"shortcut_weight must be in [0, 1], got {shortcut_weight!r} "
                         "(0: no shortcut; the branch gets weight sqrt(1 - w^2))")
    if w == 0.0:
        return branch if name is None else Serial(branch, name=name)
    return Sum(branch, shortcut if shortcut is not None else Identity(),
               weights=(math.sqrt(1.0 - w * w), w), name=name)


@dataclass(frozen=True, eq=False, init=False)
class Concat:
    """Channel concatenation of branches applied to the same input (channel-fraction maps)."""

    branches: tuple[Description, ...]
    name: str | None

    def __init__(self, *branches: Description, name: str | None = None) -> None:
        _check_parts(branches, "Concat")
        _check_name(name)
        if not branches:
            raise ValueError("Concat needs at least one branch")
        object.__setattr__(self, "branches", branches)
        object.__setattr__(self, "name", name)


@dataclass(frozen=True, eq=False, init=False)
class Repeat:
    """``n`` copies of ``layer`` in series, each with its own (independent) weights.

    Node ids: ``{name}/{i}/...`` (``name`` defaults to ``"repeat"``).
    """

    layer: Description
    n: int
    name: str | None

    def __init__(self, layer: Description, n: int, *, name: str | None = None) -> None:
        _check_parts((layer,), "Repeat")
        _check_name(name)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"Repeat count must be a nonnegative integer, got {n!r}")
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "name", name)


@dataclass(frozen=True, eq=False, init=False)
class Heads:
    """Several outputs computed from the same input; must come last in a description.

    Head ``i``'s nodes get the id prefix ``head{i}/``.
    """

    heads: tuple[Description, ...]

    def __init__(self, *heads: Description) -> None:
        _check_parts(heads, "Heads")
        if not heads:
            raise ValueError("Heads needs at least one head")
        object.__setattr__(self, "heads", heads)
