"""Local DKS / TAT systems for one activation, solved exactly with every root enumerated.

Unknowns are the input scale ``alpha > 0`` and shift ``beta``; the output shift and scale are
eliminated in closed form:

* DKS: ``delta = -E[phi(x)]`` (so C(0) = 0), ``gamma = 1/sqrt(Var phi(x))`` (so Q(1) = 1);
  residuals ``Q'(1) - t_q`` and ``C'(1) - xi``.
* TAT (smooth phi): ``gamma^2 = 1/(alpha^2 E[phi'^2])`` (so C'(1) = 1 and Q(1) = 1) and
  ``delta = -E[phi] +- sqrt(alpha^2 E[phi'^2] - Var phi)`` (two branches);
  residuals ``Q'(1) - 1`` and ``C''(1) - tau_local`` with ``C''(1) = alpha^2 E[phi''^2]/E[phi'^2]``.

Here ``x = alpha z + beta``, ``Q'(1) = gamma^2 E[(phi(x)+delta)^2 (z^2-1)]/2``.
Search: a batched damped Newton from a grid of starts on a 96-node Gauss–Hermite rule (fast,
approximate near kinks), then each distinct root is polished by Newton on the exact panel rule
(split at kinks) to ~1e-15. Roots are canonicalized (alpha > 0; beta >= 0 for odd or even phi)
and deduplicated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from kernelshape.engine.activations import Activation, Transform
from kernelshape.solve.moments import Dual, Moments, hermite_rule, panel_nodes

ALPHA_RANGE = (1e-4, 20.0)  # documented search box
BETA_RANGE = (-10.0, 10.0)
DENSE_STARTS = (np.geomspace(0.01, 4.0, 9), np.linspace(-3.0, 3.0, 13))
COARSE_STARTS = (np.geomspace(0.02, 3.0, 5), np.linspace(-3.0, 3.0, 9))
SEARCH_TOL = 1e-8
POLISH_TOL = 1e-14


@dataclass(frozen=True)
class LocalRoot:
    """One solution of a local system."""

    transform: Transform
    branch: int = 0  # TAT: sign of the delta branch; 0 otherwise
    search_residual: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)


def symmetry(act: Activation) -> str | None:
    """'odd' (phi(x) + phi(-x) constant), 'even' or None, checked on a grid."""
    x = np.linspace(0.0, 8.0, 161)
    with np.errstate(all="ignore"):
        plus, minus = act.base.base_derivative(x), act.base.base_derivative(-x)
    scale = max(np.max(np.abs(plus)), 1e-300)
    if np.max(np.abs(plus + minus - 2.0 * plus[0])) <= 1e-13 * scale:
        return "odd"  # odd up to a constant, which the output shift absorbs
    if np.max(np.abs(plus - minus)) <= 1e-13 * scale:
        return "even"
    return None


class System:
    """Residuals and Jacobian of one local method for one activation."""

    def __init__(self, act: Activation, method: str, targets: dict[str, float]) -> None:
        self.act = act.base
        self.method = method
        self.targets = targets

    def output_constants(self, mom: Moments, alpha: Dual, branch: np.ndarray) -> tuple[Dual, Dual]:
        """(delta, gamma^2) as duals."""
        m = mom.plain("phi")
        var = mom.plain("phi2") - m * m
        if self.method == "dks":
            return -m - mom.offset, 1.0 / var
        d = mom.plain("dphi2")
        slope = alpha * alpha * d
        root = (slope - var).sqrt()
        return -m + root * branch - mom.offset, 1.0 / slope

    def residuals(self, alpha: np.ndarray, beta: np.ndarray, branch: np.ndarray,
                  z: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Residuals (n, 2) and Jacobian (n, 2, 2) in (alpha, beta)."""
        curvature = self.method == "tat"
        mom = Moments.compute(self.act, alpha, beta, z, w, curvature)
        a = Dual(alpha, np.tile([1.0, 0.0], (alpha.size, 1)))
        delta, gamma2 = self.output_constants(mom, a, branch)
        m = mom.plain("phi")
        a1, a2 = mom.hermite2("phi"), mom.hermite2("phi2")
        # E[(phi+delta)^2 (z^2-1)] = A2 + 2 delta A1 (E[z^2-1] = 0), phi shifted by offset
        q_slope = (a2 + 2.0 * (delta + mom.offset) * a1) * gamma2 * 0.5
        r1 = q_slope - self.targets["q_slope"]
        if self.method == "dks":
            var = mom.plain("phi2") - m * m
            r2 = a * a * mom.plain("dphi2") / var - self.targets["c_slope_1"]
        else:
            r2 = a * a * mom.plain("ddphi2") / mom.plain("dphi2") - self.targets["c_curv_1"]
        res = np.stack([r1.v, r2.v], axis=1)
        jac = np.stack([r1.g, r2.g], axis=1)
        return res, jac

    def transform(self, alpha: float, beta: float, branch: int) -> Transform:
        """The full Transform (output constants computed on the exact rule)."""
        z, w = panel_nodes(self.act, alpha, beta)
        mom = Moments.compute(self.act, np.array([alpha]), np.array([beta]), z, w,
                              self.method == "tat")
        a = Dual(np.array([alpha]), np.array([[1.0, 0.0]]))
        delta, gamma2 = self.output_constants(mom, a, np.array([float(branch)]))
        return Transform(input_scale=alpha, input_shift=beta, output_shift=float(delta.v[0]),
                         output_scale=float(math.sqrt(gamma2.v[0])))


def _newton(system: System, alpha: np.ndarray, beta: np.ndarray, branch: np.ndarray,
            iterations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched damped Newton on the Gauss–Hermite rule; returns final (alpha, beta, |R|).

    Starts drop out once converged, non-finite, or out of the search box.
    """
    z, w = hermite_rule()
    alpha, beta = alpha.astype(float).copy(), beta.astype(float).copy()
    norm = np.full(alpha.size, np.inf)
    active = np.arange(alpha.size)
    for _ in range(iterations):
        if active.size == 0:
            break
        a, b = alpha[active], beta[active]
        with np.errstate(all="ignore"):
            res, jac = system.residuals(a, b, branch[active], z, w)
            n = np.max(np.abs(res), axis=1)
            norm[active] = n
            det = jac[:, 0, 0] * jac[:, 1, 1] - jac[:, 0, 1] * jac[:, 1, 0]
            keep = np.isfinite(n) & (n > SEARCH_TOL * 1e-3) & np.isfinite(det) & (det != 0)
            safe_det = np.where(keep, det, 1.0)
            da = -(jac[:, 1, 1] * res[:, 0] - jac[:, 0, 1] * res[:, 1]) / safe_det
            db = -(-jac[:, 1, 0] * res[:, 0] + jac[:, 0, 0] * res[:, 1]) / safe_det
        with np.errstate(all="ignore"):  # non-finite steps of dropped starts
            size = np.maximum(np.abs(da) / a, np.abs(db) / np.maximum(1.0, np.abs(b)))
            scale = np.minimum(1.0, 0.5 / np.maximum(size, 1e-300))
            a_new, b_new = a + scale * da, b + scale * db
        inside = (a_new > ALPHA_RANGE[0] * 0.1) & (a_new < 2 * ALPHA_RANGE[1])
        inside &= np.abs(b_new) < 2 * max(abs(BETA_RANGE[0]), BETA_RANGE[1])
        keep &= inside
        alpha[active[keep]], beta[active[keep]] = a_new[keep], b_new[keep]
        active = active[keep]
    return alpha, beta, norm


def _polish(system: System, alpha: float, beta: float, branch: int) -> tuple[float, float, float]:
    """Newton on the exact panel rule; returns (alpha, beta, max |residual|). A step into a
    region whose moments cannot be resolved ends the polish (the candidate keeps its best)."""
    best = (alpha, beta, math.inf)
    for _ in range(12):
        try:
            z, w = panel_nodes(system.act, alpha, beta)
        except ValueError:
            break
        with np.errstate(all="ignore"):
            res, jac = system.residuals(np.array([alpha]), np.array([beta]),
                                        np.array([float(branch)]), z, w)
        norm = float(np.max(np.abs(res)))
        if not math.isfinite(norm):
            break
        if norm < best[2]:
            best = (alpha, beta, norm)
        if norm <= POLISH_TOL:
            break
        try:
            step = -np.linalg.solve(jac[0], res[0])
        except np.linalg.LinAlgError:
            break
        alpha, beta = alpha + step[0], beta + step[1]
        if not (ALPHA_RANGE[0] * 0.1 < alpha < 2 * ALPHA_RANGE[1] and abs(beta) < 20.0):
            break
    return best


def _canonical(alpha: float, beta: float, sym: str | None,
               period: float | None) -> tuple[float, float]:
    """alpha -> |alpha| (z -> -z symmetry); beta >= 0 for odd/even phi (mirror symmetry);
    for sin/cos (phi(x + pi) = -phi(x), phi(pi - x) = +-phi(x)) beta folds into [0, pi/2]."""
    alpha = abs(alpha)
    if period is not None:
        beta = math.fmod(beta, period / 2)
        beta = beta + period / 2 if beta < 0 else beta
        return alpha, min(beta, period / 2 - beta)
    if sym in ("odd", "even") and beta < 0:
        beta = -beta
    return alpha, beta


def _period(act: Activation) -> float | None:
    return 2 * math.pi if act.builtin and act.name in ("sin", "cos") else None


def solve_local(act: Activation, method: str, targets: dict[str, float],
                dense: bool = False) -> list[LocalRoot]:
    """Every distinct root of the local system found from a grid of starts (``dense``: 117
    starts, else 45), canonicalized and sorted by the selection rule (smallest
    |input_shift|, then smallest input_scale)."""
    system = System(act, method, targets)
    alphas, betas = np.meshgrid(*(DENSE_STARTS if dense else COARSE_STARTS), indexing="ij")
    alphas, betas = alphas.ravel(), betas.ravel()
    branches = np.zeros(alphas.size)
    if method == "tat":
        alphas, betas = np.tile(alphas, 2), np.tile(betas, 2)
        branches = np.repeat([1.0, -1.0], alphas.size // 2)
    a, b, norm = _newton(system, alphas, betas, branches, iterations=60)
    # the Hermite rule is exact to ~1e-3 only near kinks: accept loosely, polish decides
    loose = 1e-5 if act.smooth_order > 2 else 1e-2
    candidates = np.nonzero(np.isfinite(norm) & (norm < loose))[0]
    sym = symmetry(act)
    roots: list[tuple[float, float, int, float]] = []
    seen: list[tuple[float, float, int]] = []
    for i in candidates[np.argsort(norm[candidates])]:
        alpha, beta, branch = float(a[i]), float(b[i]), int(branches[i])
        if any(abs(alpha - r[0]) < 1e-6 * alpha and abs(beta - r[1]) < 1e-6 * max(1, abs(beta))
               and branch == r[2] for r in seen):
            continue
        seen.append((alpha, beta, branch))
        alpha, beta, res = _polish(system, alpha, beta, branch)
        if not (res <= 1e-12 and ALPHA_RANGE[0] <= abs(alpha) <= ALPHA_RANGE[1]
                and BETA_RANGE[0] <= beta <= BETA_RANGE[1]):
            continue
        roots.append((alpha, beta, branch, res))
    distinct: list[tuple[float, float, int, float]] = []
    for alpha, beta, branch, res in roots:
        ca, cb = _canonical(alpha, beta, sym, _period(act))
        if (ca, cb) != (alpha, beta) and method == "tat":
            # a symmetry may flip the sign of the delta branch: keep the branch that solves
            options = [_polish(system, ca, cb, br) + (br,) for br in (branch, -branch)]
            options = [o for o in options if abs(o[1] - cb) <= 1e-6 * max(1.0, abs(cb))]
            if not options:
                continue
            ca, cb, res, branch = min(options, key=lambda o: o[2])
            if res > 1e-12:
                continue
        if any(abs(ca - d[0]) <= 1e-8 * ca and abs(cb - d[1]) <= 1e-8 * max(1.0, abs(cb))
               and (method != "tat" or branch == d[2] or cb == 0.0) for d in distinct):
            continue
        distinct.append((ca, cb, branch, res))
    distinct.sort(key=lambda r: (round(abs(r[1]), 9), r[0]))
    return [LocalRoot(system.transform(alpha, beta, branch), branch, res)
            for alpha, beta, branch, res in distinct]


def closest_point(act: Activation, method: str, targets: dict[str, float]) -> dict[str, float]:
    """Where the search got closest to a root (for infeasibility messages)."""
    system = System(act, method, targets)
    alphas, betas = np.meshgrid(*DENSE_STARTS, indexing="ij")
    alphas, betas = alphas.ravel(), betas.ravel()
    branch = np.ones(alphas.size)
    a, b, _ = _newton(system, alphas, betas, branch, iterations=60)
    z, w = hermite_rule()
    with np.errstate(all="ignore"):
        res, _ = system.residuals(a, b, branch, z, w)
    norm = np.max(np.abs(res), axis=1)
    norm[~np.isfinite(norm)] = np.inf
    i = int(np.argmin(norm))
    return {"input_scale": float(a[i]), "input_shift": float(b[i]),
            "q_slope_residual": float(res[i, 0]), "second_residual": float(res[i, 1])}
