"""Float64 Gaussian expectations by composite Gauss–Legendre panels split at kinks.

A *scaled activation* is ``g(z) = gamma * (phi(a*z + b) + delta)`` with ``a = alpha*sqrt(q)``:
the function whose Gaussian moments give Q and C maps. Plain Gauss–Hermite is inaccurate for
kinked or steep ``g`` (ReLU: ~1e-3 in 2-D; tanh(20z): ~1e-2); here every panel is a smooth
piece of width <= 1 in z *and* <= 1 in the activation's own coordinate (over |a z + b| <= 40,
where built-ins vary), so each panel sees an analytic integrand and 16–20 nodes give
float64 accuracy. The integration range is chosen from the integrand's log-envelope.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

from kernelshape.engine.activations import Activation
from kernelshape.engine.symbolic import density_weight

FEATURE_RANGE = 40.0  # |x| beyond which built-in activations are smooth and slowly varying
ENVELOPE_DROP = 75.0  # log-units below the peak at which the integrand is negligible
NODES_1D = 20
NODES_2D = 16
MIN_HALF_WIDTH = 12.5  # z range never narrower than this (tails below 1e-34 of N(0,1))
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@cache
def _gauss_legendre(m: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(m)
    return 0.5 * x, 0.5 * w  # on [-1/2, 1/2]


@dataclass(frozen=True)
class Scaled:
    """``g(z) = gamma * (phi(a*z + b) + delta)`` for a base activation phi."""

    act: Activation
    a: float
    b: float
    gamma: float
    delta: float

    @classmethod
    def of(cls, act: Activation, q: float) -> Scaled:
        t = act.transform
        return cls(act.base, t.input_scale * math.sqrt(q), t.input_shift, t.output_scale,
                   t.output_shift)

    def __call__(self, z: np.ndarray, order: int = 0) -> np.ndarray:
        """``g^(order)(z) = gamma * a**order * phi^(order)(a z + b)`` (+ gamma*delta if order 0)."""
        y = self.act.base_derivative(self.a * z + self.b, order)
        if order == 0:
            return self.gamma * (y + self.delta)
        return self.gamma * self.a**order * y

    def kinks_z(self) -> np.ndarray:
        if self.a == 0.0:
            return np.empty(0)
        return (np.asarray(self.act.kinks, dtype=float) - self.b) / self.a

    def feature_points(self, lo: float, hi: float, whole_range: bool) -> np.ndarray:
        """z positions of unit steps of the activation's own coordinate inside [lo, hi]."""
        if abs(self.a) <= 1.0:
            return np.empty(0)
        x_lo, x_hi = sorted((self.a * lo + self.b, self.a * hi + self.b))
        if not whole_range:
            x_lo, x_hi = max(x_lo, -FEATURE_RANGE), min(x_hi, FEATURE_RANGE)
        if x_hi <= x_lo:
            return np.empty(0)
        xs = np.arange(math.ceil(x_lo), math.floor(x_hi) + 1.0)
        return (xs - self.b) / self.a


def _envelope_range(
    fns: list[Scaled], power: int, drop: float = ENVELOPE_DROP
) -> tuple[float, float]:
    """z-interval outside which prod |g_i(z)|^power * pdf(z) is negligible."""
    z = np.linspace(-60.0, 60.0, 961)
    with np.errstate(all="ignore"):
        log_env = -0.5 * z * z
        for g in fns:
            log_env = log_env + power * np.log(np.abs(g(z)))
    if np.any(np.isnan(log_env)) or np.any(log_env == np.inf):
        raise ValueError(
            "activation values overflow float64 inside the Gaussian integration range; "
            "use a smaller input scale / q, or dps=N for arbitrary precision"
        )
    finite = log_env > -np.inf
    if not finite.any():
        return -MIN_HALF_WIDTH, MIN_HALF_WIDTH
    peak = log_env[finite].max()
    keep = z[log_env > peak - drop]
    lo, hi = keep.min() - 1.0, keep.max() + 1.0
    if lo <= -59.0 or hi >= 59.0:
        raise ValueError(
            "the Gaussian integrand does not decay within |z| < 60: the activation grows too "
            "fast for this transform / q (its Gaussian second moment may diverge)"
        )
    floor = max(MIN_HALF_WIDTH, math.sqrt(2.0 * drop) + 1.0)
    return min(lo, -floor), max(hi, floor)


def panel_rule(breaks: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss–Legendre nodes/weights over consecutive ``breaks`` (last axis)."""
    x, w = _gauss_legendre(m)
    lo, hi = breaks[..., :-1], breaks[..., 1:]
    width = hi - lo
    nodes = (0.5 * (lo + hi))[..., None] + width[..., None] * x
    weights = width[..., None] * w
    shape = breaks.shape[:-1] + (-1,)
    return nodes.reshape(shape), weights.reshape(shape)


def _breaks_1d(fns: list[Scaled], lo: float, hi: float) -> np.ndarray:
    parts = [np.arange(lo, hi, 1.0), [hi]]
    for g in fns:
        k = g.kinks_z()
        parts.append(k[(k > lo) & (k < hi)])
        parts.append(g.feature_points(lo, hi, whole_range=True))
    return np.unique(np.concatenate(parts))


def expect_1d(fns: list[tuple[Scaled, int]], weight: Callable | None = None) -> float:
    """E[prod_i g_i^(order_i)(z) * weight(z)] for z ~ N(0,1)."""
    scaled = [g for g, _ in fns]
    lo, hi = _envelope_range(scaled, power=2)
    z, w = panel_rule(_breaks_1d(scaled, lo, hi), NODES_1D)
    integrand = np.exp(-0.5 * z * z) * INV_SQRT_2PI * w
    for g, order in fns:
        integrand = integrand * g(z, order)
    if weight is not None:
        integrand = integrand * weight(z)
    total = float(np.sum(integrand))
    if not math.isfinite(total):
        raise ValueError("Gaussian expectation is not finite (overflow); try dps=N")
    return total


def _outer_breaks(g1: Scaled, g2: Scaled, c: float, s: float, lo: float, hi: float) -> np.ndarray:
    """Outer panels: those of g1, plus where E[g2(z2) | z1] changes on the scale s.

    Given z1, z2 is spread by s around c*z1, so each kink of g2 at z2 = k appears in the outer
    integrand as a smoothed kink of width ~s at z1 = k/c; panels shrink geometrically towards
    those points. Where g2 merely varies on a unit scale of its own coordinate (feature points),
    the conditional mean is at least as smooth as g2, so those points only become breaks.
    """
    parts = [_breaks_1d([g1], lo, hi)]
    if c != 0.0:
        kinks = g2.kinks_z() / c
        kinks = kinks[(kinks > lo) & (kinks < hi)]
        if kinks.size and s < 0.5:
            steps = s * 2.0 ** np.arange(-2, math.ceil(math.log2(1.0 / s)) + 1)
            offsets = np.concatenate([-steps, steps])
            parts.append((kinks[:, None] + offsets[None, :]).ravel())
        parts.append(kinks)
        if abs(g2.a) > 1.0:
            parts.append(g2.feature_points(lo * c, hi * c, whole_range=False) / c)
    breaks = np.unique(np.concatenate(parts))
    return breaks[(breaks >= lo) & (breaks <= hi)]


def expect_2d(g1: Scaled, g2: Scaled, c: float, order: int, weight_order: int) -> float:
    """E_c[g1^(order)(z1) g2^(order)(z2) P_m(z1,z2,c)], corr(z1, z2) = c, |c| < 1.

    Integrates z2 = c z1 + s t (s = sqrt(1-c^2)) conditionally on z1: the inner integral over
    t is split at the kinks of g2 (which move with z1), the outer at the kinks of g1.
    """
    s = math.sqrt((1.0 - c) * (1.0 + c))
    lo, hi = _envelope_range([g1], power=2)
    z1, w1 = panel_rule(_outer_breaks(g1, g2, c, s, lo, hi), NODES_2D)
    outer = np.exp(-0.5 * z1 * z1) * INV_SQRT_2PI * w1 * g1(z1, order)
    keep = outer != 0.0
    z1, outer = z1[keep], outer[keep]
    if z1.size == 0:
        return 0.0
    lo2, hi2 = _envelope_range([g2], power=2)
    t_hi = max(-lo2, hi2)
    t_lo = -t_hi
    grid = np.arange(t_lo, t_hi + 0.5, 1.0)
    cols = [np.broadcast_to(grid, (z1.size, grid.size))]
    kinks = g2.kinks_z()
    if kinks.size:
        cols.append((kinks[None, :] - c * z1[:, None]) / s)
    if abs(g2.a) * s > 1.0:
        xs = np.arange(-FEATURE_RANGE, FEATURE_RANGE + 0.5, 1.0)
        cols.append(((xs[None, :] - g2.b) / g2.a - c * z1[:, None]) / s)
    breaks = np.sort(np.clip(np.concatenate(cols, axis=1), t_lo, t_hi), axis=1)
    t, wt = panel_rule(breaks, NODES_2D)
    z2 = c * z1[:, None] + s * t
    inner = np.exp(-0.5 * t * t) * INV_SQRT_2PI * wt * g2(z2, order)
    if weight_order:
        inner = inner * density_weight(weight_order)(z1[:, None], z2, c)
    total = float(np.sum(outer * inner.sum(axis=1)))
    if not math.isfinite(total):
        raise ValueError("Gaussian expectation is not finite (overflow); try dps=N")
    return total
