"""Q maps, C maps and local summaries of (transformed) activations.

With ``z ~ N(0,1)``, ``(z1, z2)`` standard normals with correlation ``c`` and
``phi_hat`` the transformed activation:

* ``Q(q) = E[phi_hat(sqrt(q) z)^2]``
* ``K(c; q1, q2) = E[phi_hat(sqrt(q1) z1) phi_hat(sqrt(q2) z2)]``
* ``C(c; q1, q2) = K(c; q1, q2) / sqrt(Q(q1) Q(q2))``
* Price: ``d^k K/dc^k = E[g1^(k)(z1) g2^(k)(z2)]`` with ``g_i(z) = phi_hat(sqrt(q_i) z)``;
  past an activation's smoothness the remaining ``m`` derivatives act on the Gaussian density
  (``d^m p_c/dc^m = p_c P_m``), so kinks and jumps never need Dirac terms.

Routes (:func:`route`):

* ``closed``: exact formulas (:mod:`kernelshape.engine.closed_forms`);
* ``hermite``: smooth activations whose Mehler series ``sum_k a_k(q1) a_k(q2) c^k`` has a
  certified truncation error below ``1e-14`` (relative) within 2048 terms
  (:mod:`kernelshape.engine.hermite`): only 1-D quadratures, any number of c points;
* ``quadrature``: float64 2-D panels split at kinks (:mod:`kernelshape.engine.quadrature`);
  many-point C maps go through a cached Chebyshev interpolant in ``theta = arccos c``, accepted
  only once its coefficients have converged to float64 level;
* ``dps=N``: mpmath (:mod:`kernelshape.engine.precise`).

Many-point evaluations (``>= TABLE_MIN_POINTS``) use a cached piecewise Chebyshev table in theta
(:class:`ThetaTable`, 16th degree per cell, cells doubled until every cell's last coefficients
are below ``1e-15`` of the map's scale), built from the route's exact values.

Caching and ``q``: results that are expensive to build (quadrature Q values, Hermite
expansions, interpolants) are cached per ``(activation, q)``. Network evaluation produces q
values that drift by a few ulps per layer, so off the closed-form route ``q`` is rounded to
``Q_DIGITS = 14`` significant digits (:func:`snap_q`) both as cache key and as evaluation point:
``|snap_q(q) - q| <= 5e-14 q``, which changes ``Q`` by at most ``5e-14 |q Q'(q)|`` and ``C`` by
at most ``5e-14 (|q1 dC/dq1| + |q2 dC/dq2|)`` (below 1e-13 for every built-in with
q in [0.01, 100]).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from numpy.polynomial import chebyshev
from scipy import fft

from kernelshape.engine import closed_forms, hermite, precise
from kernelshape.engine.activations import Activation, activation
from kernelshape.engine.quadrature import Scaled, expect_1d, expect_2d
from kernelshape.engine.symbolic import q_derivative_weight

SUMMARY_KEYS = ("q_value", "q_slope", "c_value_0", "c_slope_0", "c_slope_1", "c_curv_1")
Q_DIGITS = 14
FAST_PATH_MIN_POINTS = 33  # quadrature route: from this many points, build a ThetaTable
TABLE_MIN_POINTS = 2048  # from this many points, evaluate through a ThetaTable
TABLE_MIN_TERMS = 24  # hermite series shorter than this are evaluated directly (Horner)
GLOBAL_DEGREES = (32, 64, 128, 256)
GLOBAL_TOLERANCE = 2e-15
CACHE_SIZE = 1024  # per cache; entries are at most a few 10 kB


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


def snap_q(q: float) -> float:
    """``q`` rounded to ``Q_DIGITS`` significant digits (``|snap_q(q) - q| <= 5e-14 q``)."""
    return float(f"{q:.{Q_DIGITS - 1}e}")


def route(act: Activation | str, q1: float = 1.0, q2: float | None = None,
          order: int = 0) -> str:
    """The float64 route of ``d^order/dc^order C(c; q1, q2)``: 'closed', 'hermite' or
    'quadrature' (the q-maps and local summaries of non-closed activations use 1-D panels)."""
    act = _as_activation(act)
    if closed_forms.supports(act):
        return "closed"
    q1 = snap_q(_check_q("q1", q1))
    q2 = q1 if q2 is None else snap_q(_check_q("q2", q2))
    return "hermite" if _hermite_series(act, q1, q2, _check_order(order)) is not None \
        else "quadrature"


def clear_caches() -> None:
    """Forget every cached Q value, expansion, interpolant and summary (for benchmarks)."""
    for fn in (_q_value, _expansion, _hermite_series, _hermite_table, _quadrature_table,
               _endpoint, _summary):
        fn.cache_clear()


# --- Q map -----------------------------------------------------------------------------------

def _q_closed(act: Activation, q: float) -> float:
    return float(closed_forms.kernel(act, q, q, np.array(1.0), 0))


@lru_cache(maxsize=CACHE_SIZE)
def _q_value(act: Activation, q: float) -> float:
    """``Q(q)`` off the closed-form route (``q`` already snapped)."""
    g = Scaled.of(act, q)
    return expect_1d([(g, 0), (g, 0)])


def _q(act: Activation, q: float) -> float:
    if closed_forms.supports(act):
        return _q_closed(act, q)
    return _q_value(act, snap_q(q))


def qmap(act: Activation | str, q, order: int = 0, dps: int | None = None):
    """``d^order/dq^order Q(q)``, ``Q(q) = E[phi_hat(sqrt(q) z)^2]``; vectorized over q.

    Derivatives use ``dQ/dq = E[phi_hat(sqrt(q) z)^2 (z^2 - 1)] / (2q)`` (differentiating the
    Gaussian density), so kinks and jumps need no special treatment.
    """
    act = _as_activation(act)
    order = _check_order(order)
    if dps is not None:

        return precise.qmap(act, q, order, dps)
    qs = np.asarray(q, dtype=float)
    out = np.empty(qs.shape)
    for i, qi in np.ndenumerate(qs):
        qi = _check_q("q", qi)
        out[i] = _q(act, qi) if order == 0 else _q_derivative(act, qi, order)
    return out if out.shape else float(out)


def _q_derivative(act: Activation, q: float, order: int) -> float:
    weight = q_derivative_weight(order)
    g = Scaled.of(act, q)
    return expect_1d([(g, 0), (g, 0)], weight=weight) / q**order


# --- interpolants ----------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _cheb_to_monomial(degree: int) -> np.ndarray:
    """Row k: monomial coefficients of T_k."""
    out = np.zeros((degree + 1, degree + 1))
    for k in range(degree + 1):
        mono = chebyshev.cheb2poly(np.eye(degree + 1)[k])
        out[k, :mono.size] = mono
    return out


class ThetaTable:
    """Piecewise polynomial interpolant of ``theta -> f(cos theta)`` on ``[0, pi]``.

    Adaptive cells: each cell holds the degree-``DEGREE`` interpolant at its
    Chebyshev–Lobatto points (Chebyshev coefficients by a type-I DCT) and is accepted when its
    last two coefficients are below ``TOLERANCE`` times the largest value seen; otherwise it is
    halved (down to width ``pi / MAX_CELLS``). The finished table must reproduce ``f`` at every
    cell's midpoint (not an interpolation node) within ``10 * TOLERANCE``. Evaluation: one
    ``arccos``, a ``searchsorted`` and a Horner recurrence in the local coordinate
    ``x in [-1, 1]`` (monomial coefficients: the Chebyshev ones decay geometrically, so the
    conversion is well conditioned).
    """

    DEGREE = 10  # default cell degree (``build(degree=...)`` may choose another)
    TOLERANCE = 1e-15
    MAX_CELLS = 4096

    def __init__(self, edges: np.ndarray, monomial: np.ndarray) -> None:
        self.edges = edges  # cell boundaries, increasing, edges[0] = 0, edges[-1] = pi
        self.inner_edges = edges[1:-1]
        self.centre = 0.5 * (edges[:-1] + edges[1:])
        self.inv_half = 2.0 / np.diff(edges)
        self.columns = np.ascontiguousarray(monomial.T)  # (degree + 1, cells)

    @property
    def cells(self) -> int:
        return self.centre.size

    @classmethod
    def build(cls, f: Callable[[np.ndarray], np.ndarray], start_cells: int = 4,
              degree: int | None = None) -> ThetaTable | None:
        """Table of ``f`` (vectorized over theta), or None if it does not converge."""
        d = degree or cls.DEGREE
        x = np.cos(np.pi * np.arange(d, -1, -1) / d)  # Lobatto points, increasing
        pending = [(np.pi * i / start_cells, np.pi * (i + 1) / start_cells)
                   for i in range(start_cells)]
        done: list[tuple[float, float, np.ndarray]] = []
        scale = 1e-300
        min_width = np.pi / cls.MAX_CELLS * 1.000001
        while pending:
            lo = np.array([p[0] for p in pending])
            hi = np.array([p[1] for p in pending])
            theta = lo[:, None] + (x[None, :] + 1.0) * (0.5 * (hi - lo))[:, None]
            values = np.asarray(f(theta.ravel()), dtype=float).reshape(theta.shape)
            if not np.all(np.isfinite(values)):
                return None
            scale = max(scale, float(np.max(np.abs(values))))
            coef = fft.dct(values[:, ::-1], type=1, axis=1) / d
            coef[:, 0] *= 0.5
            coef[:, -1] *= 0.5
            converged = np.max(np.abs(coef[:, -2:]), axis=1) <= cls.TOLERANCE * scale
            pending = []
            for i in range(lo.size):
                if converged[i]:
                    done.append((lo[i], hi[i], coef[i]))
                elif hi[i] - lo[i] <= min_width:
                    return None
                else:
                    mid = 0.5 * (lo[i] + hi[i])
                    pending += [(lo[i], mid), (mid, hi[i])]
        done.sort(key=lambda cell: cell[0])
        edges = np.array([cell[0] for cell in done] + [np.pi])
        table = cls(edges, np.array([cell[2] for cell in done]) @ _cheb_to_monomial(d))
        check = table.centre + 0.1 * np.diff(edges)
        if np.max(np.abs(table.theta(check) - f(check))) > 10 * cls.TOLERANCE * scale:
            return None
        return table

    def theta(self, theta: np.ndarray) -> np.ndarray:
        """The interpolant at ``theta`` (in [0, pi])."""
        idx = np.searchsorted(self.inner_edges, theta, side="right")
        x = theta - np.take(self.centre, idx)
        x *= np.take(self.inv_half, idx)
        acc = np.take(self.columns[-1], idx)
        for column in self.columns[-2::-1]:
            acc *= x
            acc += np.take(column, idx)
        return acc

    def __call__(self, c: np.ndarray) -> np.ndarray:
        return self.theta(np.arccos(c))


def horner(c: np.ndarray, series: np.ndarray) -> np.ndarray:
    """``sum_k series[k] c^k`` (in-place Horner)."""
    acc = np.full(c.shape, series[-1], dtype=float)
    for b in series[-2::-1]:
        acc *= c
        acc += b
    return acc


# --- Hermite route ---------------------------------------------------------------------------

@lru_cache(maxsize=CACHE_SIZE)
def _expansion(act: Activation, q: float, order: int, min_terms: int = 0
               ) -> hermite.Expansion | None:
    return hermite.expansion(Scaled.of(act, q), order, min_terms)


def _certified(act: Activation, q: float, order: int) -> hermite.Expansion | None:
    e = _expansion(act, q, 0)
    if e is not None and e.terms(order) is None:
        e = _expansion(act, q, order)
    return e


@lru_cache(maxsize=CACHE_SIZE)
def _hermite_series(act: Activation, q1: float, q2: float, order: int) -> np.ndarray | None:
    """Power-series coefficients in c of ``d^order K/dc^order`` (None: not certified)."""
    if act.kinks or act.smooth_order <= order:
        return None
    e1 = _certified(act, q1, order)
    e2 = e1 if q2 == q1 else _certified(act, q2, order)
    if e1 is None or e2 is None:
        return None
    n = hermite.truncation(e1, e2, order)
    if n is None:
        return None
    if e1.coef.size <= n:
        e1 = _expansion(act, q1, order, n)
    if e2.coef.size <= n:
        e2 = _expansion(act, q2, order, n)
    if e1 is None or e2 is None:
        return None
    return hermite.kernel_coefficients(e1, e2, order)


@lru_cache(maxsize=CACHE_SIZE)
def _hermite_table(act: Activation, q1: float, q2: float, order: int) -> ThetaTable | None:
    series = _hermite_series(act, q1, q2, order)
    return ThetaTable.build(lambda t: horner(np.cos(t), series), start_cells=8)


# --- quadrature route ------------------------------------------------------------------------

def _kernel_point(act: Activation, q1: float, q2: float, c: float, order: int) -> float:
    """d^order K/dc^order at one c on the quadrature route."""
    g1, g2 = Scaled.of(act, q1), Scaled.of(act, q2)
    smooth = act.smooth_order
    direct = min(order, smooth)
    extra = order - direct
    if abs(c) == 1.0:
        if extra == 0 or (c == 1.0 and q1 == q2 and act.square_integrable(order)):
            sign = 1.0 if c > 0 else -1.0
            flipped = Scaled(g2.act, sign * g2.a, g2.b, g2.gamma * sign**order, g2.delta)
            return expect_1d([(g1, order), (flipped, order)])
        if c == 1.0 and q1 == q2:
            return math.inf
        raise ValueError(
            f"the order-{order} c-derivative at c = {c:+g} involves Dirac terms of the kinked "
            f"activation {act.name!r} that are not supported at |c| = 1 with q1 != q2; "
            "evaluate at |c| < 1"
        )
    return expect_2d(g1, g2, c, direct, extra)


def _lobatto_coefficients(values: np.ndarray) -> np.ndarray:
    """Chebyshev coefficients of the interpolant at the Lobatto points cos(pi j / n)."""
    coef = fft.dct(values, type=1) / (values.size - 1)
    coef[0] *= 0.5
    coef[-1] *= 0.5
    return coef


def _global_chebyshev(values: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | None:
    """Chebyshev coefficients of theta -> f(cos theta) in x = 2 theta / pi - 1, or None.

    Nested Chebyshev–Lobatto points (each doubling reuses every earlier value); accepted when
    the last four coefficients are below ``GLOBAL_TOLERANCE`` times the largest value.
    """
    top = GLOBAL_DEGREES[-1]
    known = np.full(top + 1, np.nan)
    for degree in GLOBAL_DEGREES:
        idx = np.arange(0, top + 1, top // degree)
        new = idx[np.isnan(known[idx])]
        theta = 0.5 * np.pi * (np.cos(np.pi * new / top) + 1.0)
        known[new] = values(theta)
        grid = known[idx]
        if not np.all(np.isfinite(grid)):
            return None
        coef = _lobatto_coefficients(grid)
        scale = max(float(np.max(np.abs(grid))), 1e-300)
        if np.max(np.abs(coef[-4:])) <= GLOBAL_TOLERANCE * scale:
            return coef
    return None


@lru_cache(maxsize=512)
def _quadrature_table(act: Activation, q1: float, q2: float, order: int) -> ThetaTable | None:
    """Theta-table of ``K^(order)(cos theta)`` from 2-D quadrature values: a global Chebyshev
    interpolant if it converges by degree 256, else adaptive degree-16 cells."""

    def values(theta: np.ndarray) -> np.ndarray:
        return np.array([_kernel_point(act, q1, q2, _cos(t), order) for t in theta])

    coef = _global_chebyshev(values)
    if coef is not None:
        return ThetaTable.build(lambda t: chebyshev.chebval(2.0 * t / np.pi - 1.0, coef),
                                start_cells=8)
    return ThetaTable.build(values, start_cells=4, degree=16)


def _cos(theta: float) -> float:
    """cos with the endpoints exact (so that theta = 0, pi hit the 1-D route at c = +-1)."""
    if theta == 0.0:
        return 1.0
    return -1.0 if theta == np.pi else math.cos(theta)


@lru_cache(maxsize=CACHE_SIZE)
def _endpoint(act: Activation, q1: float, q2: float, order: int, c: float) -> float:
    """``K^(order)(c)`` at ``c = +-1`` by 1-D quadrature (so that ``C(1; q, q) == 1``)."""
    return _kernel_point(act, q1, q2, c, order)


def _exact_ends(act: Activation, c: np.ndarray, q1: float, q2: float, order: int,
                out: np.ndarray) -> np.ndarray:
    for end in (1.0, -1.0):
        mask = c == end
        if mask.any():
            out[mask] = _endpoint(act, q1, q2, order, end)
    return out


def _kernel(act: Activation, c: np.ndarray, q1: float, q2: float, order: int) -> np.ndarray:
    """d^order K/dc^order at the points ``c`` (1-D array) on the best float64 route."""
    if closed_forms.supports(act):
        return closed_forms.kernel(act, q1, q2, c, order)
    series = _hermite_series(act, q1, q2, order)
    if series is not None:
        table = None
        if c.size >= TABLE_MIN_POINTS and series.size > TABLE_MIN_TERMS:
            table = _hermite_table(act, q1, q2, order)
        out = table(c) if table is not None else horner(c, series)
        return _exact_ends(act, c, q1, q2, order, out)
    if c.size >= FAST_PATH_MIN_POINTS and order <= act.smooth_order:
        table = _quadrature_table(act, q1, q2, order)
        if table is not None:
            return _exact_ends(act, c, q1, q2, order, table(c))
    out = np.empty(c.shape)
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

        return precise.cmap(act, c, q1, q2, order, dps)
    cs = _check_c(c)
    if not closed_forms.supports(act):
        q1, q2 = snap_q(q1), snap_q(q2)
    norm = math.sqrt(_q(act, q1) * _q(act, q2))
    if norm == 0.0:
        raise ValueError(f"{act!r} is identically zero in distribution: its C map is undefined")
    out = _kernel(act, cs.reshape(-1), q1, q2, order).reshape(cs.shape) / norm
    return out if out.shape else float(out)


# --- local summary ---------------------------------------------------------------------------

@lru_cache(maxsize=CACHE_SIZE)
def _summary(act: Activation) -> tuple[float, ...]:
    g = Scaled.of(act, 1.0)
    q_value = _q(act, 1.0)
    if q_value == 0.0:
        raise ValueError(f"{act!r} is identically zero in distribution: E[phi(z)^2] = 0")
    if closed_forms.oscillatory(act):  # K(0) = E[phi]^2, K'(0) = E[phi']^2, K'(1), K''(1)
        k = [float(closed_forms.kernel(act, 1.0, 1.0, np.array(c), n)) for c, n in
             ((0.0, 0), (0.0, 1), (1.0, 1), (1.0, 2))]
        return (q_value, closed_forms.trig_q_slope(act, 1.0), *(v / q_value for v in k))
    mean = expect_1d([(g, 0)])
    mean_slope = expect_1d([(g, 0)], weight=lambda z: z)  # E[phi'] = E[phi z] (Stein)
    q_slope = _q_derivative(act, 1.0, 1)
    slope_sq = expect_1d([(g, 1), (g, 1)]) if act.square_integrable(1) else math.inf
    curv_sq = expect_1d([(g, 2), (g, 2)]) if act.square_integrable(2) else math.inf
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

        return precise.local_summary(act, dps)
    values = _summary(act)
    return dict(zip(SUMMARY_KEYS, values, strict=True))
