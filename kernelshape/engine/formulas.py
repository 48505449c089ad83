"""Formulas a reader can check: closed-form kernels, Q and C maps, and local conditions.

``kernel_formula(act)`` gives, for an activation with an exact dual kernel
(:mod:`kernelshape.engine.closed_forms`), sympy expressions of

* ``K(q1, q2, c) = E[phi_hat(sqrt(q1) u) phi_hat(sqrt(q2) v)]`` (``corr(u, v) = c``),
* ``Q(q) = K(q, q, 1)`` and ``C(c) = K(1, 1, c) / K(1, 1, 1)``,

with ``phi_hat(x) = gamma (phi(alpha x + beta) + delta)`` and the conditions under which the
formula holds. ``local_formulas(act)`` gives the local DKS/TAT quantities
(``Q(1), Q'(1), C(0), C'(1), C''(1)``) as expressions of the symbols ``alpha, beta, delta,
gamma``: from the kernel where one exists, otherwise by exact Gaussian integration of every
polynomial piece (relu, leaky_relu, abs, step, sign, hard clips, polynomials; any shift).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from kernelshape.engine import closed_forms
from kernelshape.engine.activations import Activation
from kernelshape.engine.symbolic import X
from kernelshape.engine.transform import Transform

C = closed_forms.C
Q, Q1, Q2 = sp.symbols("q q1 q2", positive=True)
ALPHA = sp.Symbol("alpha", positive=True)  # the solver's canonical sign (alpha -> |alpha|)
BETA, DELTA, GAMMA = sp.symbols("beta delta gamma", real=True)
SLOPE = sp.Symbol("a", real=True)  # leaky_relu's negative slope, kept as a symbol
Z, W = sp.symbols("z w", real=True)
ONE = sp.Integer(1)
#: the local quantities, as in ``maps.local_summary``
LOCAL_KEYS = ("q_value", "q_slope", "c_value_0", "c_slope_1", "c_curv_1")
LOCAL_TEXT = {"q_value": "Q(1)", "q_slope": "Q'(1)", "c_value_0": "C(0)",
              "c_slope_1": "C'(1)", "c_curv_1": "C''(1)"}
CONDITIONS = {
    "relu": "input_shift = 0 (arc-cosine kernel)", "leaky_relu": "input_shift = 0",
    "abs": "input_shift = 0", "step": "input_shift = 0", "sign": "input_shift = 0",
    "erf": "input_shift = 0", "gelu_exact": "input_shift = 0 and input_scale > 0",
    "sin": "any transform", "cos": "any transform", "exp": "any transform",
    "gaussian": "any transform", "polynomial": "any transform (exact Hermite re-expansion)",
}
FAMILIES_TEXT = ("relu, leaky_relu, abs, step, sign, erf, gelu_exact (input_shift = 0); sin, "
                 "cos, exp, gaussian and polynomials (any transform)")


@dataclass(frozen=True)
class KernelFormula:
    """Closed-form maps of one (transformed) activation; see the module docstring."""

    activation: str
    family: str
    conditions: str
    kernel: sp.Expr
    qmap: sp.Expr
    cmap: sp.Expr

    def text(self) -> str:
        """The three formulas as plain text."""
        return "\n".join([f"K(q1, q2, c) = {sp.sstr(self.kernel)}",
                          f"Q(q) = {sp.sstr(self.qmap)}", f"C(c) = {sp.sstr(self.cmap)}",
                          f"holds for: {self.conditions}"])

    def latex(self) -> str:
        """The three formulas as LaTeX lines."""
        return "\n".join([f"K(q_1, q_2, c) = {sp.latex(self.kernel)}",
                          f"Q(q) = {sp.latex(self.qmap)}", f"C(c) = {sp.latex(self.cmap)}"])

    def to_dict(self) -> dict[str, str]:
        return {"family": self.family, "conditions": self.conditions,
                "kernel": sp.sstr(self.kernel), "qmap": sp.sstr(self.qmap),
                "cmap": sp.sstr(self.cmap), "kernel_latex": sp.latex(self.kernel),
                "qmap_latex": sp.latex(self.qmap), "cmap_latex": sp.latex(self.cmap)}


def number(value: float) -> sp.Expr:
    """A constant as the decimal it prints as (``repr``): exactly, as a fraction, when short
    (1.3 -> 13/10), else as a 30-digit float (exact to 1e-30 relative)."""
    text = repr(float(value))
    digits = text.lstrip("-").replace(".", "").lstrip("0").split("e")[0]
    return sp.Rational(text) if len(digits) <= 8 else sp.Float(text, 30)


def _gaussian_moment(power: int) -> sp.Expr:
    """``E[z^power]`` for a standard normal z."""
    return sp.Integer(0) if power % 2 else sp.factorial2(power - 1) if power else sp.Integer(1)


def _polynomial_kernel(expr: sp.Expr, a1: sp.Expr, a2: sp.Expr, b: sp.Expr
                       ) -> tuple[sp.Expr, sp.Expr]:
    """(K, E[p(a1 z + b)]) of a polynomial p, with z2 = c z1 + sqrt(1 - c^2) w expanded and
    every monomial replaced by its Gaussian moment."""
    left = expr.subs(X, a1 * Z + b)
    right = expr.subs(X, a2 * (C * Z + sp.sqrt(1 - C**2) * W) + b)
    poly = sp.Poly(sp.expand(left * right), Z, W)
    kernel = sum(coef * _gaussian_moment(i) * _gaussian_moment(j)
                 for (i, j), coef in poly.terms())
    mean_poly = sp.Poly(sp.expand(left), Z)
    mean = sum(coef * _gaussian_moment(i) for (i,), coef in mean_poly.terms())
    return sp.expand(kernel), sp.expand(mean)


def _base_kernel(act: Activation, family: str, alpha: sp.Expr, beta: sp.Expr,
                 flip: bool) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """(K, mean at q1, mean at q2) of the untransformed activation at ``x = alpha sqrt(q) z +
    beta``, in the symbols q1, q2, c."""
    signed = family in ("sin", "cos", "exp", "gaussian")
    scale = alpha if signed or family == "polynomial" else sp.Abs(alpha)
    a1, a2 = scale * sp.sqrt(Q1), scale * sp.sqrt(Q2)
    if family == "polynomial":
        kernel, mean = _polynomial_kernel(act.expr, a1, a2, beta)
        return kernel, mean, mean.subs(Q1, Q2)
    kernel, mean = closed_forms.symbolic_kernel(act, family, flip)
    subs = {closed_forms.A1: a1, closed_forms.A2: a2, closed_forms.B: beta}
    mean2 = mean.subs({closed_forms.A1: a2, closed_forms.B: beta})
    return kernel.subs(subs), mean.subs(subs), mean2


def _transformed_kernel(act: Activation, family: str, t: Transform, symbolic: bool) -> sp.Expr:
    if symbolic:
        alpha, beta, delta, gamma = ALPHA, BETA, DELTA, GAMMA
    else:
        alpha, beta, delta, gamma = (number(v) for v in (t.input_scale, t.input_shift,
                                                         t.output_shift, t.output_scale))
    flip = t.input_scale < 0 and family in ("relu", "leaky_relu", "abs")
    kernel, m1, m2 = _base_kernel(act, family, alpha, beta, flip)
    if family == "step" and t.input_scale < 0:
        m1 = m2 = sp.Rational(1, 2)
    return gamma**2 * (kernel + delta * (m1 + m2) + delta**2)


def _tidy(expr: sp.Expr) -> sp.Expr:
    """A cheap rewrite that never changes the value, kept only when it is shorter."""
    if expr.count_ops() > 200:
        return expr
    tidy = sp.powsimp(sp.cancel(sp.together(expr)))
    return tidy if tidy.count_ops() < expr.count_ops() else expr


def kernel_formula(act: Activation) -> KernelFormula:
    """Closed-form ``K``, ``Q`` and ``C`` of ``act`` (its transform included), or ValueError
    naming why there is none and the nearest exact representation."""
    family = closed_forms.family(act)
    if family is None:
        raise ValueError(f"{act.name} has no closed-form kernel (closed forms exist for "
                         f"{FAMILIES_TEXT}); its nearest exact representation is the certified "
                         "Hermite series: ks.cmap_series(act, order) or "
                         "'kernelshape maps ACT --series N'")
    if not closed_forms.supports(act):
        raise ValueError(f"{act.name} has a closed-form kernel only when "
                         f"{CONDITIONS[family]}; this transform is {act.transform}. Use "
                         "ks.cmap_series(act, order) (certified series) or, for the local "
                         "conditions, ks.local_formulas(act)")
    kernel = _transformed_kernel(act.base, family, act.transform, symbolic=False)
    qmap = kernel.subs({Q1: Q, Q2: Q, C: 1})
    at_one = kernel.subs({Q1: 1, Q2: 1})
    cmap = at_one / at_one.subs(C, 1)
    return KernelFormula(act.name, family, CONDITIONS[family], _tidy(kernel), _tidy(qmap),
                         _tidy(cmap))


def _derivative_at_one(expr: sp.Expr, order: int) -> sp.Expr:
    """``d^order/dc^order expr`` at ``c = 1`` (as a one-sided limit where the arc-cosine terms
    make the plain substitution 0/0)."""
    derivative = sp.diff(expr, C, order)
    value = derivative.subs(C, 1)
    if value.has(sp.nan, sp.zoo, sp.oo) or not value.is_finite:
        value = sp.limit(derivative, C, 1, "-")
    return value


class Phi(sp.Function):
    """The standard normal cdf ``Phi(x) = (1 + erf(x / sqrt(2))) / 2``."""

    @classmethod
    def eval(cls, x: sp.Expr) -> sp.Expr | None:
        if x is sp.oo:
            return sp.Integer(1)
        if x is sp.S.NegativeInfinity:
            return sp.Integer(0)
        if x.could_extract_minus_sign():  # Phi(-x) = 1 - Phi(x)
            return 1 - cls(-x)
        return sp.Rational(1, 2) if x.is_zero else None

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return phi(self.args[0])

    def _eval_rewrite_as_erf(self, x: sp.Expr, **kwargs: object) -> sp.Expr:
        return (1 + sp.erf(x / sp.sqrt(2))) / 2

    def _eval_evalf(self, prec: int) -> sp.Expr:
        return self.rewrite(sp.erf)._eval_evalf(prec)


class phi(sp.Function):  # noqa: N801 (the usual name of the standard normal pdf)
    """The standard normal pdf ``phi(x) = exp(-x^2 / 2) / sqrt(2 pi)``."""

    @classmethod
    def eval(cls, x: sp.Expr) -> sp.Expr | None:
        if x.is_infinite:
            return sp.Integer(0)
        return cls(-x) if x.could_extract_minus_sign() else None  # phi is even

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return -self.args[0] * phi(self.args[0])

    def _eval_rewrite_as_exp(self, x: sp.Expr, **kwargs: object) -> sp.Expr:
        return sp.exp(-(x**2) / 2) / sp.sqrt(2 * sp.pi)

    def _eval_evalf(self, prec: int) -> sp.Expr:
        return self.rewrite(sp.exp)._eval_evalf(prec)


def _truncated_moments(lo: sp.Expr, hi: sp.Expr, top: int) -> list[sp.Expr]:
    """``I_n = int_lo^hi z^n phi(z) dz`` for n = 0..top, by ``I_n = [-z^(n-1) phi]_lo^hi +
    (n-1) I_(n-2)`` from ``I_0 = Phi(hi) - Phi(lo)``, ``I_1 = phi(lo) - phi(hi)``."""
    def boundary(n: int) -> sp.Expr:  # [-z^(n-1) phi(z)]_lo^hi (zero at infinite ends)
        def term(z: sp.Expr) -> sp.Expr:
            return sp.Integer(0) if z.is_infinite else z ** (n - 1) * phi(z)
        return term(lo) - term(hi)

    moments = [Phi(hi) - Phi(lo), phi(lo) - phi(hi)]
    for n in range(2, top + 1):
        moments.append(boundary(n) + (n - 1) * moments[n - 2])
    return moments[: top + 1]


def _piecewise_moments(act: Activation) -> dict[str, sp.Expr]:
    """The local quantities by exact integration of each polynomial piece against the
    Gaussian density (``alpha > 0`` assumed; ``z`` runs over ``(lo - beta)/alpha ..``)."""

    slope = act.params.get("negative_slope") if act.name == "leaky_relu" else None

    def symbolic_slope(expr: sp.Expr) -> sp.Expr:
        if slope is None:
            return expr
        return expr.xreplace({n: SLOPE for n in expr.atoms(sp.Float) if float(n) == slope})

    def expect(order: int, power: int, weight: sp.Expr = ONE) -> sp.Expr:
        total = sp.Integer(0)
        for piece in act.info.pieces:
            expr = symbolic_slope(piece.expr)
            body = sp.diff(expr, X, order).subs(X, ALPHA * Z + BETA)
            shift = DELTA if order == 0 else 0
            lo = -sp.oo if piece.lo == float("-inf") else (number(piece.lo) - BETA) / ALPHA
            hi = sp.oo if piece.hi == float("inf") else (number(piece.hi) - BETA) / ALPHA
            poly = sp.Poly(sp.expand((GAMMA * ALPHA**order * (body + shift)) ** power * weight),
                           Z)
            if poly.is_zero:
                continue
            moments = _truncated_moments(lo, hi, poly.degree())
            total += sum(coef * moments[n] for (n,), coef in poly.terms())
        return total

    q_value = sp.simplify(expect(0, 2))
    out = {"q_value": q_value,
           "q_slope": sp.simplify(expect(0, 2, (Z**2 - 1) / 2)),
           "c_value_0": sp.simplify(expect(0, 1)) ** 2 / q_value}
    smooth = act.smooth_order
    out["c_slope_1"] = sp.simplify(expect(1, 2)) / q_value if smooth >= 1 else sp.oo
    out["c_curv_1"] = sp.simplify(expect(2, 2)) / q_value if smooth >= 2 else sp.oo
    return out



def local_formulas(act: Activation) -> dict[str, sp.Expr]:
    """``Q(1), Q'(1), C(0), C'(1), C''(1)`` of ``gamma (phi(alpha x + beta) + delta)`` as
    expressions of the symbols ``ALPHA`` (> 0), ``BETA, DELTA, GAMMA``, or ValueError
    when neither a closed-form kernel nor polynomial pieces give them."""
    base = act.base
    family = closed_forms.family(base)
    if family in ("sin", "cos", "exp", "gaussian", "polynomial"):
        kernel = _transformed_kernel(base, family, Transform(), symbolic=True)
        at_one = kernel.subs({Q1: 1, Q2: 1})
        q_value = _tidy(at_one.subs(C, 1))
        q_curve = kernel.subs({Q1: Q, Q2: Q, C: 1})
        return {"q_value": q_value,
                "q_slope": _tidy(sp.diff(q_curve, Q).subs(Q, 1)),
                "c_value_0": _tidy(at_one.subs(C, 0) / q_value),
                "c_slope_1": _tidy(_derivative_at_one(at_one, 1) / q_value),
                "c_curv_1": _tidy(_derivative_at_one(at_one, 2) / q_value)}
    pieces = base.info.pieces
    if all(p.expr.is_polynomial(X) for p in pieces) and base.expression is not None:
        return _piecewise_moments(base)
    raise ValueError(f"{act.name}: no exact local conditions (they exist for sin, cos, exp, "
                     "gaussian and polynomials, and for activations made of polynomial pieces: "
                     "relu, leaky_relu, abs, step, sign, clips); the solver's certified "
                     "numbers are the nearest representation")


def output_scale_formula(formulas: dict[str, sp.Expr]) -> sp.Expr:
    """``gamma`` from ``Q(1) = 1``: ``(Q(1) at gamma = 1)^(-1/2)``, in alpha, beta, delta."""
    return sp.simplify(1 / sp.sqrt(formulas["q_value"].subs(GAMMA, 1)))


def output_shift_formula(formulas: dict[str, sp.Expr]) -> sp.Expr:
    """``delta`` from ``C(0) = 0`` (the output shift cancels the mean): the root of the
    numerator of ``C(0)``, in alpha and beta."""
    roots = sp.solve(sp.numer(sp.together(formulas["c_value_0"])), DELTA)
    if len(roots) != 1:
        raise ValueError(f"C(0) = 0 has {len(roots)} roots in delta; expected one")
    return sp.simplify(roots[0])


def substituted(formulas: dict[str, sp.Expr], t: Transform, dps: int = 30
                ) -> dict[str, sp.Expr]:
    """The local formulas evaluated at the transform's constants (``dps`` digits); the
    formulas assume ``alpha > 0`` (the solver's canonical sign)."""
    if not t.input_scale > 0:
        raise ValueError(f"the local formulas assume input_scale > 0, got {t.input_scale!r}")
    values = {ALPHA: number(t.input_scale), BETA: number(t.input_shift),
              DELTA: number(t.output_shift), GAMMA: number(t.output_scale),
              SLOPE: number(t.negative_slope if t.negative_slope is not None else 0.01)}
    return {k: sp.N(v.subs(values), dps) for k, v in formulas.items()}
