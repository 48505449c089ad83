"""Exact dual kernels ``K(q1, q2, c) = E[phi(a1 z1 + b) phi(a2 z2 + b)]`` where they exist.

``a_i = alpha * sqrt(q_i)``, ``corr(z1, z2) = c``; output shift/scale are applied by the caller.
Each family gives a sympy expression in (c, a1, a2, b) so that c-derivatives of any order
are exact; the expressions are lambdified once per (family, order).

| family | phi | condition | formula |
|---|---|---|---|
| abrelu | A min(x,0) + B max(x,0): relu, leaky_relu, abs | b = 0 | arc-cosine kernels |
| step, sign | Heaviside, sign | b = 0 | 1/2 - arccos(c)/(2 pi) ... , (2/pi) arcsin(c) |
| erf | erf | b = 0 | (2/pi) arcsin(2 a1 a2 c / sqrt((1+2a1^2)(1+2a2^2))) |
| sin, cos, exp, gaussian | | any b | Gaussian integrals of exponentials |
| gelu_exact | x Phi(x) | b = 0, alpha > 0 | Tsuchida et al. 2020 |
| polynomial | any polynomial in x | any b | exact Hermite expansion (Mehler) |
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import numpy as np
import sympy as sp

from kernelshape.engine.activations import Activation
from kernelshape.engine.symbolic import X

C, A1, A2, B = sp.symbols("c a1 a2 b", real=True)


def _abrelu(neg: sp.Expr, pos: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """Kernel/mean of A*min(x,0)+B*max(x,0) at x = a z; a1, a2 > 0 assumed."""
    theta = sp.acos(C)
    k = A1 * A2 * (
        (neg - pos) ** 2 / (2 * sp.pi) * sp.sqrt(1 - C**2)
        + ((neg**2 + pos**2) / 2 - (neg - pos) ** 2 * theta / (2 * sp.pi)) * C
    )
    mean = (pos - neg) * A1 / sp.sqrt(2 * sp.pi)
    return k, mean


def _base_key(act: Activation) -> tuple:
    """What identifies the untransformed activation (cheap: no new objects)."""
    return (act.name, tuple(sorted(act.params.items())), act.builtin, act.expr)


def family(act: Activation) -> str | None:
    """The closed-form family of the untransformed activation (None: no closed form)."""
    key = _base_key(act)
    if key not in _FAMILIES:
        _FAMILIES[key] = _base_family(act)
    return _FAMILIES[key]


_FAMILIES: dict[tuple, str | None] = {}


def _base_family(act: Activation) -> str | None:
    if act.name in ("relu", "leaky_relu", "abs", "step", "sign", "erf", "sin", "cos", "exp",
                    "gaussian", "gelu_exact") and act.builtin:
        return act.name
    if act.expr.is_polynomial(X):
        return "polynomial"
    return None


def symbolic_kernel(act: Activation, name: str, flip: bool) -> tuple[sp.Expr, sp.Expr]:
    """(K, E[phi(a1 z + b)]) for a built-in family; ``flip`` means alpha < 0."""
    if name in ("relu", "leaky_relu", "abs"):
        slope = float(act.params.get("negative_slope", 0))
        neg = {"relu": 0, "abs": -1}.get(name, sp.Rational(repr(slope)))
        neg, pos = sp.sympify(neg), sp.Integer(1)
        if flip:  # f(-|alpha| x): A' = -B, B' = -A in terms of |alpha|
            neg, pos = -pos, -neg
        return _abrelu(neg, pos)
    if name == "step":
        return (sp.pi - sp.acos(C)) / (2 * sp.pi), sp.Rational(1, 2)
    if name == "sign":
        return 2 / sp.pi * sp.asin(C), sp.Integer(0)
    if name == "erf":
        return (2 / sp.pi * sp.asin(2 * A1 * A2 * C / sp.sqrt((1 + 2 * A1**2) * (1 + 2 * A2**2))),
                sp.Integer(0))
    if name in ("sin", "cos"):  # the formulas, for reference; evaluated by _trig_kernel
        r = A1 * A2 * C
        even = sp.sinh(r) + sp.sin(B) ** 2 * sp.exp(-r) if name == "sin" else \
            sp.cosh(r) - sp.sin(B) ** 2 * sp.exp(-r)
        k = sp.exp(-(A1**2 + A2**2) / 2) * even
        trig = sp.sin if name == "sin" else sp.cos
        return k, trig(B) * sp.exp(-(A1**2) / 2)
    if name == "exp":
        return (sp.exp(2 * B + (A1**2 + A2**2) / 2 + A1 * A2 * C),
                sp.exp(B + A1**2 / 2))
    if name == "gaussian":
        det = (1 + A1**2) * (1 + A2**2) - A1**2 * A2**2 * C**2
        quad = B**2 * (2 + A1**2 + A2**2 - 2 * A1 * A2 * C) / det
        return sp.exp(-quad / 2) / sp.sqrt(det), sp.exp(-(B**2) / (2 * (1 + A1**2))) / sp.sqrt(
            1 + A1**2)
    if name == "gelu_exact":
        rho = A1 * A2 * C
        q1, q2 = A1**2, A2**2
        delta = sp.sqrt((1 + q1) * (1 + q2) - rho**2)
        k = rho / 4 + ((rho**2 + q1 * q2 * delta**2) / ((1 + q1) * (1 + q2) * delta)
                       + rho * sp.atan2(rho, delta)) / (2 * sp.pi)
        return k, A1**2 / sp.sqrt(2 * sp.pi * (1 + A1**2))
    raise KeyError(name)


_COMPILED: dict[tuple, tuple[Callable, Callable]] = {}


def _compiled(act: Activation, name: str, flip: bool, order: int) -> tuple[Callable, Callable]:
    """Lambdified ``d^order K/dc^order`` and mean, cached per *untransformed* activation."""
    key = (_base_key(act), name, flip, order)
    if key not in _COMPILED:
        k, mean = symbolic_kernel(act, name, flip)
        _COMPILED[key] = (sp.lambdify((C, A1, A2, B), sp.diff(k, C, order), "numpy"),
                          sp.lambdify((A1, B), mean, "numpy"))
    return _COMPILED[key]


def supports(act: Activation) -> bool:
    """Whether the (transformed) activation has an exact kernel here."""
    name = family(act)
    if name is None:
        return False
    t = act.transform
    if name in ("sin", "cos", "exp", "gaussian", "polynomial"):
        return True
    if t.input_scale == 0.0 or t.input_shift != 0.0:
        return False
    return not (name == "gelu_exact" and t.input_scale < 0)


@cache
def _monomials(expr: sp.Expr) -> np.polynomial.Polynomial:
    """phi(x) = sum_j p_j x^j for a polynomial activation."""
    poly = sp.Poly(sp.expand(expr), X)
    return np.polynomial.Polynomial([float(v) for v in reversed(poly.all_coeffs())])


def _hermite_coefficients(act: Activation, a: float, b: float) -> np.ndarray:
    """Coefficients h_k of phi(a z + b) = sum_k h_k He_k(z) (exact for polynomials)."""
    composed = _monomials(act.expr)(np.polynomial.Polynomial([b, a]))
    return np.polynomial.hermite_e.poly2herme(composed.coef)


def _trig_kernel(name: str, c: np.ndarray, a1: float, a2: float, b: float, order: int
                 ) -> np.ndarray:
    """``d^order/dc^order`` of ``E[sin(a1 z1 + b) sin(a2 z2 + b)]`` (or cos), evaluated
    without overflow or cancellation at any scale.

    With ``r = a1 a2 c``, ``s = (a1^2 + a2^2)/2`` (so ``|r| <= s``) and ``m = sin(b)^2``:
    sin: ``K = e^-s sinh r + m e^-(r+s)``, cos: ``K = e^-s cosh r - m e^-(r+s)``, and
    ``d^n/dc^n`` multiplies by ``(a1 a2)^n`` and turns sinh/cosh into each other. The
    hyperbolic parts are ``e^(|r|-s) (1 -+ e^-2|r|) / 2`` (with ``-expm1``: no cancellation at
    small r, where sin's ``Q(q) = (1 - e^-2q)/2``)."""
    r, s, m = a1 * a2 * c, 0.5 * (a1 * a1 + a2 * a2), math.sin(b) ** 2
    if not math.isfinite(s):
        raise ValueError(f"input scale {max(abs(a1), abs(a2)):.3g} is too large for float64")
    big = np.exp(np.abs(r) - s) * 0.5
    sinh_part = np.sign(r) * big * -np.expm1(-2.0 * np.abs(r))
    cosh_part = big * (1.0 + np.exp(-2.0 * np.abs(r)))
    odd = order % 2 == 1
    hyper = (cosh_part if odd else sinh_part) if name == "sin" else \
        (sinh_part if odd else cosh_part)
    sign = 1.0 if name == "sin" else -1.0
    return (a1 * a2) ** order * (hyper + sign * (-1.0) ** order * m * np.exp(-r - s))


def oscillatory(act: Activation) -> bool:
    """sin / cos: their local maps come from the closed forms at every scale (quadrature
    would need ever more panels as the input scale grows)."""
    return family(act) in ("sin", "cos")


def trig_q_slope(act: Activation, q: float) -> float:
    """``Q'(q)`` of a transformed sin / cos: with ``a^2 = alpha^2 q``, ``Q = (1 -+ cos(2b)
    e^(-2a^2))/2`` shifted and scaled, so ``Q'(q) = +-alpha^2 cos(2b) e^(-2a^2) gamma^2``
    (the output shift's cross term ``2 delta E[phi]`` adds ``d/dq`` of the mean)."""
    t = act.transform
    a2 = t.input_scale**2 * q
    sign = 1.0 if family(act) == "sin" else -1.0
    b = t.input_shift
    trig = math.sin(b) if family(act) == "sin" else math.cos(b)
    # E[phi] = trig(b) e^(-a^2/2): d/dq = -alpha^2/2 trig(b) e^(-a^2/2)
    mean_slope = -0.5 * t.input_scale**2 * trig * math.exp(-0.5 * a2)
    return t.output_scale**2 * (sign * t.input_scale**2 * math.cos(2 * b) * math.exp(-2 * a2)
                                + 2 * t.output_shift * mean_slope)


def kernel(act: Activation, q1: float, q2: float, c: np.ndarray, order: int) -> np.ndarray:
    """d^order/dc^order of E[phi_hat(sqrt(q1) z1) phi_hat(sqrt(q2) z2)] (output shift included)."""
    t = act.transform
    name = family(act)
    a1, a2 = t.input_scale * math.sqrt(q1), t.input_scale * math.sqrt(q2)
    g2, d = t.output_scale**2, t.output_shift
    c = np.asarray(c, dtype=float)
    if name == "polynomial":
        h1 = _hermite_coefficients(act, a1, t.input_shift)
        h2 = _hermite_coefficients(act, a2, t.input_shift)
        n = min(h1.size, h2.size)
        k = np.arange(n)
        coef = h1[:n] * h2[:n] * np.array([math.factorial(int(i)) for i in k], dtype=float)
        coef[0] += d * (h1[0] + h2[0]) + d * d
        deriv = np.polynomial.polynomial.polyder(coef, order) if order else coef
        return g2 * np.polynomial.polynomial.polyval(c, deriv)
    flip = t.input_scale < 0 and name in ("relu", "leaky_relu", "abs")
    ka, kb = (abs(a1), abs(a2)) if name in ("relu", "leaky_relu", "abs", "erf") else (a1, a2)
    if name in ("step", "sign") and t.input_scale < 0:
        ka, kb = a1, a2  # step(-x)step(-y) has the same law; sign is odd: product unchanged
    k_fn, mean_fn = _compiled(act, name, flip, order)
    with np.errstate(all="ignore"):
        if name in ("sin", "cos"):
            value = _trig_kernel(name, c, ka, kb, t.input_shift, order)
        else:
            value = np.asarray(k_fn(c, ka, kb, t.input_shift), dtype=float) * np.ones_like(c)
        if name in ("step",) and t.input_scale < 0:
            mean1 = mean2 = 0.5
        else:
            mean1, mean2 = float(mean_fn(ka, t.input_shift)), float(mean_fn(kb, t.input_shift))
        if order == 0:
            value = value + d * (mean1 + mean2) + d * d
        value = g2 * value
    if np.any(np.isnan(value)) or (order == 0 and not np.all(np.isfinite(value))):
        raise ValueError(
            f"the closed-form kernel of {act.name} overflows float64 at input scale "
            f"{max(abs(a1), abs(a2)):.4g} (its second moment exceeds 1e308 or the formula "
            "loses all digits); use a smaller input scale / q, or dps=N")
    return value
