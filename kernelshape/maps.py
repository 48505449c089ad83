"""Q maps, C maps and local summaries of (transformed) activations.

With ``z ~ N(0,1)``, ``(z1, z2)`` standard normals with correlation ``c`` and
``phi_hat`` the transformed activation:

* ``Q(q) = E[phi_hat(sqrt(q) z)^2]``
* ``K(c; q1, q2) = E[phi_hat(sqrt(q1) z1) phi_hat(sqrt(q2) z2)]``
* ``C(c; q1, q2) = K(c; q1, q2) / sqrt(Q(q1) Q(q2))``
* Price: ``d^k K/dc^k = E[g1^(k)(z1) g2^(k)(z2)]`` with ``g_i(z) = phi_hat(sqrt(q_i) z)``;
  past an activation's smoothness the remaining ``m`` derivatives act on the Gaussian density
  (``d^m p_c/dc^m = p_c P_m``), so kinks and jumps never need Dirac terms.

Routes: ``closed`` (exact formulas, :mod:`kernelshape.closed_forms`), ``quadrature`` (float64
panels split at kinks, :mod:`kernelshape.quadrature`; many-point C maps go through a cached
Chebyshev interpolant in ``theta = arccos c`` that is accepted only once its coefficients
have converged to float64 level) and ``mp`` (``dps=N``, :mod:`kernelshape.precise`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.polynomial import chebyshev

from kernelshape import closed_forms
from kernelshape.activations import Activation, activation
from kernelshape.quadrature import Scaled, expect_1d, expect_2d
from kernelshape.symbolic import q_derivative_weight

SUMMARY_KEYS = ("q_value", "q_slope", "c_value_0", "c_slope_0", "c_slope_1", "c_curv_1")
FAST_PATH_MIN_POINTS = 33
CHEB_DEGREES = (32, 64, 128, 256, 512)
CHEB_TOLERANCE = 1e-15


def _as_activation(act: Activation | str) -> Activation:
    return act if isinstance(act, Activation) else activation(act)


def _check_q(name: str, q: float) -> float:
    q = float(q)
    if not math.isfinite(q) or q <= 0.0:
        raise ValueError(f"{name} must be a finite positive number, got {q!r}")
    return q


def _check_order(order: int) -> int:
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or order < 0:
        raise ValueError(f"order must be a nonnegative integer, got {order!r}")
    return int(order)


def _check_c(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=float)
    if not np.all(np.isfinite(c)):
        raise ValueError("c values must be finite numbers in [-1, 1]")
    if np.any(np.abs(c) > 1.0 + 1e-12):
        bad = c[np.abs(c) > 1.0 + 1e-12].flat[0]
        raise ValueError(f"c values must lie in [-1, 1], got {bad!r}")
    return np.clip(c, -1.0, 1.0)


def route(act: Activation | str) -> str:
    """Which float64 route evaluates this activation's maps: 'closed' or 'quadrature'."""
    return "closed" if closed_forms.supports(_as_activation(act)) else "quadrature"


# --- Q map -----------------------------------------------------------------------------------

@lru_cache(maxsize=4096)
def _q_value(act: Activation, q: float) -> float:
    if closed_forms.supports(act):
        return float(closed_forms.kernel(act, q, q, np.array(1.0), 0))
    g = Scaled.of(act, q)
    return expect_1d([(g, 0), (g, 0)])


def qmap(act: Activation | str, q, order: int = 0, dps: int | None = None):
    """``d^order/dq^order Q(q)``, ``Q(q) = E[phi_hat(sqrt(q) z)^2]``; vectorized over q.

    Derivatives use ``dQ/dq = E[phi_hat(sqrt(q) z)^2 (z^2 - 1)] / (2q)`` (differentiating the
    Gaussian density), so kinks and jumps need no special treatment.
    """
    act = _as_activation(act)
    order = _check_order(order)
    if dps is not None:
        from kernelshape import precise

        return precise.qmap(act, q, order, dps)
    qs = np.asarray(q, dtype=float)
    out = np.empty(qs.shape)
    for i, qi in np.ndenumerate(qs):
        qi = _check_q("q", qi)
        out[i] = _q_value(act, qi) if order == 0 else _q_derivative(act, qi, order)
    return out if out.shape else float(out)


def _q_derivative(act: Activation, q: float, order: int) -> float:
    weight = q_derivative_weight(order)
    g = Scaled.of(act, q)
    return expect_1d([(g, 0), (g, 0)], weight=weight) / q**order


# --- C map -----------------------------------------------------------------------------------

def _kernel_point(act: Activation, q1: float, q2: float, c: float, order: int) -> float:
    """d^order K/dc^order at one c on the quadrature route."""
    g1, g2 = Scaled.of(act, q1), Scaled.of(act, q2)
    smooth = act.smooth_order
    direct = min(order, smooth)
    extra = order - direct
    if abs(c) == 1.0:
        if extra == 0:
            sign = 1.0 if c > 0 else -1.0
            flipped = Scaled(g2.act, sign * g2.a, g2.b, g2.gamma * sign**direct, g2.delta)
            return expect_1d([(g1, direct), (flipped, direct)])
        if c == 1.0 and q1 == q2:
            return math.inf
        raise ValueError(
            f"the order-{order} c-derivative at c = {c:+g} involves Dirac terms of the kinked "
            f"activation {act.name!r} that are not supported at |c| = 1 with q1 != q2; "
            "evaluate at |c| < 1"
        )
    return expect_2d(g1, g2, c, direct, extra)


@lru_cache(maxsize=512)
def _chebyshev(act: Activation, q1: float, q2: float, order: int):
    """Chebyshev interpolant of theta -> K^(order)(cos theta), or None if not converged."""
    for degree in CHEB_DEGREES:
        nodes = np.cos(np.pi * (np.arange(degree + 1) + 0.5) / (degree + 1))
        theta = 0.5 * np.pi * (nodes + 1.0)
        values = np.array([_kernel_point(act, q1, q2, math.cos(t), order) for t in theta])
        if not np.all(np.isfinite(values)):
            return None
        coef = chebyshev.chebfit(nodes, values, degree)
        scale = max(np.max(np.abs(values)), 1e-300)
        if np.max(np.abs(coef[-4:])) <= CHEB_TOLERANCE * scale * degree:
            return coef
    return None


def _kernel(act: Activation, c: np.ndarray, q1: float, q2: float, order: int) -> np.ndarray:
    if closed_forms.supports(act):
        return closed_forms.kernel(act, q1, q2, c, order)
    interior = np.abs(c) < 1.0
    out = np.empty(c.shape)
    if c.size >= FAST_PATH_MIN_POINTS and order <= act.smooth_order:
        coef = _chebyshev(act, q1, q2, order)
        if coef is not None:
            out[interior] = chebyshev.chebval(2.0 * np.arccos(c[interior]) / np.pi - 1.0, coef)
            for idx in zip(*np.nonzero(~interior), strict=True):
                out[idx] = _kernel_point(act, q1, q2, float(c[idx]), order)
            return out
    for idx, ci in np.ndenumerate(c):
        out[idx] = _kernel_point(act, q1, q2, float(ci), order)
    return out


def cmap(act: Activation | str, c, q1: float = 1.0, q2: float = 1.0, order: int = 0,
         dps: int | None = None):
    """``d^order/dc^order C(c; q1, q2)`` with ``C = K / sqrt(Q(q1) Q(q2))``; vectorized over c."""
    act = _as_activation(act)
    order = _check_order(order)
    q1, q2 = _check_q("q1", q1), _check_q("q2", q2)
    if dps is not None:
        from kernelshape import precise

        return precise.cmap(act, c, q1, q2, order, dps)
    cs = _check_c(c)
    norm = math.sqrt(_q_value(act, q1) * _q_value(act, q2))
    if norm == 0.0:
        raise ValueError(f"{act!r} is identically zero in distribution: its C map is undefined")
    out = _kernel(act, cs.reshape(-1), q1, q2, order).reshape(cs.shape) / norm
    return out if out.shape else float(out)


# --- local summary ---------------------------------------------------------------------------

@lru_cache(maxsize=4096)
def _summary(act: Activation) -> tuple[float, ...]:
    g = Scaled.of(act, 1.0)
    q_value = _q_value(act, 1.0)
    mean = expect_1d([(g, 0)])
    mean_slope = expect_1d([(g, 0)], weight=lambda z: z)  # E[phi'] = E[phi z] (Stein)
    q_slope = _q_derivative(act, 1.0, 1)
    slope_sq = expect_1d([(g, 1), (g, 1)]) if act.smooth_order >= 1 else math.inf
    curv_sq = expect_1d([(g, 2), (g, 2)]) if act.smooth_order >= 2 else math.inf
    return (q_value, q_slope, mean**2 / q_value, mean_slope**2 / q_value,
            slope_sq / q_value, curv_sq / q_value)


def local_summary(act: Activation | str, dps: int | None = None) -> dict[str, float]:
    """Local map quantities at q = 1.

    ``q_value = E[phi^2]``, ``q_slope = Q'(1) = E[phi^2 (z^2-1)]/2 = E[phi phi' z]``,
    ``c_value_0 = E[phi]^2/E[phi^2]``, ``c_slope_0 = E[phi']^2/E[phi^2]``,
    ``c_slope_1 = E[phi'^2]/E[phi^2]``, ``c_curv_1 = E[phi''^2]/E[phi^2]`` (inf at kinks).
    """
    act = _as_activation(act)
    if dps is not None:
        from kernelshape import precise

        return precise.local_summary(act, dps)
    values = _summary(act)
    if values[0] == 0.0:
        raise ValueError(f"{act!r} is identically zero in distribution: E[phi(z)^2] = 0")
    return dict(zip(SUMMARY_KEYS, values, strict=True))
