"""Gaussian moments of ``phi(alpha z + beta)`` with exact derivatives in (alpha, beta).

Every local DKS/TAT condition is a ratio of expectations ``E[H(x) p(z)]`` with
``x = alpha z + beta``, ``H`` in {phi, phi^2, phi'^2, phi''^2} and ``p`` in {1, z^2 - 1}.
Their derivatives are again such expectations (Gaussian integration by parts, valid for kinked
and discontinuous H as well):

* ``d/dbeta  E[H(x) p(z)] = E[H(x) (z p - p')] / alpha``
* ``d/dalpha E[H(x) p(z)] = E[H(x) (z^2 p - p - z p')] / alpha``

so one quadrature pass giving ``E[H(x) z^j]`` for j = 0..4 yields values *and* the analytic
Jacobian. :class:`Dual` carries (value, gradient) pairs through the residual formulas.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from kernelshape.engine.activations import Activation
from kernelshape.engine.quadrature import (
    NODES_1D,
    Scaled,
    adapted_breaks,
    envelope_range,
    panel_rule,
)

HERMITE_NODES = 96


@dataclass(frozen=True)
class Dual:
    """Value ``v`` (shape (n,)) with gradient ``g`` (shape (n, k)) — forward-mode AD."""

    v: np.ndarray
    g: np.ndarray

    def __add__(self, o: Dual | float) -> Dual:
        if isinstance(o, Dual):
            return Dual(self.v + o.v, self.g + o.g)
        return Dual(self.v + o, self.g)

    __radd__ = __add__

    def __neg__(self) -> Dual:
        return Dual(-self.v, -self.g)

    def __sub__(self, o: Dual | float) -> Dual:
        return self + (-o)

    def __rsub__(self, o: float) -> Dual:
        return (-self) + o

    def __mul__(self, o: Dual | float) -> Dual:
        if isinstance(o, Dual):
            return Dual(self.v * o.v, self.g * o.v[:, None] + o.g * self.v[:, None])
        return Dual(self.v * o, self.g * np.asarray(o)[..., None])

    __rmul__ = __mul__

    def __truediv__(self, o: Dual | float) -> Dual:
        if isinstance(o, Dual):
            v = self.v / o.v
            return Dual(v, (self.g - o.g * v[:, None]) / o.v[:, None])
        return Dual(self.v / o, self.g / np.asarray(o)[..., None])

    def __rtruediv__(self, o: float) -> Dual:
        v = o / self.v
        return Dual(v, -self.g * (v / self.v)[:, None])

    def sqrt(self) -> Dual:
        r = np.sqrt(self.v)
        return Dual(r, self.g / (2.0 * r[:, None]))


@cache
def _hermite_rule(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    z.setflags(write=False)
    w = w / np.sqrt(2.0 * np.pi)
    w.setflags(write=False)
    return z, w


def hermite_rule() -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Hermite nodes/weights for E[f(z)] (probabilists'): fast, for the search phase
    (computed once; read-only arrays)."""
    return _hermite_rule(HERMITE_NODES)


def panel_nodes(act: Activation, alpha: float, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Accurate panel nodes (split at kinks) for phi(alpha z + beta): the polishing phase."""
    g = Scaled(act.base, alpha, beta, 1.0, 0.0)
    lo, hi = envelope_range([g], power=2)
    orders = tuple(n for n in (0, 1, 2) if act.square_integrable(n))
    z, w = panel_rule(adapted_breaks(g, lo, hi, orders), NODES_1D)
    return z, w * np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)


@dataclass(frozen=True)
class Moments:
    """``E[H(x) z^j]`` for H in phi, phi2, dphi2, ddphi2 and j = 0..4, per batch element.

    ``phi`` is stored shifted by ``offset = phi(beta)`` (close to E[phi] for small alpha) so
    that variances do not cancel catastrophically; every DKS/TAT formula is invariant under a
    constant shift of phi except the output shift, which adds ``offset`` back.
    """

    alpha: np.ndarray
    table: dict[str, np.ndarray]  # H -> array (n, 5)
    offset: np.ndarray

    @classmethod
    def compute(cls, act: Activation, alpha: np.ndarray, beta: np.ndarray, z: np.ndarray,
                w: np.ndarray, curvature: bool) -> Moments:
        """``z, w``: nodes and (pdf-including) weights, shape (m,) or (n, m)."""
        alpha = np.asarray(alpha, dtype=float)
        beta = np.asarray(beta, dtype=float)
        base = act.base if not act.transform.is_identity else act
        z = np.asarray(z, dtype=float)
        x = alpha[:, None] * z + beta[:, None]
        with np.errstate(all="ignore"):
            offset = base.base_derivative(beta, 0)
            f0 = base.base_derivative(x, 0) - offset[:, None]
            f1 = base.base_derivative(x, 1) if act.smooth_order >= 1 else None
            f2 = base.base_derivative(x, 2) if curvature and act.smooth_order >= 2 else None
        if z.ndim == 1:  # shared nodes: one (n, m) @ (m, 5) product per H
            weighted = np.asarray(w, dtype=float)[:, None] * np.vander(z, 5, increasing=True)

            def moments(values: np.ndarray) -> np.ndarray:
                return values @ weighted
        else:
            z2 = np.broadcast_to(z, x.shape)
            weighted3 = np.broadcast_to(w, x.shape)[..., None] * np.stack(
                [np.ones_like(z2), z2, z2**2, z2**3, z2**4], axis=-1)  # (n, m, 5)

            def moments(values: np.ndarray) -> np.ndarray:
                return np.einsum("nm,nmj->nj", values, weighted3)
        table = {"phi": moments(f0), "phi2": moments(f0 * f0)}
        if f1 is not None:
            table["dphi2"] = moments(f1 * f1)
        if f2 is not None:
            table["ddphi2"] = moments(f2 * f2)
        return cls(alpha, table, offset)

    def plain(self, h: str) -> Dual:
        """``E[H]`` with gradient (d/dalpha, d/dbeta)."""
        m = self.table[h]
        grad = np.stack([(m[:, 2] - m[:, 0]) / self.alpha, m[:, 1] / self.alpha], axis=1)
        return Dual(m[:, 0], grad)

    def hermite2(self, h: str) -> Dual:
        """``E[H (z^2 - 1)]`` with gradient (d/dalpha, d/dbeta)."""
        m = self.table[h]
        value = m[:, 2] - m[:, 0]
        d_alpha = (m[:, 4] - 4.0 * m[:, 2] + m[:, 0]) / self.alpha
        d_beta = (m[:, 3] - 3.0 * m[:, 1]) / self.alpha
        return Dual(value, np.stack([d_alpha, d_beta], axis=1))
