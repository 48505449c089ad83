"""Independent re-evaluation of local conditions (the certificate of a solution).

The solver finds roots with Gauss–Hermite search and panel Gauss–Legendre polishing; the
certificate recomputes every condition by a different route:

* ``"float"`` (default): double-exponential (tanh-sinh family) quadrature with step halving
  on each smooth piece between kinks, with the formulas of
  :func:`kernelshape.engine.maps.local_summary`;
* ``"mp"``: the mpmath route at 30 digits (:func:`kernelshape.engine.precise.local_summary`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from kernelshape.engine.activations import Activation
from kernelshape.engine.precise import local_summary

MP_DIGITS = 30
BREAK_RANGE = 40.0  # |z| beyond which a break does not help: the Gaussian weight is < 1e-347
ROUNDING_FLOOR = 1e-13
DE_STEPS = (1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128, 1 / 256, 1 / 512)


def _de_rule(lo: float, hi: float, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Double-exponential nodes/weights on [lo, hi] (tanh-sinh, exp-sinh or sinh-sinh)."""
    half_pi = 0.5 * math.pi
    if math.isinf(lo) and math.isinf(hi):
        t = np.arange(-3.2, 3.2 + h / 2, h)
        x = np.sinh(half_pi * np.sinh(t))
        w = half_pi * np.cosh(t) * np.cosh(half_pi * np.sinh(t))
    elif math.isinf(hi) or math.isinf(lo):
        t = np.arange(-4.5, 2.0 + h / 2, h)
        u = np.exp(half_pi * np.sinh(t))
        w = half_pi * np.cosh(t) * u
        x = lo + u if math.isinf(hi) else hi - u
    else:
        t = np.arange(-3.5, 3.5 + h / 2, h)
        y = np.tanh(half_pi * np.sinh(t))
        x = 0.5 * (lo + hi) + 0.5 * (hi - lo) * y
        w = 0.5 * (hi - lo) * half_pi * np.cosh(t) / np.cosh(half_pi * np.sinh(t)) ** 2
    return x, w * h


def _piecewise_expect(fn: Callable[[np.ndarray], np.ndarray], breaks: list[float]) -> float:
    """E[fn(z)] for z ~ N(0,1) by double-exponential quadrature on each piece between
    ``breaks`` (those inside ``|z| < BREAK_RANGE``, where the Gaussian weight matters, and
    always 0), halving the step until two successive estimates agree to ~1e-16 (or, at the
    finest step, to ``ROUNDING_FLOOR``: a tenth of the tolerance the certificate checks);
    ValueError when they never do."""
    inside = {b for b in breaks if abs(b) < BREAK_RANGE} | {0.0}
    bounds = [-math.inf, *sorted(inside), math.inf]
    total = 0.0
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        previous = None
        for h in DE_STEPS:
            x, w = _de_rule(lo, hi, h)
            with np.errstate(all="ignore"):
                values = fn(x) * np.exp(-0.5 * x * x)
            value = float(np.sum(np.where(w > 0, w * values, 0.0)))
            if previous is not None and abs(value - previous) <= 1e-16 + 1e-15 * abs(value):
                break
            previous = value
        else:  # rounding noise (a near-linear transform cancels phi(b) + delta) sets a floor
            if abs(value - previous) <= ROUNDING_FLOOR * max(1.0, abs(value)):
                total += value
                continue
            raise ValueError(f"the certificate's double-exponential quadrature did not converge "
                             f"on [{lo:g}, {hi:g}] (last two steps differ by "
                             f"{abs(value - previous):.2g})")
        total += value
    return total / math.sqrt(2.0 * math.pi)


def de_summary(act: Activation) -> dict[str, float]:
    """``local_summary`` keys recomputed by double-exponential quadrature split at the kinks
    (and at the points where the activation's input crosses -1, 0, 1), independent of the
    solver's Gauss–Hermite / Gauss–Legendre rules."""
    t = act.transform
    points = sorted(set(act.kinks) | {-1.0, 0.0, 1.0})
    breaks = [] if t.input_scale == 0 else [(k - t.input_shift) / t.input_scale for k in points]

    def g(order: int) -> Callable[[np.ndarray], np.ndarray]:
        return lambda z: act.derivative(z, order)

    phi = g(0)
    q_value = _piecewise_expect(lambda z: phi(z) ** 2, breaks)
    mean = _piecewise_expect(phi, breaks)
    mean_slope = _piecewise_expect(lambda z: phi(z) * z, breaks)
    q_slope = _piecewise_expect(lambda z: phi(z) ** 2 * (z * z - 1.0), breaks) / 2.0
    slope = curv = math.inf
    if act.smooth_order >= 1:
        d1 = g(1)
        slope = _piecewise_expect(lambda z: d1(z) ** 2, breaks)
    if act.smooth_order >= 2:
        d2 = g(2)
        curv = _piecewise_expect(lambda z: d2(z) ** 2, breaks)
    return {"q_value": q_value, "q_slope": q_slope, "c_value_0": mean**2 / q_value,
            "c_slope_0": mean_slope**2 / q_value, "c_slope_1": slope / q_value,
            "c_curv_1": curv / q_value}


def summary(act: Activation, route: str) -> dict[str, float]:
    """Local summary by the certificate ``route`` ('float' or 'mp')."""
    if route == "float":
        return de_summary(act)
    if route == "mp":

        return {k: float(v) for k, v in local_summary(act, dps=MP_DIGITS).items()}
    raise ValueError(f"certify must be 'float' or 'mp', got {route!r}")


def residuals(act: Activation, targets: dict[str, float], route: str) -> dict[str, float]:
    """value - target for each local condition, by the independent route."""
    values = summary(act, route)
    return {key: values[key] - target for key, target in targets.items()}
