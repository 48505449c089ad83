"""Theorem 13 (DKS seed talk): how far a subnetwork's C map can be from the identity.

For every subnetwork f (C maps at equal q, so ``C_f(c) = sum_k b_k c^k`` with ``b_k >= 0``,
``sum b_k = 1``):

    (lower)     (1 - C_f'(0)) / 4  <=  max_{[-1,1]} |C_f(c) - c|
    (upper)     max_{[-1,1]} |C_f(c) - c|   <=  2 (1 - C_f'(0))
    (slope)     max_{[-1,1]} |C_f'(c) - 1|  <=  2 (1 - C_f'(0)) + (C_f'(1) - 1)
    if C_f(0) = 0:
    (upper0)    max_{[-1,1]} |C_f(c) - c|   <=  2 (C_f'(1) - 1)
    (slope0)    max_{[-1,1]} |C_f'(c) - 1|  <=  3 (C_f'(1) - 1)

Each inequality ``small <= large`` is reported with its slack ``large - small`` and its
tightness ``small / large`` (1 = the constant is attained). Maxima over [-1, 1] are taken on a
dense grid (uniform in c and in arccos c, so both ends are resolved) followed by bracketing
refinement around the largest local maxima (:func:`maximize_abs`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kernelshape.engine import closed_forms
from kernelshape.engine.activations import Transform
from kernelshape.solve import Solution, shape
from kernelshape.topology import INPUT_ID, Network, Subnetwork, parse_spec
from kernelshape.topology.graph import ancestors_until
from kernelshape.verify.limits import check_grid

CMapFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

BOUNDS = ("lower", "upper", "slope", "upper0", "slope0")
BOUND_TEXT = {
    "lower": "(1-C'(0))/4 <= max|C-c|",
    "upper": "max|C-c| <= 2(1-C'(0))",
    "slope": "max|C'-1| <= 2(1-C'(0)) + (C'(1)-1)",
    "upper0": "C(0)=0: max|C-c| <= 2(C'(1)-1)",
    "slope0": "C(0)=0: max|C'-1| <= 3(C'(1)-1)",
}
GRID = 1025
TOLERANCE = 1e-9  # absolute: map evaluation + maximization error allowance
ZERO_TOLERANCE = 1e-9  # |C_f(0)| below this counts as C_f(0) = 0


# --------------------------------------------------------------------------- maximization

@dataclass
class Maximum:
    """``value = max_{c in [-1,1]} |g(c)|`` attained at ``at``."""

    value: float
    at: float


def dense_grid(n: int = GRID) -> np.ndarray:
    """Union of n points uniform in c and n points uniform in arccos c, on [-1, 1]."""
    uniform = np.linspace(-1.0, 1.0, n)
    angular = -np.cos(np.linspace(0.0, math.pi, n))
    grid = np.unique(np.clip(np.concatenate([uniform, angular, [0.0]]), -1.0, 1.0))
    return grid


def maximize_abs(fn: Callable[[np.ndarray], np.ndarray], n: int = GRID, *,
                 candidates: int = 4, rounds: int = 5, points: int = 33) -> Maximum:
    """``max |fn(c)|`` over [-1, 1]: dense grid, then ``rounds`` zooms of ``points`` points
    around each of the ``candidates`` largest grid local maxima (each round shrinks the bracket
    ``[c_{j-1}, c_{j+1}]`` by ``(points-1)/2``; 5 rounds of 33 take a grid cell of ~1e-3 to
    ~1e-9, where a smooth maximum is exact to ~1e-18 relative to its curvature)."""
    grid = dense_grid(n)
    values = np.abs(np.asarray(fn(grid), dtype=float))
    if np.isnan(values).any():
        bad = grid[np.isnan(values)][0]
        raise ValueError(f"the map is not finite at c = {bad!r}")
    best = int(np.argmax(values))
    result = Maximum(float(values[best]), float(grid[best]))
    if not math.isfinite(result.value):
        return result
    left = np.concatenate([[-np.inf], values[:-1]])
    right = np.concatenate([values[1:], [-np.inf]])
    peaks = np.nonzero((values >= left) & (values >= right))[0]
    peaks = peaks[np.argsort(values[peaks])[::-1][:candidates]]
    for i in peaks:
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        for _ in range(rounds):
            x = np.linspace(lo, hi, points)
            y = np.abs(np.asarray(fn(x), dtype=float))
            j = int(np.nanargmax(y))
            if y[j] > result.value:
                result = Maximum(float(y[j]), float(x[j]))
            lo, hi = x[max(j - 1, 0)], x[min(j + 1, points - 1)]
            if hi - lo < 1e-13:
                break
    return result


# --------------------------------------------------------------------------- one C map

@dataclass
class Bound:
    """One inequality ``small <= large`` of Theorem 13."""

    name: str
    small: float
    large: float
    applies: bool = True
    tolerance: float = TOLERANCE

    @property
    def text(self) -> str:
        return BOUND_TEXT[self.name]

    @property
    def slack(self) -> float:
        """``large - small`` (>= 0 when the inequality holds)."""
        if math.isinf(self.large) and math.isinf(self.small):
            return 0.0
        return self.large - self.small

    @property
    def ratio(self) -> float:
        """Tightness ``small / large``: 1 = attained, 0 = far from it (nan: 0/0 or inf/inf)."""
        if math.isinf(self.large):
            return 0.0 if math.isfinite(self.small) else math.nan
        if self.large == 0.0:
            return math.nan if self.small == 0.0 else math.inf
        return self.small / self.large

    @property
    def holds(self) -> bool:
        return (not self.applies) or self.slack >= -self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "inequality": self.text, "small": self.small,
                "large": self.large, "slack": self.slack, "tightness": self.ratio,
                "applies": self.applies, "holds": self.holds}


@dataclass
class CMapCheck:
    """Theorem 13's quantities and inequalities for one C map."""

    c_value_0: float
    c_slope_0: float
    c_slope_1: float
    max_dev: Maximum
    max_slope_dev: Maximum
    bounds: list[Bound]

    @property
    def holds(self) -> bool:
        return all(b.holds for b in self.bounds)

    @property
    def min_slack(self) -> float:
        return min((b.slack for b in self.bounds if b.applies), default=math.inf)

    def bound(self, name: str) -> Bound:
        return next(b for b in self.bounds if b.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"C(0)": self.c_value_0, "C'(0)": self.c_slope_0, "C'(1)": self.c_slope_1,
                "max|C-c|": self.max_dev.value, "argmax|C-c|": self.max_dev.at,
                "max|C'-1|": self.max_slope_dev.value, "argmax|C'-1|": self.max_slope_dev.at,
                "holds": self.holds, "min_slack": self.min_slack,
                "bounds": [b.to_dict() for b in self.bounds]}


def theorem13_bounds(c_value_0: float, c_slope_0: float, c_slope_1: float, max_dev: float,
                     max_slope_dev: float, tolerance: float = TOLERANCE,
                     zero_tolerance: float = ZERO_TOLERANCE) -> list[Bound]:
    """The five inequalities from the measured quantities (the C(0)=0 pair applies when
    ``|C(0)| <= zero_tolerance``; their allowance then grows by ``4 |C(0)|``)."""
    s0 = 1.0 - c_slope_0
    s1 = c_slope_1 - 1.0
    zero = abs(c_value_0) <= zero_tolerance
    extra = tolerance + 4.0 * abs(c_value_0)
    return [
        Bound("lower", s0 / 4.0, max_dev, True, tolerance),
        Bound("upper", max_dev, 2.0 * s0, True, tolerance),
        Bound("slope", max_slope_dev, 2.0 * s0 + s1, True, tolerance),
        Bound("upper0", max_dev, 2.0 * s1, zero, extra),
        Bound("slope0", max_slope_dev, 3.0 * s1, zero, extra),
    ]


def check_cmap(fn: CMapFn, n: int = GRID, tolerance: float = TOLERANCE,
               zero_tolerance: float = ZERO_TOLERANCE) -> CMapCheck:
    """Theorem 13 for the C map ``fn: c -> (C(c), C'(c))`` (vectorized)."""
    value, slope = fn(np.array([0.0, 1.0]))
    dev = maximize_abs(lambda c: fn(c)[0] - c, n)
    slope_dev = maximize_abs(lambda c: fn(c)[1] - 1.0, n)
    c0, d0, d1 = float(value[0]), float(slope[0]), float(slope[1])
    return CMapCheck(c0, d0, d1, dev, slope_dev,
                     theorem13_bounds(c0, d0, d1, dev.value, slope_dev.value, tolerance,
                                      zero_tolerance))


def polynomial_cmap(coefficients: Sequence[float]) -> CMapFn:
    """``C(c) = sum_k b_k c^k`` and its derivative (for constructed / extremal maps)."""
    b = np.asarray(coefficients, dtype=float)
    db = np.polynomial.polynomial.polyder(b) if b.size > 1 else np.zeros(1)

    def fn(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = np.asarray(c, dtype=float)
        return (np.polynomial.polynomial.polyval(c, b),
                np.polynomial.polynomial.polyval(c, db))

    return fn


def lower_ratio_search(trials: int = 20_000, degree: int = 12, seed: int = 0,
                       n: int = 4001) -> tuple[float, np.ndarray]:
    """Smallest ``max|C - c| / (1 - C'(0))`` over random sparse power series C with
    nonnegative coefficients summing to 1 (1-3 terms of degree 2..``degree``, a random
    linear coefficient, half of them with a constant term); Theorem 13 says it is >= 1/4.
    Returns (ratio, coefficients). Grid maximum only (a lower estimate of each maximum)."""
    rng = np.random.default_rng(seed)
    c = np.linspace(-1.0, 1.0, n)
    powers = np.vander(c, degree + 1, increasing=True)
    best, best_b = math.inf, np.zeros(degree + 1)
    for _ in range(trials):
        b = np.zeros(degree + 1)
        k = rng.integers(2, degree + 1, size=rng.integers(1, 4))
        b[k] = rng.dirichlet(np.ones(len(k)))
        if rng.random() < 0.5:
            b[0] = 0.3 * rng.random()
        b[1] = 2.0 * rng.random()
        b /= b.sum()
        if 1.0 - b[1] < 1e-6:
            continue
        ratio = float(np.abs(powers @ b - c).max() / (1.0 - b[1]))
        if ratio < best:
            best, best_b = ratio, b
    return best, best_b


# --------------------------------------------------------------------------- networks

@dataclass
class SubnetCheck:
    """Theorem 13 for one subnetwork."""

    label: str
    kind: str
    start: str
    end: str
    q_start: float
    nonlinear_layers: int
    check: CMapCheck

    def to_dict(self) -> dict[str, Any]:
        return {"subnetwork": self.label, "kind": self.kind, "start": self.start,
                "end": self.end, "q_start": self.q_start,
                "nonlinear_layers": self.nonlinear_layers, **self.check.to_dict()}


@dataclass
class Theorem13Report:
    """Theorem 13 over every subnetwork of one (shaped) network."""

    spec: str
    method: str
    target: str
    targets: dict[str, float]
    params: dict[str, dict[str, float]]
    subnets: list[SubnetCheck]
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return all(s.check.holds for s in self.subnets)

    def tightest(self, name: str) -> float:
        """Largest tightness of bound ``name`` over the subnetworks where it applies."""
        ratios = [s.check.bound(name).ratio for s in self.subnets if s.check.bound(name).applies]
        ratios = [r for r in ratios if math.isfinite(r)]
        return max(ratios, default=math.nan)

    def min_slack(self, name: str | None = None) -> float:
        slacks = [b.slack for s in self.subnets for b in s.check.bounds
                  if b.applies and (name is None or b.name == name)]
        return min(slacks, default=math.inf)

    def to_dict(self) -> dict[str, Any]:
        return {"theorem": "theorem13", "network": self.spec, "method": self.method,
                "targets": self.targets, "params": self.params, "holds": self.holds,
                "min_slack": self.min_slack(),
                "tightness": {n: self.tightest(n) for n in BOUNDS},
                "subnetworks": [s.to_dict() for s in self.subnets],
                "seconds": self.seconds, "notes": self.notes,
                "inequalities": dict(BOUND_TEXT)}


Q_LIMIT = 1e2  # above this input q, non-closed-form maps need long expansions (slow)


def check_q_range(net: Network, transforms: Mapping[str, Transform]) -> None:
    """Refuse (ValueError) networks whose q explodes into a range where the C maps of
    non-closed-form activations are impractically slow to evaluate (e.g. an EOC softplus
    chain without biases, where q doubles per layer)."""
    qs = net.q_values(transforms=transforms)
    acts = net.transformed_activations(transforms)
    for node in net.nonlinear_nodes:
        q = qs[node.parents[0]]
        act = acts[node.layer.activation_key]  # type: ignore[attr-defined]
        if not math.isfinite(q) or (q > Q_LIMIT and not closed_forms.supports(act)):
            raise ValueError(
                f"the pre-activation second moment q reaches {q:.3g} at {node.id!r} for inputs "
                f"with q = 1 (this initialization does not keep q near a fixed point); "
                f"C maps of {act.name} at q > {Q_LIMIT:g} are too slow to evaluate here; "
                "shape the network (--method dks or tat) or use a shallower one")


def _members(net: Network, sub: Subnetwork) -> list[Any]:
    """The nodes of ``sub`` after its start, in network order."""
    ids = ancestors_until(sub.end, sub.start, {n.id: n.parents for n in net.nodes})
    return [n for n in net.nodes if n.id in ids and n.id != sub.start]


def _signature(net: Network, sub: Subnetwork, q_start: float) -> tuple:
    """Structure + start q: subnetworks with equal signatures have equal C maps."""
    index = {sub.start: 0}
    items = []
    for i, node in enumerate(_members(net, sub), start=1):
        index[node.id] = i
        layer = node.layer
        extra: Any = None
        if layer.role == "nonlinear":
            extra = layer.activation_key  # type: ignore[attr-defined]
        elif layer.role == "mix":
            extra = tuple(layer.mix_weights)  # type: ignore[attr-defined]
        items.append((layer.role, extra, tuple(index[p] for p in node.parents)))
    return round(q_start, 13), tuple(items)


def target_text(solution: Solution) -> str:
    """``zeta=1.5`` / ``tau=0.3`` / ``eta=0.9`` / ``-`` for a table cell."""
    for key in ("zeta", "tau", "eta"):
        if key in solution.targets:
            return f"{key}={solution.targets[key]:g}"
    return "-"


def theorem13(net_or_spec: Network | str, method: str = "none", *, n: int = GRID,
              transforms: Mapping[str, Transform] | None = None, prefixes: bool = False,
              tolerance: float = TOLERANCE, **targets: float) -> Theorem13Report:
    """Check Theorem 13 on every subnetwork of a network shaped with ``method`` (``targets``
    as for ``kernelshape.shape``), or with the given activation ``transforms``.

    ``prefixes=True`` also checks input -> every nonlinear layer. Subnetworks with the same
    structure and start q (e.g. identical residual branches of a shaped ResNet) are computed
    once.
    """
    start = time.perf_counter()
    net = parse_spec(net_or_spec) if isinstance(net_or_spec, str) else net_or_spec
    spec = net_or_spec if isinstance(net_or_spec, str) else (net.spec or net.name or "network")
    check_grid(net, n, "Theorem 13")
    notes: list[str] = []
    target = "-"
    found: dict[str, float] = {}
    if transforms is None:
        solution = shape(net, method, **targets)
        transforms = solution.network_transforms()
        method, target, found = solution.method, target_text(solution), dict(solution.targets)
        notes = list(solution.warnings)
        if method == "eoc":
            notes.append("EOC weight variance s_w^2 modelled as input_scale = s_w")
    else:
        method = "given transforms"
    check_q_range(net, transforms)
    qs = net.q_values(transforms=transforms)
    done: dict[tuple, CMapCheck] = {}
    checks = []
    for sub in net.subnetworks(prefixes):
        q_start = qs[sub.start] if sub.start != INPUT_ID else 1.0
        key = _signature(net, sub, q_start)
        if key not in done:
            def fmap(c: np.ndarray, sub: Subnetwork = sub) -> tuple[np.ndarray, np.ndarray]:
                return net.subnetwork_cmap(sub, c, transforms=transforms)
            done[key] = check_cmap(fmap, n, tolerance)
        checks.append(SubnetCheck(sub.label, sub.kind, sub.start, sub.end, q_start,
                                  sum(m.layer.role == "nonlinear" for m in _members(net, sub)),
                                  done[key]))
    return Theorem13Report(spec, method, target, found,
                           {k: t.as_dict() for k, t in transforms.items()}, checks,
                           time.perf_counter() - start, notes)
