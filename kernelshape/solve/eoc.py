"""Edge of chaos (Poole et al. 2016; Schoenholz et al. 2017): the baseline initialization.

A chain ``z = W h + b``, ``h = phi(z)`` with ``W ~ N(0, s_w^2 / fan_in)``, ``b ~ N(0, s_b^2)``
has the pre-activation recursion ``q_z = s_w^2 Q_phi(q_z) + s_b^2``; at the edge of chaos its
fixed point ``q*`` has ``chi_1 = s_w^2 E[phi'(sqrt(q*) z)^2] = 1``. :func:`edge_of_chaos` solves
for ``(s_w^2, q*)`` given ``s_b^2``; :func:`eoc_chain_states` propagates (q, c) through such a
chain (the biases make it a different kernel map than the topology's zero-bias layers).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq

from kernelshape.engine.activations import Activation
from kernelshape.engine.maps import cmap, qmap
from kernelshape.engine.quadrature import Scaled, expect_1d
from kernelshape.solve.options import InfeasibleError

EOC_TOLERANCE = 1e-10  # on the re-evaluated fixed-point and chi_1 equations


def edge_of_chaos(act: Activation, bias_variance: float = 0.0) -> dict[str, float]:
    """Edge of chaos: q* = sigma_w^2 E[phi(sqrt(q*) z)^2] + sigma_b^2 with chi_1 = 1."""

    def moments(q: float) -> tuple[float, float]:
        """(E[phi(sqrt(q) z)^2], E[phi'(sqrt(q) z)^2]); g' = sqrt(q) phi'."""
        g = Scaled.of(act, q)
        return expect_1d([(g, 0), (g, 0)]), expect_1d([(g, 1), (g, 1)]) / q

    def gap(log_q: float) -> float:
        q = math.exp(log_q)
        second, slope = moments(q)
        return second / slope + bias_variance - q

    grid = np.linspace(math.log(1e-6), math.log(1e3), 60)
    values = np.array([gap(v) for v in grid])
    if np.all(np.abs(values) <= 1e-10 * np.exp(grid)):  # positively homogeneous (ReLU family)
        q_star = 1.0 if bias_variance == 0 else math.nan
        if math.isnan(q_star):
            raise InfeasibleError(f"{act.name}: positively homogeneous activations have an EOC "
                                  "only with bias_variance = 0")
    else:
        sign_change = np.nonzero(np.sign(values[:-1]) != np.sign(values[1:]))[0]
        if sign_change.size:
            i = sign_change[-1]
            q_star = math.exp(brentq(gap, grid[i], grid[i + 1], xtol=1e-14))
        elif bias_variance == 0:
            q_star = 0.0
        else:
            raise InfeasibleError(f"{act.name}: no edge-of-chaos fixed point with "
                                  f"bias_variance = {bias_variance!r}")
    if q_star == 0.0:
        phi0 = float(act(np.array([0.0]))[0])
        if phi0 != 0.0:
            raise InfeasibleError(
                f"{act.name}: no edge of chaos with bias_variance = 0: the chi_1 = 1 curve "
                f"meets no fixed point for q in [1e-6, 1e3], and q* = 0 is not one because "
                f"phi(0) = {phi0:.6g} != 0; try a positive bias_variance")
        d1 = float(act.derivative(np.array([0.0]), 1)[0])
        if d1 == 0.0:
            raise InfeasibleError(f"{act.name}: phi'(0) = 0, so no edge of chaos at q* = 0")
        weight = 1.0 / d1**2
    else:
        weight = 1.0 / moments(q_star)[1]
    out = {"weight_variance": weight, "bias_variance": float(bias_variance),
           "q_fixed_point": q_star}
    worst = max(abs(v) for v in eoc_residuals(act, out).values())
    if not worst <= EOC_TOLERANCE:
        raise InfeasibleError(f"{act.name}: the edge-of-chaos point found does not satisfy its "
                              f"equations (residual {worst:.2e}); please report this case")
    return out


def eoc_residuals(act: Activation, eoc: dict[str, float]) -> dict[str, float]:
    """The EOC equations at a recorded point, re-evaluated: ``fixed_point = (s_w^2 Q(q*) +
    s_b^2 - q*) / max(1, q*)`` and ``chi_1 = s_w^2 E[phi'(sqrt(q*) z)^2] - 1`` (at q* = 0:
    ``s_w^2 phi(0)^2 + s_b^2`` and ``s_w^2 phi'(0)^2 - 1``)."""
    sw2, sb2, q = eoc["weight_variance"], eoc["bias_variance"], eoc["q_fixed_point"]
    if q == 0.0:
        phi0 = float(act(np.array([0.0]))[0])
        d1 = float(act.derivative(np.array([0.0]), 1)[0])
        return {"fixed_point": sw2 * phi0**2 + sb2, "chi_1": sw2 * d1**2 - 1.0}
    g = Scaled.of(act, q)
    second, slope = expect_1d([(g, 0), (g, 0)]), expect_1d([(g, 1), (g, 1)]) / q
    return {"fixed_point": (sw2 * second + sb2 - q) / max(1.0, q), "chi_1": sw2 * slope - 1.0}


def eoc_chain_states(act: Activation, depth: int, weight_variance: float, bias_variance: float,
                     c: np.ndarray, q_pre: float) -> list[tuple[float, np.ndarray]]:
    """(q, c) of the post-activations of a ``depth``-layer chain with weight variance
    ``s_w^2`` and bias variance ``s_b^2``, for an input pair whose first pre-activations have
    second moment ``q_pre`` (e.g. the fixed point ``q*``) and cosine ``c`` before the bias:

    ``q_z = s_w^2 q_h + s_b^2``, ``kappa_z = s_w^2 kappa_h + s_b^2``, ``kappa_h' = K(c_z; q_z,
    q_z)``, with the input pair taken so that ``c_z1 = (s_w^2 q_x c + s_b^2) / q_pre``,
    ``q_x = (q_pre - s_b^2) / s_w^2``. Returns one ``(q_h, c_h)`` per layer."""
    sw2, sb2 = float(weight_variance), float(bias_variance)
    q_x = (q_pre - sb2) / sw2
    c = np.asarray(c, dtype=float)
    q_z, c_z = q_pre, np.clip((sw2 * q_x * c + sb2) / q_pre, -1.0, 1.0)
    out = []
    for _ in range(depth):
        q_h = float(qmap(act, q_z))
        c_h = np.asarray(cmap(act, c_z, q_z, q_z), dtype=float)
        out.append((q_h, c_h))
        q_z = sw2 * q_h + sb2
        c_z = np.clip((sw2 * q_h * c_h + sb2) / q_z, -1.0, 1.0)
    return out
