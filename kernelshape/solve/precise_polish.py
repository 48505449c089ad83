"""``dps=N`` solving: Newton polish of a float64 root at N-digit mpmath precision.

The same equations as :mod:`kernelshape.solve.local` (output constants eliminated, residuals
in (alpha, beta), Jacobian by Gaussian integration by parts), with every expectation
``E[H(alpha z + beta) z^j]`` computed by ``mpmath.quad`` split at the kinks. Newton converges
quadratically from the float64 root, so 3-5 steps reach N digits. Local targets (xi,
tau_local) are taken as the exact binary values of the float64 network targets.
"""

from __future__ import annotations

import mpmath as mp

from kernelshape.engine.activations import Activation, Transform

GUARD = 10


def _moments(act: Activation, alpha: mp.mpf, beta: mp.mpf, curvature: bool) -> dict:
    """E[H(x) z^j], j = 0..4, for H in phi (shifted by phi(beta)), phi^2, phi'^2, phi''^2."""
    kinks = sorted((mp.mpf(k) - beta) / alpha for k in act.base.kinks)
    points = [-mp.inf, *kinks, mp.inf]
    offset = act.base.mp_base(beta, 0)
    pdf = 1 / mp.sqrt(2 * mp.pi)

    def table(h) -> list[mp.mpf]:
        return [mp.quad(lambda z, j=j: h(alpha * z + beta) * z**j * mp.exp(-z * z / 2) * pdf,
                        points) for j in range(5)]

    out = {"phi": table(lambda x: act.base.mp_base(x, 0) - offset),
           "phi2": table(lambda x: (act.base.mp_base(x, 0) - offset) ** 2),
           "dphi2": table(lambda x: act.base.mp_base(x, 1) ** 2)}
    if curvature:
        out["ddphi2"] = table(lambda x: act.base.mp_base(x, 2) ** 2)
    out["offset"] = offset
    return out


def _plain(m: list, alpha: mp.mpf) -> tuple[mp.mpf, mp.mpf, mp.mpf]:
    """E[H] and its (alpha, beta) derivatives."""
    return m[0], (m[2] - m[0]) / alpha, m[1] / alpha


def _hermite2(m: list, alpha: mp.mpf) -> tuple[mp.mpf, mp.mpf, mp.mpf]:
    """E[H (z^2-1)] and its (alpha, beta) derivatives."""
    return m[2] - m[0], (m[4] - 4 * m[2] + m[0]) / alpha, (m[3] - 3 * m[1]) / alpha


def _residuals(act: Activation, method: str, targets: dict, alpha: mp.mpf, beta: mp.mpf,
               branch: int) -> tuple[list, list, mp.mpf, mp.mpf]:
    """Residuals, Jacobian rows, delta, gamma (values only need the same formulas)."""
    mom = _moments(act, alpha, beta, method == "tat")
    # represent quantities as (value, d_alpha, d_beta) triples
    def mul(a, b):
        return (a[0] * b[0], a[1] * b[0] + a[0] * b[1], a[2] * b[0] + a[0] * b[2])

    def div(a, b):
        v = a[0] / b[0]
        return (v, (a[1] - v * b[1]) / b[0], (a[2] - v * b[2]) / b[0])

    def add(a, b, s=1):
        return (a[0] + s * b[0], a[1] + s * b[1], a[2] + s * b[2])

    def scale(a, s):
        return (a[0] * s, a[1] * s, a[2] * s)

    m = _plain(mom["phi"], alpha)
    var = add(_plain(mom["phi2"], alpha), mul(m, m), -1)
    a1, a2 = _hermite2(mom["phi"], alpha), _hermite2(mom["phi2"], alpha)
    d = _plain(mom["dphi2"], alpha)
    alpha_sq = (alpha**2, 2 * alpha, mp.mpf(0))
    if method == "dks":
        delta_shifted, gamma2 = scale(m, -1), div((mp.mpf(1), 0, 0), var)
        r2 = add(div(mul(alpha_sq, d), var), (targets["c_slope_1"], 0, 0), -1)
    else:
        slope = mul(alpha_sq, d)
        diff = add(slope, var, -1)
        root = mp.sqrt(diff[0])
        root_t = (root, diff[1] / (2 * root), diff[2] / (2 * root))
        delta_shifted = add(scale(m, -1), scale(root_t, branch))
        gamma2 = div((mp.mpf(1), 0, 0), slope)
        curv = div(mul(alpha_sq, _plain(mom["ddphi2"], alpha)), d)
        r2 = add(curv, (targets["c_curv_1"], 0, 0), -1)
    # Q'(1) = gamma^2 (A2 + 2 (delta + offset) A1) / 2 with phi shifted by offset
    q_slope = scale(mul(add(a2, scale(mul(delta_shifted, a1), 2)), gamma2), mp.mpf(1) / 2)
    r1 = add(q_slope, (targets["q_slope"], 0, 0), -1)
    delta = delta_shifted[0] - mom["offset"]
    return [r1[0], r2[0]], [[r1[1], r1[2]], [r2[1], r2[2]]], delta, mp.sqrt(gamma2[0])


def polish(act: Activation, method: str, targets: dict[str, float], transform: Transform,
           branch: int, dps: int) -> tuple[dict[str, mp.mpf], mp.mpf]:
    """Newton at ``dps`` digits from a float64 root; returns (constants, max |residual|)."""
    with mp.workdps(dps + GUARD):
        alpha, beta = mp.mpf(transform.input_scale), mp.mpf(transform.input_shift)
        tgt = {k: mp.mpf(v) for k, v in targets.items()}
        norm = mp.inf
        for _ in range(12):
            res, jac, delta, gamma = _residuals(act, method, tgt, alpha, beta, branch)
            norm = max(abs(r) for r in res)
            if norm < mp.mpf(10) ** (-(dps + GUARD // 2)):
                break
            det = jac[0][0] * jac[1][1] - jac[0][1] * jac[1][0]
            alpha -= (jac[1][1] * res[0] - jac[0][1] * res[1]) / det
            beta -= (-jac[1][0] * res[0] + jac[0][0] * res[1]) / det
        constants = {"input_scale": +alpha, "input_shift": +beta, "output_shift": +delta,
                     "output_scale": +gamma}
    return constants, norm
