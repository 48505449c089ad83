"""The arbitrary-precision route (``dps=N``): mpmath quadrature split at every kink.

1-D expectations integrate ``F(z) exp(-z^2/2)/sqrt(2 pi)`` over the pieces between kinks;
2-D expectations integrate the inner variable conditionally (``z2 = c z1 + s t``), split at
the kinks of the inner activation, which move with ``z1``. The work runs at ``N + 10`` digits
and results are returned as mpmath numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import mpmath as mp
import numpy as np

from mpmath.calculus.quadrature import GaussLegendre

from kernelshape.activations import Activation
from kernelshape.quadrature import FEATURE_RANGE, Scaled, _envelope_range, _outer_breaks
from kernelshape.symbolic import density_weight, q_derivative_weight

GUARD_DIGITS = 10


def _check_dps(dps: int) -> int:
    if isinstance(dps, bool) or not isinstance(dps, int | np.integer) or not 5 <= dps <= 1000:
        raise ValueError(f"dps must be an integer between 5 and 1000, got {dps!r}")
    return int(dps)


class _ScaledMP:
    """``g(z) = gamma * (phi(a z + b) + delta)`` at mpmath precision."""

    def __init__(self, act: Activation, q: mp.mpf) -> None:
        t = act.transform
        self.base = act.base
        self.a = mp.mpf(t.input_scale) * mp.sqrt(q)
        self.b = mp.mpf(t.input_shift)
        self.gamma = mp.mpf(t.output_scale)
        self.delta = mp.mpf(t.output_shift)
        self.pieces = {}

    def __call__(self, z: mp.mpf, order: int = 0) -> mp.mpf:
        if order not in self.pieces:
            self.pieces[order] = self.base.mp_piece_functions(order)
        x = self.a * z + self.b
        for lo, hi, fn in self.pieces[order]:
            if x < hi or hi == math.inf:
                if lo == -math.inf or x >= lo:
                    y = fn(x)
                    break
        if order == 0:
            return self.gamma * (y + self.delta)
        return self.gamma * self.a**order * y

    def kinks_z(self) -> list[mp.mpf]:
        if self.a == 0:
            return []
        return sorted((mp.mpf(k) - self.b) / self.a for k in self.base.kinks)


def _pdf(z: mp.mpf) -> mp.mpf:
    return mp.exp(-z * z / 2) / mp.sqrt(2 * mp.pi)


def _integrate(fn: Callable, points: list[mp.mpf]) -> mp.mpf:
    return mp.quad(fn, [-mp.inf, *points, mp.inf])


def _expect_1d(fn: Callable, kinks: list[mp.mpf]) -> mp.mpf:
    return _integrate(lambda z: fn(z) * _pdf(z), kinks)


@cache
def _gauss_legendre(dps: int) -> tuple[list[mp.mpf], list[mp.mpf]]:
    """Gauss–Legendre nodes/weights on [-1/2, 1/2] with enough nodes for ``dps`` digits."""
    degree = 4 if dps <= 24 else 5 if dps <= 60 else 6  # 24, 48, 96 nodes
    with mp.workdps(dps):
        rule = GaussLegendre(mp.mp).calc_nodes(degree, mp.mp.prec)
        return [x / 2 for x, _ in rule], [w / 2 for _, w in rule]


def _panels(breaks: list[mp.mpf], fn: Callable, dps: int) -> mp.mpf:
    xs, ws = _gauss_legendre(dps)
    total = mp.mpf(0)
    for lo, hi in zip(breaks[:-1], breaks[1:], strict=True):
        width = hi - lo
        if width <= 0:
            continue
        mid = (lo + hi) / 2
        total += width * mp.fsum(w * fn(mid + width * x) for x, w in zip(xs, ws, strict=True))
    return total


def _merge(float_breaks: np.ndarray, exact: list[mp.mpf], lo: mp.mpf, hi: mp.mpf) -> list:
    """Panel ends: float grid points (any placement is fine) plus exact kink positions."""
    exact = [k for k in exact if lo < k < hi]
    points = [mp.mpf(float(b)) for b in float_breaks if lo < b < hi]
    points = [p for p in points if all(abs(p - k) > 1e-9 for k in exact)]
    return [lo, *sorted(points + exact), hi]


def _kernel(act: Activation, q1: mp.mpf, q2: mp.mpf, c: mp.mpf, order: int, dps: int) -> mp.mpf:
    """d^order K/dc^order at one c: fixed Gauss–Legendre panels (the float64 route's panel
    layout) in both variables, with every kink placed exactly at working precision."""
    g1, g2 = _ScaledMP(act, q1), _ScaledMP(act, q2)
    direct = min(order, act.smooth_order)
    extra = order - direct
    if abs(c) == 1:
        if extra:
            if c == 1 and q1 == q2:
                return mp.inf
            raise ValueError(
                f"the order-{order} c-derivative at |c| = 1 of the kinked activation "
                f"{act.name!r} with q1 != q2 is not supported; evaluate at |c| < 1"
            )
        sign = 1 if c > 0 else -1
        kinks = sorted(set(g1.kinks_z()) | {sign * k for k in g2.kinks_z()})
        return _expect_1d(lambda z: g1(z, direct) * g2(sign * z, direct), kinks)
    s = mp.sqrt((1 - c) * (1 + c))
    weight = density_weight(extra, "mpmath") if extra else None
    f1, f2 = Scaled.of(act, float(q1)), Scaled.of(act, float(q2))
    drop = (dps + GUARD_DIGITS) * math.log(10.0)
    lo, hi = _envelope_range([f1], power=2, drop=drop)
    lo2, hi2 = _envelope_range([f2], power=2, drop=drop)
    t_max = mp.mpf(max(-lo2, hi2))
    kinks2 = g2.kinks_z()
    outer_exact = list(g1.kinks_z()) + ([k / c for k in kinks2] if c != 0 else [])
    outer = _merge(_outer_breaks(f1, f2, float(c), float(s), lo, hi), outer_exact,
                   mp.mpf(lo), mp.mpf(hi))
    t_grid = np.arange(-float(t_max), float(t_max) + 0.5, 1.0)

    def inner(z1: mp.mpf) -> mp.mpf:
        exact = [(k - c * z1) / s for k in kinks2]
        grid = t_grid
        if abs(f2.a) * float(s) > 1.0:
            xs = np.arange(-FEATURE_RANGE, FEATURE_RANGE + 0.5, 1.0)
            grid = np.concatenate([grid, ((xs - f2.b) / f2.a - float(c * z1)) / float(s)])
        breaks = _merge(np.unique(grid), exact, -t_max, t_max)

        def integrand(t: mp.mpf) -> mp.mpf:
            z2 = c * z1 + s * t
            value = g2(z2, direct) * _pdf(t)
            return value * weight(z1, z2, c) if weight else value

        return _panels(breaks, integrand, dps + GUARD_DIGITS)

    return _panels(outer, lambda z1: g1(z1, direct) * _pdf(z1) * inner(z1), dps + GUARD_DIGITS)


def _vectorize(values, fn: Callable):
    arr = np.asarray(values, dtype=object)
    if arr.shape == ():
        return fn(arr.item())
    out = np.empty(arr.shape, dtype=object)
    for idx, v in np.ndenumerate(arr):
        out[idx] = fn(v)
    return out


def qmap(act: Activation, q, order: int, dps: int):
    """``d^order Q/dq^order`` at ``dps`` digits (see :func:`kernelshape.maps.qmap`)."""
    dps = _check_dps(dps)

    def one(qi: object) -> mp.mpf:
        with mp.workdps(dps + GUARD_DIGITS):
            qv = mp.mpf(qi)
            if not qv > 0:
                raise ValueError(f"q must be positive, got {qi!r}")
            g = _ScaledMP(act, qv)
            if order == 0:
                value = _expect_1d(lambda z: g(z) ** 2, g.kinks_z())
            else:
                poly = q_derivative_weight(order, "mpmath")
                value = _expect_1d(lambda z: g(z) ** 2 * poly(z), g.kinks_z()) / qv**order
        return +value

    return _vectorize(q, one)


def cmap(act: Activation, c, q1: float, q2: float, order: int, dps: int):
    """``d^order C/dc^order`` at ``dps`` digits (see :func:`kernelshape.maps.cmap`)."""
    dps = _check_dps(dps)
    with mp.workdps(dps + GUARD_DIGITS):
        mq1, mq2 = mp.mpf(q1), mp.mpf(q2)
        norm = mp.sqrt(qmap(act, mq1, 0, dps) * qmap(act, mq2, 0, dps))

    def one(ci: object) -> mp.mpf:
        with mp.workdps(dps + GUARD_DIGITS):
            cv = mp.mpf(ci)
            if abs(cv) > 1:
                raise ValueError(f"c values must lie in [-1, 1], got {ci!r}")
            value = _kernel(act, mq1, mq2, cv, order, dps) / norm
        return +value

    return _vectorize(c, one)


def local_summary(act: Activation, dps: int) -> dict[str, mp.mpf]:
    """Local summary at ``dps`` digits (see :func:`kernelshape.maps.local_summary`)."""
    dps = _check_dps(dps)
    with mp.workdps(dps + GUARD_DIGITS):
        g = _ScaledMP(act, mp.mpf(1))
        kinks = g.kinks_z()
        q_value = _expect_1d(lambda z: g(z) ** 2, kinks)
        if q_value == 0:
            raise ValueError(f"{act!r} is identically zero in distribution: E[phi(z)^2] = 0")
        mean = _expect_1d(g, kinks)
        mean_slope = _expect_1d(lambda z: g(z) * z, kinks)
        q_slope = _expect_1d(lambda z: g(z) ** 2 * (z * z - 1), kinks) / 2
        smooth = act.smooth_order
        slope_sq = _expect_1d(lambda z: g(z, 1) ** 2, kinks) if smooth >= 1 else mp.inf
        curv_sq = _expect_1d(lambda z: g(z, 2) ** 2, kinks) if smooth >= 2 else mp.inf
        values = {
            "q_value": q_value,
            "q_slope": q_slope,
            "c_value_0": mean**2 / q_value,
            "c_slope_0": mean_slope**2 / q_value,
            "c_slope_1": slope_sq / q_value,
            "c_curv_1": curv_sq / q_value,
        }
    return {k: +v for k, v in values.items()}
