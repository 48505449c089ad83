"""``shape(net, method)``: per-activation transform constants for a whole network.

Methods (local conditions at q = 1 on every nonlinear layer; network condition via the
network's subnetwork maximizing function):

| method | local conditions | network condition |
|---|---|---|
| dks | Q(1)=1, Q'(1)=t (1), C(0)=0, C'(1)=xi | max_slope(xi) = zeta |
| dks, relu | Q(1)=1, C(0)=0, C'(1)=xi; input_shift fixed to +-1 | same |
| dks, leaky_relu | same as dks with input_shift 0 and the slope a as unknown | same |
| tat, smooth | Q(1)=1, Q'(1)=1, C'(1)=1, C''(1)=tau_local | max_curvature(tau_local) = tau |
| tat, leaky_relu | gamma = sqrt(2/(1+a^2)), no shifts | max_f C_f(0) = eta |
| eoc | sigma_w^2 E[phi'(sqrt(q*) z)^2] = 1 at q* = sigma_w^2 Q_phi(q*) + sigma_b^2 | - |
| none | identity transforms | - |
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import mpmath as mp
import numpy as np
from scipy.optimize import brentq

from kernelshape.engine.activations import Activation, Transform
from kernelshape.engine.maps import qmap
from kernelshape.solve import certificate
from kernelshape.solve.eoc import edge_of_chaos, eoc_residuals
from kernelshape.solve.local import LocalRoot, closest_point, solve_local
from kernelshape.solve.network_targets import (
    InfeasibleError,
    dks_local_slope,
    tat_leaky_slope,
    tat_local_curvature,
)
from kernelshape.solve.options import (
    Shapeable,
    applicable_targets,
    check_dps,
    check_method,
    check_targets,
    default,
)
from kernelshape.solve.precise_polish import polish
from kernelshape.solve.solution import Solution
from kernelshape.topology import parse_spec

RELU_SLOPE_THRESHOLD = 1.0 / (1.0 - 1.0 / math.pi)  # C'(1) of a centred ReLU
FLOAT_TOLERANCE = 1e-12


def _network(net: Shapeable | str) -> Shapeable:
    if isinstance(net, str):
        return parse_spec(net)
    for attr in ("activations", "max_slope"):
        if not hasattr(net, attr):
            raise TypeError(f"shape() needs a network description (kernelshape.nets.* or a "
                            f"SPEC string); got {type(net).__name__}")
    return net


def _tolerance(route: str) -> float:
    return FLOAT_TOLERANCE if route == "float" else 1e-20


def _certified(act: Activation, roots: list[LocalRoot], targets: dict[str, float],
               route: str) -> tuple[LocalRoot, dict[str, float], list[LocalRoot]]:
    """First root (in selection order) whose independent residuals pass; a root whose
    certificate cannot be evaluated (a degenerate transform, an unresolvable integrand) fails."""
    tol = max(FLOAT_TOLERANCE, _tolerance(route))
    best, problems = math.inf, []
    for i, root in enumerate(roots):
        try:
            res = certificate.residuals(act.transformed(root.transform), targets, route)
        except (ValueError, ZeroDivisionError, OverflowError) as exc:
            problems.append(str(exc) or type(exc).__name__)
            continue
        worst = max(abs(v) / max(1.0, abs(targets[k])) for k, v in res.items())
        if worst <= tol:
            return root, res, roots[:i] + roots[i + 1:]
        best = min(best, worst)
    why = f"the smallest relative residual was {best:.2g}" if math.isfinite(best) else (
        f"none could be evaluated ({problems[0] if problems else 'no residuals'})")
    raise InfeasibleError(
        f"{act.name}: the solver found {len(roots)} candidate root(s) for the local targets "
        f"{_targets_text(targets)}, but none passed the independent {route} certificate at "
        f"{tol:g} ({why}). Targets this close to a linear or a degenerate transform are beyond "
        "float64 certification; move the network target away from its limit")


def _targets_text(targets: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.12g}" for k, v in targets.items())


def _root_record(act: Activation, root: LocalRoot, extra: dict[str, Any]) -> dict[str, Any]:
    record = dict(root.transform.as_dict())
    record.update(extra)
    return record


def _shifted_relu_moments(alpha: float, beta: float) -> tuple[float, float, float]:
    """(E, Var, E[step]) of relu(alpha z + beta), alpha > 0 (closed form, m = beta/alpha)."""
    m = beta / alpha
    pdf, cdf = math.exp(-0.5 * m * m) / math.sqrt(2 * math.pi), 0.5 * math.erfc(-m / math.sqrt(2))
    mean = alpha * pdf + beta * cdf
    second = (alpha**2 + beta**2) * cdf + alpha * beta * pdf
    return mean, second - mean**2, cdf


def _dks_relu(xi: float) -> tuple[Transform, list[str]]:
    """ReLU: Q'(1) dropped; beta = +1 below the centred-ReLU slope 1/(1-1/pi), else -1;
    alpha from C'(1) = alpha^2 P(alpha z + beta > 0) / Var relu(alpha z + beta) = xi."""
    beta = 1.0 if xi < RELU_SLOPE_THRESHOLD else -1.0
    if xi == RELU_SLOPE_THRESHOLD:
        raise InfeasibleError("xi equals the centred-ReLU slope 1/(1-1/pi) exactly; "
                              "change zeta slightly")

    def slope(log_alpha: float) -> float:
        alpha = math.exp(log_alpha)
        _, var, cdf = _shifted_relu_moments(alpha, beta)
        return alpha * alpha * cdf / var - xi

    # beta = -1: relu(alpha z - 1) vanishes except in the far tail as alpha -> 0, and the
    # closed-form variance cancels catastrophically; alpha >= 0.3 keeps C'(1) accurate to
    # 3e-14 (C'(1) <= 7.7 there). beta = +1: C'(1) rises from 1 (alpha -> 0) to the threshold.
    lo, hi = (-6.0 if beta > 0 else math.log(0.3)), 20.0
    if slope(lo) * slope(hi) > 0:
        if beta < 0 and slope(lo) < 0:
            raise InfeasibleError(
                f"relu reaches local slopes C'(1) up to {slope(lo) + xi:.6g} with accurate "
                f"constants (input_shift -1, input_scale >= 0.3); this network needs "
                f"xi = {xi!r}: lower zeta or use leaky_relu")
        raise InfeasibleError(
            f"xi = {xi!r} is too close to the centred-ReLU slope 1/(1-1/pi) = "
            f"{RELU_SLOPE_THRESHOLD!r} for ReLU's reduced DKS system; change zeta slightly")
    alpha = math.exp(brentq(slope, lo, hi, xtol=1e-15, rtol=8.9e-16))
    mean, var, _ = _shifted_relu_moments(alpha, beta)
    warning = ("relu: DKS drops the Q'(1) = 1 condition for ReLU (it has one degree of freedom "
               "less); leaky_relu is the better choice")
    return Transform(alpha, beta, -mean, 1.0 / math.sqrt(var)), [warning]


def _leaky_moments(a: float, m: float) -> tuple[float, float, float, float]:
    """(mean, variance, C'(1), Q'(1)) of the centred, unit-Q Leaky-ReLU ``lrelu_a(z + m)``
    (closed forms; ``E[f f' z] = E[f'^2]`` and ``E[f' z] = (1 - a) pdf(m)``)."""
    pdf = math.exp(-0.5 * m * m) / math.sqrt(2 * math.pi)
    cdf, ccdf = 0.5 * math.erfc(-m / math.sqrt(2)), 0.5 * math.erfc(m / math.sqrt(2))
    mean = (m * cdf + pdf) + a * (m * ccdf - pdf)
    second = ((1 + m * m) * cdf + m * pdf) + a * a * ((1 + m * m) * ccdf - m * pdf)
    var = second - mean * mean
    slope_sq = cdf + a * a * ccdf
    return mean, var, slope_sq / var, (slope_sq - mean * (1 - a) * pdf) / var


LEAKY_SHIFT_BOX = 6.0  # |input_shift| searched when local_q_slope != 1


def _dks_leaky(act: Activation, xi: float, q_slope: float = 1.0) -> Transform:
    """Leaky-ReLU: unknowns the slope a and the input shift m (input_scale 1; a scale is
    redundant since lrelu(s x + b) = s lrelu(x + b/s)). With Q'(1) = 1 the shift is 0, where
    Q'(1) = 1 holds for every slope, and a solves C'(1) = (1+a^2)/2 / Var = xi (closed form).
    Otherwise a(m) solves C'(1) = xi for each shift and m solves Q'(1) = q_slope (the root
    of smallest |m| in |m| <= 6)."""
    if not 1.0 < xi:
        raise InfeasibleError(f"leaky_relu needs a local slope C'(1) > 1; got xi = {xi!r}")
    if q_slope == 1.0:
        if not xi < RELU_SLOPE_THRESHOLD:
            raise InfeasibleError(
                f"leaky_relu reaches local slopes C'(1) in (1, {RELU_SLOPE_THRESHOLD:.12g}) "
                f"only; this network needs xi = {xi!r}: lower zeta or use another activation")

        def slope(a: float) -> float:
            var = (1 + a * a) / 2 - (1 - a) ** 2 / (2 * math.pi)
            return (1 + a * a) / 2 / var - xi

        a = brentq(slope, 0.0, 1.0 - 1e-15, xtol=1e-16, rtol=8.9e-16)
        mean = (1 - a) / math.sqrt(2 * math.pi)
        var = (1 + a * a) / 2 - mean**2
        return Transform(1.0, 0.0, -mean, 1.0 / math.sqrt(var), negative_slope=a)

    def slope_at(m: float) -> float | None:
        """The slope a in [0, 1) with C'(1) = xi at shift m (C'(1) = 1 at a = 1)."""
        if _leaky_moments(0.0, m)[2] <= xi:
            return None
        return brentq(lambda a: _leaky_moments(a, m)[2] - xi, 0.0, 1.0 - 1e-15,
                      xtol=1e-16, rtol=8.9e-16)

    def gap(m: float) -> float:
        a = slope_at(m)
        return math.nan if a is None else _leaky_moments(a, m)[3] - q_slope

    grid = np.linspace(-LEAKY_SHIFT_BOX, LEAKY_SHIFT_BOX, 241)
    values = [gap(m) for m in grid]
    roots = []
    for lo, hi, vlo, vhi in zip(grid[:-1], grid[1:], values[:-1], values[1:], strict=True):
        if math.isfinite(vlo) and math.isfinite(vhi) and (vlo == 0.0 or vlo * vhi < 0.0):
            roots.append(lo if vlo == 0.0 else brentq(gap, lo, hi, xtol=1e-16, rtol=8.9e-16))
    if not roots:
        finite = [(abs(v), m) for m, v in zip(grid, values, strict=True) if math.isfinite(v)]
        near = (f" (closest: Q'(1) off by {min(finite)[0]:.3g} at input_shift "
                f"{min(finite)[1]:.3g})") if finite else ""
        raise InfeasibleError(
            f"leaky_relu: no negative_slope in [0, 1) and input_shift in [-6, 6] gives "
            f"C'(1) = {xi!r} and Q'(1) = {q_slope!r}{near}; move local_q_slope towards 1 or "
            "lower zeta")
    m = min(roots, key=abs)
    a = slope_at(m)
    assert a is not None
    mean, var, _, _ = _leaky_moments(a, m)
    return Transform(1.0, m, -mean, 1.0 / math.sqrt(var), negative_slope=a)


def _stable_tat_roots(act: Activation, roots: list[LocalRoot], tau_local: float,
                      warnings: list[str]) -> tuple[list[LocalRoot], dict]:
    """Keep roots whose Q map is no more curved than the C map: |Q''(1)| <= tau_local.

    This depends only on the maps, so it is invariant under the symmetries of the
    parametrization (sign flips, sigmoid = shifted tanh); the official package's
    input_scale * output_scale < 2 rule is not.
    """
    curvature = {r: float(qmap(act.transformed(r.transform), 1.0, order=2)) for r in roots}
    stable = [r for r in roots if abs(curvature[r]) <= tau_local]
    if not stable and roots:
        best = min(roots, key=lambda r: abs(curvature[r]))
        warnings.append(
            f"{act.name}: no TAT root has |Q''(1)| <= tau_local = {tau_local:.3g}; kept the "
            f"least curved Q map (|Q''(1)| = {abs(curvature[best]):.3g})")
        stable = [best]
    return stable, curvature


@dataclass(frozen=True)
class SolveOptions:
    """How to solve and certify (the same for every activation of a network)."""

    all_solutions: bool = False
    certify: str = "float"
    dps: int | None = None


@dataclass
class _Found:
    """What the per-method solvers fill in, per activation key."""

    transforms: dict[str, Transform] = field(default_factory=dict)
    local_targets: dict[str, dict[str, float]] = field(default_factory=dict)
    residuals: dict[str, dict[str, float]] = field(default_factory=dict)
    alternatives: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    precise: dict[str, dict[str, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def closed_form(self, key: str, act: Activation, transform: Transform,
                    local: dict[str, float], opts: SolveOptions) -> None:
        """Record a transform solved in closed form, with its independent certificate."""
        self.transforms[key], self.local_targets[key] = transform, local
        self.residuals[key] = certificate.residuals(act.transformed(transform), local,
                                                    opts.certify)


def _solve_activation(found: _Found, key: str, act: Activation, method: str,
                      local: dict[str, float], opts: SolveOptions, tau_local: float = 0.0) -> None:
    """The per-activation pipeline: roots of the local system -> (TAT: the roots whose Q map is
    no more curved than the C map) -> the first root passing the certificate -> the
    ``dps``-digit polish -> every root found (``all_solutions``)."""
    _check_base(act)
    second = "c_slope_1" if method == "dks" else "c_curv_1"
    system = {"q_slope": local["q_slope"], second: local[second]}
    roots = solve_local(act, method, system, dense=opts.all_solutions)
    if not roots:
        raise InfeasibleError(_no_root_message(act, method, local[second], local["q_slope"]))
    candidates, extra = roots, {r: {} for r in roots}
    if method == "tat":
        candidates, curvature = _stable_tat_roots(act, roots, tau_local, found.warnings)
        extra = {r: {"q_curv_1": curvature[r], "stable": r in candidates} for r in roots}
    chosen, found.residuals[key], _ = _certified(act, candidates, local, opts.certify)
    found.transforms[key], found.local_targets[key] = chosen.transform, local
    if opts.dps is not None:
        found.precise[key] = _precise(act, method, local, chosen, opts.dps)
    if opts.all_solutions:
        found.alternatives[key] = [_root_record(act, r, {**extra[r], "selected": r is chosen})
                                   for r in roots]


def _shape_dks(net: Shapeable, acts: dict[str, Activation], targets: dict[str, float],
               opts: SolveOptions, found: _Found) -> None:
    """Every activation: Q(1)=1, Q'(1)=local_q_slope, C(0)=0, C'(1)=xi with
    ``max_slope(xi) = zeta`` (ReLU drops Q'(1); Leaky ReLU solves its slope)."""
    xi = dks_local_slope(net, targets["zeta"])
    q_slope = targets["local_q_slope"]
    for key, act in acts.items():
        _check_base(act)
        if act.name == "relu":
            transform, extra = _dks_relu(xi)
            found.warnings.extend(extra)
            found.closed_form(key, act, transform,
                              {"q_value": 1.0, "c_value_0": 0.0, "c_slope_1": xi}, opts)
            continue
        local = {"q_value": 1.0, "q_slope": q_slope, "c_value_0": 0.0, "c_slope_1": xi}
        if act.name == "leaky_relu":
            found.closed_form(key, act, _dks_leaky(act, xi, q_slope), local, opts)
        else:
            _solve_activation(found, key, act, "dks", local, opts)


def _shape_tat(net: Shapeable, acts: dict[str, Activation], targets: dict[str, float],
               opts: SolveOptions, found: _Found) -> None:
    """Leaky ReLU networks: the slope with ``max_f C_f(0) = eta`` and output scale
    ``sqrt(2 / (1 + a^2))``; smooth activations: Q(1)=1, Q'(1)=1, C'(1)=1, C''(1)=tau_local
    with ``max_curvature(tau_local) = tau``."""
    leaky = [k for k, a in acts.items() if a.name == "leaky_relu"]
    if leaky:
        if len(leaky) != len(acts):
            raise ValueError("TAT for Leaky-ReLU needs every activation of the network to be "
                             "leaky_relu (its slope is solved from the whole network)")
        slope, achieved = tat_leaky_slope(net, targets["eta"])
        for key, act in acts.items():
            transform = Transform(output_scale=math.sqrt(2.0 / (1.0 + slope**2)),
                                  negative_slope=slope)
            found.closed_form(key, act, transform,
                              {"q_value": 1.0, "q_slope": 1.0, "c_slope_1": 1.0}, opts)
            found.residuals[key]["network_c_value_0"] = achieved - targets["eta"]
        return
    tau_local = tat_local_curvature(net, targets["tau"])
    for key, act in acts.items():
        _check_base(act)
        if act.smooth_order < 2:
            raise ValueError(f"{act.name}: TAT for smooth activations needs a finite C''(1), but "
                             f"{act.name} has a kink; use leaky_relu (TAT with eta) or a smooth "
                             "activation")
        local = {"q_value": 1.0, "q_slope": 1.0, "c_slope_1": 1.0, "c_curv_1": tau_local}
        _solve_activation(found, key, act, "tat", local, opts, tau_local)


def _shape_none(net: Shapeable, acts: dict[str, Activation], targets: dict[str, float],
                opts: SolveOptions, found: _Found) -> None:
    """Identity transforms (the network as it is)."""
    found.transforms = {k: Transform() for k in acts}


SOLVERS = {"dks": _shape_dks, "tat": _shape_tat, "none": _shape_none}
#: the targets each method reads (with the defaults of ``kernelshape.solve.options``)
METHOD_TARGETS = {"dks": ("zeta", "local_q_slope"), "tat": ("tau", "eta"),
                  "eoc": ("bias_variance",), "none": ()}


def shape(net: Shapeable | str, method: str = "dks", *, zeta: float | None = None,
          tau: float | None = None, eta: float | None = None,
          local_q_slope: float | None = None, bias_variance: float | None = None,
          all_solutions: bool = False, certify: str = "float",
          dps: int | None = None) -> Solution:
    """Solve the shaping conditions of ``method`` for every activation of ``net``.

    ``net`` is a network description (``kernelshape.nets.*``), a SPEC string, or any object
    with ``activations`` and the subnetwork functions. Targets left at None take their
    defaults (``kernelshape.solve.options.TARGETS``); targets of other methods are ignored.
    Roots are enumerated in a documented search box, canonicalized, and the one picked has the
    smallest |input_shift| (then the smallest input_scale) among those passing the independent
    certificate ``certify``.
    """
    method = check_method(method)
    values = {"zeta": zeta, "tau": tau, "eta": eta, "local_q_slope": local_q_slope,
              "bias_variance": bias_variance}
    given = check_targets(method, {k: values[k] for k in METHOD_TARGETS[method]})
    if certify not in ("float", "mp"):
        raise ValueError(f"certify must be 'float' or 'mp'; got {certify!r}")
    opts = SolveOptions(all_solutions, certify, check_dps(dps))
    net = _network(net)
    if getattr(net, "kernel_refusal", None):
        raise ValueError(net.kernel_refusal)
    acts: dict[str, Activation] = dict(net.activations)
    if not acts:
        raise ValueError("the network has no nonlinear layer: nothing to shape")
    applicable = applicable_targets(method, acts.values())
    for name in given:
        if name not in applicable:
            raise ValueError(
                f"{name} does not apply to this network: TAT takes eta when every activation "
                f"is leaky_relu and tau otherwise; this network's activations are "
                f"{', '.join(sorted({a.name for a in acts.values()}))}, so give "
                f"{' or '.join(applicable)}")
    targets = {k: given.get(k, default(k)) for k in METHOD_TARGETS[method]}
    if method != "none":
        for act in acts.values():
            _check_finite_slope(act, method)
    found, eoc = _Found(), None
    if method == "eoc":
        eoc = {k: edge_of_chaos(a, targets["bias_variance"]) for k, a in acts.items()}
        found.transforms = {k: Transform() for k in acts}
        found.residuals = {k: eoc_residuals(a, eoc[k]) for k, a in acts.items()}
    else:
        SOLVERS[method](net, acts, targets, opts, found)
    if method == "tat":  # the network target that applied
        leaky = all(a.name == "leaky_relu" for a in acts.values())
        targets = {"eta": targets["eta"]} if leaky else {"tau": targets["tau"]}
    route = "double-exponential-split-at-kinks" if certify == "float" else "mpmath-30-digits"
    cert = {"route": route, "tolerance": FLOAT_TOLERANCE}
    if found.residuals:
        worst = max(abs(v) for r in found.residuals.values() for v in r.values())
        cert["tolerance"] = max(FLOAT_TOLERANCE, worst)
    return Solution(method=method, targets=targets if method != "none" else {},
                    activations=acts, transforms=found.transforms,
                    local_targets=found.local_targets, residuals=found.residuals,
                    certificate=cert, network=net if hasattr(net, "to_dict") else None,
                    alternatives=found.alternatives, warnings=found.warnings, eoc=eoc,
                    precise_params=found.precise)


def _precise(act: Activation, method: str, local_targets: dict[str, float], root: LocalRoot,
             dps: int) -> dict[str, str]:
    """The chosen root to ``dps`` digits (strings), by mpmath Newton from the float64 root."""
    targets = {"q_slope": local_targets["q_slope"]}
    key = "c_slope_1" if method == "dks" else "c_curv_1"
    targets[key] = local_targets[key]
    constants, norm = polish(act, method, targets, root.transform, root.branch, dps)
    if not norm < 10.0 ** (5 - dps):
        raise RuntimeError(f"{act.name}: the {dps}-digit Newton polish stalled at residual "
                           f"{float(norm):.2e}; please report this activation")
    out = {k: mp.nstr(v, dps) for k, v in constants.items()}
    out["max_residual"] = mp.nstr(norm, 5)
    return out


def _check_finite_slope(act: Activation, method: str) -> None:
    """Refuse activations whose ``C'(1) = E[phi'(u)^2] / E[phi(u)^2]`` is infinite: every
    method but ``none`` sets or needs that slope."""
    if act.square_integrable(1):
        return
    info = act.info
    where = ", ".join(f"{k:g}" for k in info.kinks)
    reason = (f"it jumps at x = {where}, so phi' holds a Dirac term" if info.jump_order < 1
              else f"its slope blows up at x = {where} (|phi'(x)|^2 is not integrable there)")
    raise InfeasibleError(f"{act.name}: method {method} needs a finite slope C'(1) = "
                          f"E[phi'(u)^2]/E[phi(u)^2], but {reason}; C'(1) is infinite for every "
                          "transform. Use a continuous activation with a square-integrable "
                          "derivative (e.g. relu, leaky_relu, tanh)")


def _check_base(act: Activation) -> None:
    if not act.transform.is_identity:
        raise ValueError(f"{act.name}: the network's activation is already transformed; "
                         "shape() solves for the transform of the plain activation")


def _no_root_message(act: Activation, method: str, target: float, q_slope: float) -> str:
    what = "C'(1)" if method == "dks" else "C''(1)"
    near = closest_point(act, method, {"q_slope": q_slope, ("c_slope_1" if method == "dks"
                                                            else "c_curv_1"): target})
    text = (f"{act.name}: no transform meets Q(1)=1, Q'(1)={q_slope:g}, "
            f"{what}={target:.12g} in the search box (input_scale in (0, 20], |input_shift| "
            f"<= 10). Closest point found: input_scale={near['input_scale']:.4g}, "
            f"input_shift={near['input_shift']:.4g} with Q'(1) off by "
            f"{near['q_slope_residual']:.3g} and {what} off by {near['second_residual']:.3g}.")
    if act.name == "square" or (act.expr.is_polynomial() and act.smooth_order > 8):
        text += (" For square, Q'(1) = 1 + a^2/(a^2 + 2 b^2) > 1 for every input_scale a != 0 "
                 "once centred, so Q'(1) = 1 is impossible.")
    return text
