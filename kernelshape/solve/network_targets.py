"""From a network-level target to the local target every nonlinear layer must meet.

All three come from the network's subnetwork maximizing function ``M_{f,r}(x)``:

* DKS: ``xi`` with ``max_slope(xi) = zeta`` (``max_slope(xi) = M(1, y -> xi y)``, increasing);
* TAT smooth: ``tau_local`` with ``max_curvature(tau_local) = tau`` (``M(0, y -> y + t)``);
* TAT Leaky-ReLU: slope ``a`` with ``M(0, C_a) = eta``, ``C_a`` the Leaky-ReLU C map,
  decreasing in ``a`` from ReLU (a = 0) to the identity (a = 1).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq

from kernelshape.solve.options import InfeasibleError, check_targets


def leaky_relu_cmap(c: np.ndarray | float, slope: float) -> np.ndarray | float:
    """``C_a(c) = c + (1-a)^2/(pi (1+a^2)) (sqrt(1-c^2) - c arccos c)`` (exact, any q).

    Scalars (what hand-written subnetwork functions pass) take a float fast path."""
    k = (1.0 - slope) ** 2 / (math.pi * (1.0 + slope**2))
    if np.ndim(c) == 0:
        x = min(1.0, max(-1.0, float(c)))
        return x + k * (math.sqrt(1.0 - x * x) - x * math.acos(x))
    c = np.clip(np.asarray(c, dtype=float), -1.0, 1.0)
    return c + k * (np.sqrt(1.0 - c * c) - c * np.arccos(c))


#: per-layer targets the local solver certifies in float64: DKS slopes C'(1) = xi with
#: xi - 1 in [1e-7, 1e3] and smooth-TAT curvatures C''(1) in [1e-6, 1e3]. Closer to the linear
#: limit (xi = 1, C''(1) = 0) the shaped activation is linear to within the certificate's
#: float64 error; far above, no transform in the search box is that nonlinear.
LOCAL_SLOPE_EXCESS = (1e-7, 1e3)
LOCAL_CURVATURE = (1e-6, 1e3)


def _local_range(name: str, network: str, fn, low: float, high: float, target: float,
                 offset: float) -> float:
    """The root of the increasing ``fn(v) = target`` on ``[offset + low, offset + high]``,
    refused with the network range that interval maps to when ``target`` lies outside it."""
    def fn_safe(v: float) -> float:
        with np.errstate(all="ignore"):
            value = float(fn(v))
        return value if math.isfinite(value) else math.inf

    least, most = fn_safe(offset + low), fn_safe(offset + high)
    if not least <= target <= most:
        raise InfeasibleError(
            f"{network} = {target:.10g} needs a per-layer {name} outside what the solver "
            f"certifies ({offset + low:.10g} to {offset + high:.10g} per layer); for this network "
            f"choose {least:.10g} <= {network} <= {most:.10g}")
    return brentq(lambda v: fn_safe(v) - target, offset + low, offset + high, xtol=1e-16,
                  rtol=8.9e-16, maxiter=500)


def dks_local_slope(net, zeta: float) -> float:
    """``xi`` such that ``net.max_slope(xi) = zeta`` (zeta > 1)."""
    zeta = check_targets("dks", {"zeta": zeta})["zeta"]
    low, high = LOCAL_SLOPE_EXCESS
    return _local_range("slope C'(1)", "zeta", net.max_slope, low, high, zeta, 1.0)


def tat_local_curvature(net, tau: float) -> float:
    """``tau_local`` such that ``net.max_curvature(tau_local) = tau`` (tau > 0)."""
    tau = check_targets("tat", {"tau": tau})["tau"]
    low, high = LOCAL_CURVATURE
    return _local_range("curvature C''(1)", "tau", net.max_curvature, low, high, tau, 0.0)


def tat_leaky_slope(net, eta: float) -> tuple[float, float]:
    """(slope a, achieved M) with ``M(0, C_a) = eta``; infeasible when ReLU cannot reach eta."""
    eta = check_targets("tat", {"eta": eta})["eta"]

    def value(a: float) -> float:
        return float(net.subnet_max(0.0, lambda c: leaky_relu_cmap(c, a)))

    relu_value = value(0.0)
    if relu_value < eta:
        raise InfeasibleError(
            f"eta = {eta!r} is unreachable for this network: even ReLU (negative_slope 0) "
            f"gives a maximal C_f(0) of only {relu_value:.6g}. Use eta <= {relu_value:.6g} "
            "or a deeper network (a plain Leaky-ReLU chain needs >= 13 layers for eta = 0.9)")
    if relu_value == eta:
        return 0.0, relu_value
    slope = brentq(lambda a: value(a) - eta, 0.0, 1.0, xtol=1e-16, rtol=8.9e-16, maxiter=500)
    return slope, value(slope)
