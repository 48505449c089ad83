"""The arbitrary-precision route (``dps=N``): mpmath quadrature split at every kink.

1-D expectations integrate ``F(z) exp(-z^2/2)/sqrt(2 pi)`` with ``mp.quad`` (tanh-sinh) over
the pieces between the kinks, with extra break points where a steep transform makes the
activation vary on a scale below 1 in z. 2-D expectations integrate the inner variable
conditionally (``z2 = c z1 + s t``, ``s = sqrt(1 - c^2)``) with composite Gauss–Legendre panels
(the float64 route's layout: split at the kinks of the inner activation, which move with ``z1``,
and where either activation varies); every kink is placed exactly at working precision.

Work runs at ``W = N + GUARD_DIGITS`` digits. 2-D panels get only the nodes their share of the
result needs: a panel whose integrand is at most ``10^-e`` of the result's scale
``sqrt(E[g1^2] E[g2^2])`` (bounded with ``max|g_i| / rms(g_i)`` over the range and the Gaussian
factor's maximum on the panel) is integrated to ``W - e`` digits with
``ceil(NODES_PER_DIGIT * digits) + NODE_MARGIN`` nodes, and skipped when ``e >= W``. The node
rule assumes each panel's integrand is analytic in an ellipse with ``rho >= 4`` around it
(unit panels, singularities at distance >= 1 in the activation's own coordinate: tanh pi/2,
atan/asinh 1); results are returned as mpmath numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import mpmath as mp
import numpy as np

from kernelshape.engine import DPS_RANGE
from kernelshape.engine.activations import Activation
from kernelshape.engine.quadrature import (
    FEATURE_RANGE,
    Scaled,
    envelope_range,
    outer_breaks,
    refined,
)
from kernelshape.engine.symbolic import density_weight, q_derivative_weight

GUARD_DIGITS = 10
NODES_PER_DIGIT = 0.85
NODE_MARGIN = 6
LOG10_E = math.log10(math.e)


def check_digits(act: Activation, dps: int) -> int:
    """``dps`` checked, for an activation that can be evaluated to that many digits."""
    if act.expression is None:
        raise ValueError(f"{act.name}: a Python callable is evaluated in float64, so dps=N "
                         "cannot give more digits; write it as an expression for dps=N")
    return _check_dps(dps)


def _check_dps(dps: int) -> int:
    low, high = DPS_RANGE
    if isinstance(dps, bool) or not isinstance(dps, int | np.integer) or not low <= dps <= high:
        raise ValueError(f"dps must be an integer between {low} and {high}, got {dps!r}")
    return int(dps)


class ScaledMP:
    """``g(z) = gamma * (phi(a z + b) + delta)`` at mpmath precision."""

    def __init__(self, act: Activation, q: mp.mpf) -> None:
        t = act.transform
        self.base = act.base
        self.a = mp.mpf(t.input_scale) * mp.sqrt(q)
        self.b = mp.mpf(t.input_shift)
        self.gamma = mp.mpf(t.output_scale)
        self.delta = mp.mpf(t.output_shift)
        self.pieces: dict[int, list] = {}

    def piece_functions(self, order: int) -> list:
        if order not in self.pieces:
            self.pieces[order] = self.base.mp_piece_functions(order)
        return self.pieces[order]

    def __call__(self, z: mp.mpf, order: int = 0) -> mp.mpf:
        x = self.a * z + self.b
        for lo, hi, fn in self.piece_functions(order):
            if (x < hi or hi == math.inf) and (lo == -math.inf or x >= lo):
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


def _steep_points(g: ScaledMP) -> list[mp.mpf]:
    """z where a steep transform (|a| > 1) crosses unit steps of the activation's coordinate."""
    a, b = float(g.a), float(g.b)
    if abs(a) <= 1.0:
        return []
    xs = np.arange(-FEATURE_RANGE, FEATURE_RANGE + 0.5, 1.0)
    zs = (xs - b) / a
    return [mp.mpf(float(z)) for z in zs if abs(z) < 40.0]


def _float_twin(g: ScaledMP) -> Scaled:
    return Scaled(g.base, float(g.a), float(g.b), float(g.gamma), float(g.delta))


def _resolved_points(g: ScaledMP) -> list[mp.mpf]:
    """Break points the float64 route had to add to resolve ``g`` (steepness or oscillation
    inside an expression), as mpmath numbers; empty where its layout sufficed."""
    twin = _float_twin(g)
    lo, hi = envelope_range([twin], power=2)
    extra = refined(twin, lo, hi)
    return [] if extra is None else [mp.mpf(float(z)) for z in extra]


def expectation(fn: Callable, g: ScaledMP, extra: tuple[ScaledMP, ...] = ()) -> mp.mpf:
    """E[fn(z)] split at the kinks of g (and of ``extra``), at steep-feature points and where
    the float64 route refined; refused when mpmath's error estimate exceeds the digits."""
    exact, approximate = list(g.kinks_z()), _steep_points(g) + _resolved_points(g)
    for h in extra:
        exact += list(h.kinks_z())
        approximate += _steep_points(h) + _resolved_points(h)
    # float break points within 1e-9 of an exact kink would leave the kink inside a panel
    merged = sorted(set(exact) | {p for p in approximate
                                  if all(abs(p - k) >= 1e-9 for k in exact)})
    value, error = mp.quad(lambda z: fn(z) * _pdf(z), [-mp.inf, *merged, mp.inf], error=True)
    digits = mp.mp.dps - GUARD_DIGITS
    if not error <= mp.mpf(10) ** -(digits + 2) * max(abs(value), 1):
        raise ValueError(f"the {digits}-digit quadrature did not converge (error estimate "
                         f"{mp.nstr(error, 3)} for a value {mp.nstr(value, 5)}): the activation "
                         "varies on too fine a scale for this route")
    return value


@cache
def _legendre(n: int, dps: int) -> tuple[tuple[mp.mpf, ...], tuple[mp.mpf, ...]]:
    """n-point Gauss–Legendre nodes/weights on [-1/2, 1/2] at ``dps`` digits (Newton from the
    float64 nodes, using the three-term recurrence for P_n)."""
    x0, _ = np.polynomial.legendre.leggauss(n)
    nodes, weights = [], []
    with mp.workdps(dps + 10):
        tol = mp.mpf(10) ** (-dps - 5)
        for guess in x0[: (n + 1) // 2]:
            x = mp.mpf(float(guess))
            for _ in range(100):
                p0, p1 = mp.mpf(1), x
                for k in range(2, n + 1):
                    p0, p1 = p1, ((2 * k - 1) * x * p1 - (k - 1) * p0) / k
                dp = n * (x * p1 - p0) / (x * x - 1)
                step = p1 / dp
                x -= step
                if abs(step) < tol:
                    break
            p0, p1 = mp.mpf(1), x
            for k in range(2, n + 1):
                p0, p1 = p1, ((2 * k - 1) * x * p1 - (k - 1) * p0) / k
            dp = n * (x * p1 - p0) / (x * x - 1)
            w = 1 / ((1 - x * x) * dp * dp)  # 2/((1-x^2) P'^2), halved for [-1/2, 1/2]
            nodes.append(x / 2)
            weights.append(w)
        full_nodes = [*nodes, *(-x for x in reversed(nodes[: n // 2]))]
        full_weights = [*weights, *reversed(weights[: n // 2])]
    return tuple(+x for x in full_nodes), tuple(+w for w in full_weights)


def _nodes_for(digits: float) -> int:
    n = math.ceil(NODES_PER_DIGIT * max(digits, 1.0)) + NODE_MARGIN
    return 4 * math.ceil(n / 4)  # share rules between nearby digit counts


def _growth_digits(g: Scaled, lo: float, hi: float, order: int) -> float:
    """log10(max |g^(order)| over [lo, hi] / rms): how far a panel's integrand can exceed the
    result's scale (plus half a digit for the crude rms estimate)."""
    z = np.linspace(lo, hi, 2001)
    with np.errstate(all="ignore"):
        values = np.abs(g(z, order))
        rms = math.sqrt(float(np.sum(values**2 * np.exp(-0.5 * z * z)) * (z[1] - z[0])
                              / math.sqrt(2 * math.pi)))
    top = float(np.max(values))
    if not (rms > 0 and math.isfinite(top)):
        return 0.0
    return max(0.0, math.log10(top / rms)) + 0.5


def _log10_pdf_max(lo: float, hi: float) -> float:
    """log10 of max over [lo, hi] of exp(-z^2/2) (relative to the peak at 0)."""
    zmin = 0.0 if lo <= 0.0 <= hi else min(abs(lo), abs(hi))
    return -0.5 * zmin * zmin * LOG10_E


def _panels(breaks: list[mp.mpf], fn: Callable, digits: float, dps: int) -> mp.mpf:
    """Sum over consecutive ``breaks`` of Gauss–Legendre rules sized for each panel's share:
    ``fn(z)`` is assumed bounded by ``exp(-z^2/2)`` times the scale (``digits`` = digits needed
    relative to that scale)."""
    total = mp.mpf(0)
    for lo, hi in zip(breaks[:-1], breaks[1:], strict=True):
        width = hi - lo
        if width <= 0:
            continue
        need = digits + _log10_pdf_max(float(lo), float(hi)) + math.log10(float(width))
        if need <= 0:
            continue
        xs, ws = _legendre(_nodes_for(need), dps)
        mid = (lo + hi) / 2
        total += width * mp.fsum(w * fn(mid + width * x) for x, w in zip(xs, ws, strict=True))
    return total


def _merge(float_breaks: np.ndarray, exact: list[mp.mpf], lo: mp.mpf, hi: mp.mpf) -> list:
    """Panel ends: float grid points (any placement is fine) plus exact kink positions."""
    exact = [k for k in exact if lo < k < hi]
    points = [mp.mpf(float(b)) for b in float_breaks if lo < b < hi]
    points = [p for p in points if all(abs(p - k) > 1e-9 for k in exact)]
    return [lo, *sorted(points + exact), hi]


@dataclass
class _Panel:
    """Inner panel: nodes t, weights w * pdf(t), and the activation piece it lies in."""

    lo: mp.mpf
    hi: mp.mpf
    t: list[mp.mpf]
    w: list[mp.mpf]


class _InnerRule:
    """Inner (t) panels for one c. Unit panels are computed once per digit count; per z1 only
    the panels that contain a (moving) kink of g2 are split there and recomputed."""

    def __init__(self, f2: Scaled, g2: ScaledMP, c: mp.mpf, s: mp.mpf, t_max: mp.mpf,
                 dps: int) -> None:
        self.f2, self.g2, self.c, self.s, self.t_max, self.dps = f2, g2, c, s, t_max, dps
        self.kinks = g2.kinks_z()
        self.steep = abs(f2.a) * float(s) > 1.0
        grid = np.arange(-float(t_max), float(t_max) + 0.5, 1.0)
        self.grid = _merge(grid, [], -t_max, t_max)
        self.fixed: dict[int, list[_Panel]] = {}

    def _panel(self, lo: mp.mpf, hi: mp.mpf, digits: int) -> _Panel | None:
        width = hi - lo
        if width <= 0:
            return None
        need = digits + _log10_pdf_max(float(lo), float(hi)) + math.log10(float(width))
        if need <= 0:
            return None
        xs, wx = _legendre(_nodes_for(need), self.dps)
        mid = (lo + hi) / 2
        ts = [mid + width * x for x in xs]
        return _Panel(lo, hi, ts, [width * w * _pdf(t) for t, w in zip(ts, wx, strict=True)])

    def _build(self, breaks: list[mp.mpf], digits: int) -> list[_Panel]:
        panels = (self._panel(lo, hi, digits) for lo, hi in zip(breaks[:-1], breaks[1:],
                                                                 strict=True))
        return [p for p in panels if p is not None]

    def rule(self, z1: mp.mpf, digits: float) -> list[_Panel]:
        """Panels of the inner rule for the outer node z1, accurate to ``digits``."""
        key = max(1, math.ceil(digits))
        if self.steep:
            xs = np.arange(-FEATURE_RANGE, FEATURE_RANGE + 0.5, 1.0)
            moving = ((xs - self.f2.b) / self.f2.a - float(self.c * z1)) / float(self.s)
            grid = np.unique(np.concatenate([np.arange(-float(self.t_max),
                                                       float(self.t_max) + 0.5, 1.0), moving]))
            exact = [(k - self.c * z1) / self.s for k in self.kinks]
            return self._build(_merge(grid, exact, -self.t_max, self.t_max), key)
        if key not in self.fixed:
            self.fixed[key] = self._build(self.grid, key)
        panels = self.fixed[key]
        if not self.kinks:
            return panels
        cuts = sorted((k - self.c * z1) / self.s for k in self.kinks)
        out: list[_Panel] = []
        for p in panels:
            inside = [k for k in cuts if p.lo < k < p.hi]
            if inside:
                out += self._build([p.lo, *inside, p.hi], key)
            else:
                out.append(p)
        return out


def _kernel(act: Activation, q1: mp.mpf, q2: mp.mpf, c: mp.mpf, order: int, dps: int) -> mp.mpf:
    """d^order K/dc^order at one c, at ``dps`` working digits."""
    g1, g2 = ScaledMP(act, q1), ScaledMP(act, q2)
    direct = min(order, act.smooth_order)
    extra = order - direct
    if abs(c) == 1:
        if extra and c == 1 and q1 == q2 and act.square_integrable(order):
            direct = order
        elif extra:
            if c == 1 and q1 == q2:
                return mp.inf
            raise ValueError(
                f"the order-{order} c-derivative at |c| = 1 of the kinked activation "
                f"{act.name!r} with q1 != q2 is not supported; evaluate at |c| < 1"
            )
        sign = 1 if c > 0 else -1
        flipped = ScaledMP(act, q2)
        flipped.a, flipped.gamma = sign * flipped.a, flipped.gamma * sign**direct
        return expectation(lambda z: g1(z, direct) * flipped(z, direct), g1, (flipped,))
    s = mp.sqrt((1 - c) * (1 + c))
    weight = density_weight(extra, "mpmath") if extra else None
    f1, f2 = Scaled.of(act, float(q1)), Scaled.of(act, float(q2))
    drop = dps * math.log(10.0)
    lo, hi = envelope_range([f1], power=2, drop=drop)
    lo2, hi2 = envelope_range([f2], power=2, drop=drop)
    t_max = mp.mpf(max(-lo2, hi2))
    growth = _growth_digits(f1, lo, hi, direct) + _growth_digits(f2, lo2, hi2, direct)
    if weight is not None:  # |P_m(z1, z2, c)| <~ (|z|^2 / s^4)^m with |z| <= 40
        growth += extra * (3.2 + 4 * max(0.0, -math.log10(float(s))))
    kinks2 = g2.kinks_z()
    outer_exact = list(g1.kinks_z()) + ([k / c for k in kinks2] if c != 0 else [])
    outer = _merge(outer_breaks(f1, f2, float(c), float(s), lo, hi), outer_exact,
                   mp.mpf(lo), mp.mpf(hi))
    inner = _InnerRule(f2, g2, c, s, t_max, dps)
    digits = dps + growth
    pieces = g2.piece_functions(direct)
    scale2 = g2.gamma * g2.a**direct
    shift2 = g2.gamma * g2.delta if direct == 0 else 0
    a_s = g2.a * s

    def piece_at(x: mp.mpf) -> Callable:
        for p_lo, p_hi, fn in pieces:
            if (x < p_hi or p_hi == math.inf) and (p_lo == -math.inf or x >= p_lo):
                return fn
        return pieces[-1][2]

    def outer_fn(z1: mp.mpf) -> mp.mpf:
        panels = inner.rule(z1, digits + _log10_pdf_max(float(z1), float(z1)) + 3)
        base = g2.a * c * z1 + g2.b  # x = base + a s t
        parts = []
        for p in panels:
            fn = piece_at(base + a_s * (p.lo + p.hi) / 2)
            if weight is None:
                parts.append(mp.fdot(p.w, [fn(base + a_s * t) for t in p.t]))
            else:
                parts.append(mp.fdot(p.w, [fn(base + a_s * t) * weight(z1, c * z1 + s * t, c)
                                           for t in p.t]))
        acc = scale2 * mp.fsum(parts)
        if shift2:
            acc += shift2 * mp.fsum(mp.fsum(p.w) for p in panels)
        return g1(z1, direct) * _pdf(z1) * acc

    return _panels(outer, outer_fn, digits, dps)


def _vectorize(values, fn: Callable):
    arr = np.asarray(values, dtype=object)
    if arr.shape == ():
        return fn(arr.item())
    out = np.empty(arr.shape, dtype=object)
    for idx, v in np.ndenumerate(arr):
        out[idx] = fn(v)
    return out


def qmap(act: Activation, q, order: int, dps: int):
    """``d^order Q/dq^order`` at ``dps`` digits (see :func:`kernelshape.engine.maps.qmap`)."""
    dps = check_digits(act, dps)

    def one(qi: object) -> mp.mpf:
        with mp.workdps(dps + GUARD_DIGITS):
            qv = mp.mpf(qi)
            if not qv > 0:
                raise ValueError(f"q must be positive, got {qi!r}")
            g = ScaledMP(act, qv)
            if order == 0:
                value = expectation(lambda z: g(z) ** 2, g)
            else:
                poly = q_derivative_weight(order, "mpmath")
                value = expectation(lambda z: g(z) ** 2 * poly(z), g) / qv**order
        with mp.workdps(dps):
            return +value

    return _vectorize(q, one)


def cmap(act: Activation, c, q1: float, q2: float, order: int, dps: int):
    """``d^order C/dc^order`` at ``dps`` digits (see :func:`kernelshape.engine.maps.cmap`)."""
    dps = check_digits(act, dps)
    with mp.workdps(dps + GUARD_DIGITS):
        mq1, mq2 = mp.mpf(q1), mp.mpf(q2)
        norm = mp.sqrt(qmap(act, mq1, 0, dps) * qmap(act, mq2, 0, dps))

    def one(ci: object) -> mp.mpf:
        with mp.workdps(dps + GUARD_DIGITS):
            cv = mp.mpf(ci)
            if abs(cv) > 1:
                raise ValueError(f"c values must lie in [-1, 1], got {ci!r}")
            value = _kernel(act, mq1, mq2, cv, order, dps + GUARD_DIGITS) / norm
        with mp.workdps(dps):
            return +value

    return _vectorize(c, one)


def local_summary(act: Activation, dps: int) -> dict[str, mp.mpf]:
    """Local summary at ``dps`` digits (see :func:`kernelshape.engine.maps.local_summary`)."""
    dps = check_digits(act, dps)
    with mp.workdps(dps + GUARD_DIGITS):
        g = ScaledMP(act, mp.mpf(1))
        q_value = expectation(lambda z: g(z) ** 2, g)
        if q_value == 0:
            raise ValueError(f"{act!r} is identically zero in distribution: E[phi(z)^2] = 0")
        mean = expectation(g, g)
        mean_slope = expectation(lambda z: g(z) * z, g)
        q_slope = expectation(lambda z: g(z) ** 2 * (z * z - 1), g) / 2
        slope_sq = expectation(lambda z: g(z, 1) ** 2, g) if act.square_integrable(1) else mp.inf
        curv_sq = expectation(lambda z: g(z, 2) ** 2, g) if act.square_integrable(2) else mp.inf
        values = {
            "q_value": q_value,
            "q_slope": q_slope,
            "c_value_0": mean**2 / q_value,
            "c_slope_0": mean_slope**2 / q_value,
            "c_slope_1": slope_sq / q_value,
            "c_curv_1": curv_sq / q_value,
        }
    with mp.workdps(dps):  # round to N digits here (outside, +v would round to the caller's)
        return {k: +v for k, v in values.items()}
