"""Float64 Gaussian expectations by composite Gauss–Legendre panels split at kinks.

A *scaled activation* is ``g(z) = gamma * (phi(a*z + b) + delta)`` with ``a = alpha*sqrt(q)``:
the function whose Gaussian moments give Q and C maps. Plain Gauss–Hermite is inaccurate for
kinked or steep ``g`` (ReLU: ~1e-3 in 2-D; tanh(20z): ~1e-2). Here panels start as the
pieces between kinks cut to width <= 1 in z *and* <= 1 in the activation's own coordinate
(over |a z + b| <= 40, where built-ins vary); then every panel whose 20-point and 10-point
Gauss–Legendre sums differ by more than ``PANEL_TOLERANCE`` of the integral of the integrand's
absolute value is halved, until all agree (:func:`adapted_breaks`). That resolves what the
layout cannot know: steepness inside a typed expression (``tanh(30*x)``), oscillation,
integrable blow-ups of a derivative at a kink. The 20-point sums of accepted panels are
returned; the 10-point disagreement bounds the error far above the 20-point error. A panel
set that does not settle within ``MAX_LEVELS`` halvings or ``MAX_PANELS`` panels is refused
with a ValueError (never a silent number). The integration range is chosen from the
integrand's log-envelope.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

from kernelshape.engine.activations import Activation
from kernelshape.engine.symbolic import density_weight

FEATURE_RANGE = 40.0  # |x| beyond which built-in activations are smooth and slowly varying
ENVELOPE_DROP = 75.0  # log-units below the peak at which the integrand is negligible
NODES_1D = 20
NODES_CHECK = 10  # the rule each panel's NODES_1D sum is compared with
NODES_2D = 16
PANEL_TOLERANCE = 1e-15  # per panel, relative to the integral of |integrand| over the range
MAX_LEVELS = 120  # halvings of one starting panel (a blow-up |x|^-p needs ~50 / (1 - 2p))
MAX_PANELS = 20_000  # panels of one 1-D expectation; beyond this the work bound refuses
MAX_NODES_2D = 60_000_000  # outer x inner nodes of one 2-D expectation (about 10 s)
CHUNK_2D = 1_000_000  # inner nodes evaluated at once (memory)
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
        """z positions of unit steps of the activation's own coordinate inside [lo, hi], and
        of its steep inner arguments (``PiecewiseInfo.features``)."""
        steep = np.empty(0)
        if self.act.info.features and self.a != 0.0:
            steep = (np.asarray(self.act.info.features) - self.b) / self.a
            steep = steep[(steep > lo) & (steep < hi)]
        if abs(self.a) <= 1.0:
            return steep
        x_lo, x_hi = sorted((self.a * lo + self.b, self.a * hi + self.b))
        if not whole_range:
            x_lo, x_hi = max(x_lo, -FEATURE_RANGE), min(x_hi, FEATURE_RANGE)
        if x_hi <= x_lo:
            return steep
        xs = np.arange(math.ceil(x_lo), math.floor(x_hi) + 1.0)
        return np.concatenate([(xs - self.b) / self.a, steep])


def envelope_range(
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


def breaks_1d(fns: list[Scaled], lo: float, hi: float) -> np.ndarray:
    parts = [np.arange(lo, hi, 1.0), [hi]]
    for g in fns:
        k = g.kinks_z()
        parts.append(k[(k > lo) & (k < hi)])
        parts.append(g.feature_points(lo, hi, whole_range=False))
    return np.unique(np.concatenate(parts))


Integrand = Callable[[np.ndarray], np.ndarray]


def _panel_sums(f: Integrand, lo: np.ndarray, hi: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per panel: the NODES_1D-point sum, the NODES_CHECK-point sum, and the sum of |f|."""
    out = []
    for m in (NODES_1D, NODES_CHECK):
        x, w = _gauss_legendre(m)
        width = hi - lo
        z = (0.5 * (lo + hi))[:, None] + width[:, None] * x
        with np.errstate(all="ignore"):
            v = f(z)
        out.append(((v * w).sum(axis=1) * width, (np.abs(v) * w).sum(axis=1) * width))
    (fine, size), (check, _) = out
    return fine, check, size


def _adapt(f: Integrand, breaks: np.ndarray, what: str) -> tuple[float, np.ndarray]:
    """``(integral of f, accepted panel ends)``, halving panels from ``breaks`` until each
    panel's NODES_1D and NODES_CHECK sums agree to PANEL_TOLERANCE of the integral of |f|."""
    lo, hi = breaks[:-1], breaks[1:]
    total, scale, count = 0.0, None, lo.size
    ends = [breaks]
    for level in range(MAX_LEVELS + 1):
        fine, check, size = _panel_sums(f, lo, hi)
        if not (np.all(np.isfinite(fine)) and np.all(np.isfinite(check))):
            raise ValueError(f"{what} is not finite in float64 (overflow or a non-integrable "
                             "singularity); try a smaller input scale / q, or dps=N")
        if scale is None:
            scale = float(size.sum())
        bad = np.abs(fine - check) > PANEL_TOLERANCE * scale
        total += float(fine[~bad].sum())
        if not bad.any():
            return total, np.unique(np.concatenate(ends))
        count += int(bad.sum())
        if level == MAX_LEVELS or count > MAX_PANELS:
            worst = float(np.abs(fine - check)[bad].max())
            where = float(0.5 * (lo[bad] + hi[bad])[np.argmax(np.abs(fine - check)[bad])])
            raise ValueError(
                f"cannot resolve {what} to float64 accuracy: after {level} halvings "
                f"({count} panels) panels near z = {where:.6g} still disagree by "
                f"{worst / max(scale, 1e-300):.1e} of the integral's scale (the activation "
                "varies on too fine a scale here, oscillates too fast, or a derivative blows "
                "up non-integrably at a kink); try a smaller input scale or a simpler "
                "expression")
        mid = 0.5 * (lo[bad] + hi[bad])
        lo, hi = np.concatenate([lo[bad], mid]), np.concatenate([mid, hi[bad]])
        ends.append(mid)
    raise AssertionError("unreachable")


def _integrand(fns: list[tuple[Scaled, int]], weight: Callable | None) -> Integrand:
    def f(z: np.ndarray) -> np.ndarray:
        v = np.exp(-0.5 * z * z) * INV_SQRT_2PI
        for g, order in fns:
            v = v * g(z, order)
        return v if weight is None else v * weight(z)
    return f


def expect_1d(fns: list[tuple[Scaled, int]], weight: Callable | None = None) -> float:
    """E[prod_i g_i^(order_i)(z) * weight(z)] for z ~ N(0,1) (adaptive panels, module doc)."""
    scaled = [g for g, _ in fns]
    lo, hi = envelope_range(scaled, power=2)
    total, _ = _adapt(_integrand(fns, weight), breaks_1d(scaled, lo, hi),
                      "a Gaussian expectation")
    return total


@lru_cache(maxsize=256)
def adapted_breaks(g: Scaled, lo: float, hi: float, orders: tuple[int, ...] = (0,)
                   ) -> np.ndarray:
    """Panel ends over [lo, hi] on which NODES_1D-point rules resolve ``g^(n)(z)^2 pdf(z)``
    for every n in ``orders`` (the union of the adapted panels; for node sets reused by many
    weights: Hermite coefficients, moment tables, the 2-D and mpmath routes)."""
    start = breaks_1d([g], lo, hi)
    found = [start]
    for n in orders:
        found.append(_adapt(_integrand([(g, n), (g, n)], None), start,
                            f"E[phi^({n})(z)^2]")[1])
    return np.unique(np.concatenate(found))


def refined(g: Scaled, lo: float, hi: float) -> np.ndarray | None:
    """The break points adaptivity added to the starting layout of ``g`` (None when there
    are none: built-ins at moderate scales, whose layout already resolves them)."""
    added = np.setdiff1d(adapted_breaks(g, lo, hi), breaks_1d([g], lo, hi))
    return added if added.size else None


def outer_breaks(g1: Scaled, g2: Scaled, c: float, s: float, lo: float, hi: float) -> np.ndarray:
    """Outer panels: those of g1, plus where E[g2(z2) | z1] changes on the scale s.

    Given z1, z2 is spread by s around c*z1, so each kink of g2 at z2 = k appears in the outer
    integrand as a smoothed kink of width ~s at z1 = k/c; panels shrink geometrically towards
    those points. Where g2 merely varies on a unit scale of its own coordinate (feature points),
    the conditional mean is at least as smooth as g2, so those points only become breaks.
    """
    parts = [adapted_breaks(g1, lo, hi)]
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
        lo2, hi2 = envelope_range([g2], power=2)
        fine2 = refined(g2, lo2, hi2)
        if fine2 is not None:  # features the float layout could not see, as z1 = z2 / c
            parts.append(fine2 / c)
    breaks = np.unique(np.concatenate(parts))
    return breaks[(breaks >= lo) & (breaks <= hi)]


def _subdivide(breaks: np.ndarray, parts: int) -> np.ndarray:
    """``breaks`` (last axis) with every panel cut into ``parts`` equal panels."""
    if parts == 1:
        return breaks
    lo, hi = breaks[..., :-1], breaks[..., 1:]
    steps = np.arange(parts) / parts
    inner = (lo[..., None] + (hi - lo)[..., None] * steps).reshape(*breaks.shape[:-1], -1)
    return np.concatenate([inner, breaks[..., -1:]], axis=-1)


def _expect_2d(g1: Scaled, g2: Scaled, c: float, order: int, weight_order: int,
               outer_ends: np.ndarray, fine2: np.ndarray | None, parts: int) -> float:
    """The 2-D rule of :func:`expect_2d` with every outer and inner panel cut in ``parts``."""
    s = math.sqrt((1.0 - c) * (1.0 + c))
    z1, w1 = panel_rule(_subdivide(outer_ends, parts), NODES_2D)
    outer = np.exp(-0.5 * z1 * z1) * INV_SQRT_2PI * w1 * g1(z1, order)
    keep = outer != 0.0
    z1, outer = z1[keep], outer[keep]
    if z1.size == 0:
        return 0.0
    lo2, hi2 = envelope_range([g2], power=2)
    t_hi = max(-lo2, hi2)
    kinks = g2.kinks_z()
    steep = abs(g2.a) * s > 1.0
    xs = np.arange(-FEATURE_RANGE, FEATURE_RANGE + 0.5, 1.0)
    grid = np.arange(-t_hi, t_hi + 0.5, 1.0)
    width = (grid.size + kinks.size + (xs.size if steep else 0)
             + (0 if fine2 is None else fine2.size)) * parts * NODES_2D
    if z1.size * width > MAX_NODES_2D:
        raise ValueError(
            f"the 2-D Gaussian integral of this activation needs about {z1.size * width:.2g} "
            f"evaluations (more than the float64 route's {MAX_NODES_2D:.0e}): it varies too "
            "fast at this scale; evaluate the local maps (c = 0, +-1), use a smaller input "
            "scale, or dps=N")
    total = 0.0
    rows = max(1, CHUNK_2D // width)
    for start in range(0, z1.size, rows):  # bounded memory: CHUNK_2D inner nodes at a time
        z = z1[start:start + rows, None]
        cols = [np.broadcast_to(grid, (z.shape[0], grid.size))]
        if kinks.size:
            cols.append((kinks[None, :] - c * z) / s)
        if steep:
            cols.append(((xs[None, :] - g2.b) / g2.a - c * z) / s)
        if fine2 is not None:  # where g2 needed finer panels, moving with z1
            cols.append((fine2[None, :] - c * z) / s)
        breaks = np.sort(np.clip(np.concatenate(cols, axis=1), -t_hi, t_hi), axis=1)
        t, wt = panel_rule(_subdivide(breaks, parts), NODES_2D)
        z2 = c * z + s * t
        inner = np.exp(-0.5 * t * t) * INV_SQRT_2PI * wt * g2(z2, order)
        if weight_order:
            inner = inner * density_weight(weight_order)(z, z2, c)
        total += float(np.sum(outer[start:start + rows] * inner.sum(axis=1)))
    if not math.isfinite(total):
        raise ValueError("Gaussian expectation is not finite (overflow); try dps=N")
    return total


def expect_2d(g1: Scaled, g2: Scaled, c: float, order: int, weight_order: int) -> float:
    """E_c[g1^(order)(z1) g2^(order)(z2) P_m(z1,z2,c)], corr(z1, z2) = c, |c| < 1.

    Integrates z2 = c z1 + s t (s = sqrt(1-c^2)) conditionally on z1: the inner integral over
    t is split at the kinks of g2 (which move with z1), the outer at the kinks of g1. Where
    either activation needed panels finer than the starting layout (:func:`refined`), the
    inner panels follow g2's adapted breaks too, and the result is checked against the same
    rule with every panel halved (a ValueError when they differ by more than 1e-12 of the
    scale ``sqrt(E[g1^2] E[g2^2])``).
    """
    s = math.sqrt((1.0 - c) * (1.0 + c))
    lo, hi = envelope_range([g1], power=2)
    lo2, hi2 = envelope_range([g2], power=2)
    fine2 = refined(g2, lo2, hi2)
    outer_ends = outer_breaks(g1, g2, c, s, lo, hi)
    value = _expect_2d(g1, g2, c, order, weight_order, outer_ends, fine2, 1)
    if fine2 is None and refined(g1, lo, hi) is None:
        return value
    halved = _expect_2d(g1, g2, c, order, weight_order, outer_ends, fine2, 2)
    scale = math.sqrt(expect_1d([(g1, order), (g1, order)]) * expect_1d([(g2, order),
                                                                        (g2, order)]))
    if not abs(halved - value) <= 1e-12 * max(scale, abs(halved)):
        raise ValueError(
            f"cannot resolve the 2-D Gaussian integral at c = {c:.6g} to float64 accuracy "
            f"(two rules differ by {abs(halved - value) / max(scale, 1e-300):.1e} of its scale)"
            ": the activation varies too fast here; use a smaller input scale or dps=N")
    return halved
