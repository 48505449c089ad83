"""Symbolic layer: the variable ``x``, stable special functions, piecewise analysis, lambdify.

An activation is a sympy expression in :data:`X`. :func:`analyze` splits it at its kinks into
smooth pieces and records, per kink, the first derivative order that jumps. Numpy and mpmath
callables for any derivative order are compiled from the pieces.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import mpmath as mp
import numpy as np
import sympy as sp
from scipy import special

from kernelshape.engine.expression import BinOp, Const, Neg, Node, Num, Var

X = sp.Symbol("x", real=True)

MAX_JUMP_ORDER = 8  # derivatives checked for jumps at a kink; beyond this a piece is "smooth"


class Sigmoid(sp.Function):
    """Logistic sigmoid 1/(1+exp(-x)), kept unevaluated so numerics stay stable."""

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        s = Sigmoid(self.args[0])
        return s * (1 - s)

    @classmethod
    def eval(cls, arg: sp.Expr) -> sp.Expr | None:
        if arg == 0:
            return sp.Rational(1, 2)
        return None

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real

    def _eval_rewrite_as_exp(self, arg: sp.Expr, **kwargs: object) -> sp.Expr:
        return 1 / (1 + sp.exp(-arg))

    def _eval_evalf(self, prec: int) -> sp.Expr:
        return (1 / (1 + sp.exp(-self.args[0])))._eval_evalf(prec)


class Softplus(sp.Function):
    """softplus(x) = log(1 + exp(x)), kept unevaluated so numerics stay stable."""

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return Sigmoid(self.args[0])

    @classmethod
    def eval(cls, arg: sp.Expr) -> sp.Expr | None:
        if arg == 0:
            return sp.log(2)
        return None

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real

    def _eval_rewrite_as_exp(self, arg: sp.Expr, **kwargs: object) -> sp.Expr:
        return sp.log(1 + sp.exp(arg))

    def _eval_evalf(self, prec: int) -> sp.Expr:
        return sp.log(1 + sp.exp(self.args[0]))._eval_evalf(prec)


def _np_softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _mp_sigmoid(x: mp.mpf) -> mp.mpf:
    return 1 / (1 + mp.exp(-x))


def _mp_softplus(x: mp.mpf) -> mp.mpf:
    return mp.log1p(mp.exp(x)) if x < 0 else x + mp.log1p(mp.exp(-x))


NUMPY_MODULES = [
    {"Sigmoid": special.expit, "Softplus": _np_softplus, "erf": special.erf, "erfc": special.erfc},
    "numpy",
]
MPMATH_MODULES = [{"Sigmoid": _mp_sigmoid, "Softplus": _mp_softplus}, "mpmath"]


def _below_zero(a: sp.Expr, below: sp.Expr, above: sp.Expr) -> sp.Expr:
    return sp.Piecewise((below, a < 0), (above, True))


#: op name (kernelshape.engine.ops.OPS) -> its sympy form; kinks become Piecewise
SYMPY_OPS: dict[str, Callable[..., sp.Expr]] = {
    "exp": sp.exp,
    "log": sp.log,
    "log1p": lambda a: sp.log(1 + a),
    "expm1": lambda a: sp.exp(a) - 1,
    "sqrt": sp.sqrt,
    "tanh": sp.tanh,
    "sinh": sp.sinh,
    "cosh": sp.cosh,
    "sin": sp.sin,
    "cos": sp.cos,
    "atan": sp.atan,
    "asinh": sp.asinh,
    "erf": sp.erf,
    "erfc": sp.erfc,
    "abs": lambda a: _below_zero(a, -a, a),
    "sign": lambda a: _below_zero(a, sp.Integer(-1), sp.Integer(1)),
    "step": lambda a: _below_zero(a, sp.Integer(0), sp.Integer(1)),
    "relu": lambda a: _below_zero(a, sp.Integer(0), a),
    "sigmoid": Sigmoid,
    "softplus": Softplus,
    "max": sp.Max,
    "min": sp.Min,
    "leaky_relu": lambda a, s: _below_zero(a, s * a, a),
    "elu": lambda a, s: _below_zero(a, s * (sp.exp(a) - 1), a),
}
_SYMPY_CONSTANTS = {"pi": sp.pi, "e": sp.E, "E": sp.E}


def to_sympy(node: Node) -> sp.Expr:
    """The sympy expression in :data:`X` of an expression tree: decimal literals exact
    (rationals), float parameters as 30-digit Floats, pi and e exact."""
    if isinstance(node, Var):
        return X
    if isinstance(node, Num):
        if node.text is None:
            return sp.Float(node.value, 30)
        return sp.Integer(node.text) if node.text.isdigit() else sp.Rational(node.text)
    if isinstance(node, Const):
        return _SYMPY_CONSTANTS[node.name]
    if isinstance(node, Neg):
        return -to_sympy(node.operand)
    if isinstance(node, BinOp):
        a, b = to_sympy(node.left), to_sympy(node.right)
        return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                "/": lambda: a / b, "**": lambda: a**b}[node.op]()
    return SYMPY_OPS[node.name](*(to_sympy(a) for a in node.args))


@dataclass(frozen=True)
class Piece:
    """A smooth expression valid on the open interval (lo, hi)."""

    lo: float
    hi: float
    expr: sp.Expr


@dataclass(frozen=True)
class PiecewiseInfo:
    """Smooth pieces of an activation and the regularity at its kinks.

    ``smooth_order`` is the number of derivatives that are ordinary functions (no Dirac
    terms): 0 when the activation jumps, 1 when it is continuous with a kink, ...;
    ``MAX_JUMP_ORDER + 1`` means no jump was found (smooth activation or no kinks).
    """

    pieces: tuple[Piece, ...]
    kinks: tuple[float, ...]
    smooth_order: int
    jumps: dict[int, tuple[float, ...]] = field(default_factory=dict)  # order -> jump per kink


def _to_piecewise(expr: sp.Expr) -> sp.Expr:
    expr = expr.rewrite(sp.Piecewise) if expr.has(sp.Max, sp.Min, sp.Abs, sp.sign) else expr
    expr = expr.replace(sp.Heaviside, lambda a, *rest: sp.Piecewise((0, a < 0), (1, True)))
    return sp.piecewise_fold(expr)


def _interval_ends(cond: sp.Basic) -> set[float]:
    """Finite boundary points of the set of x where ``cond`` holds (raises if not intervals)."""
    if cond in (sp.true, sp.false):
        return set()
    try:
        region = cond.as_set()
    except (NotImplementedError, TypeError, ValueError):
        region = None
    problem = ValueError(
        f"the kink condition {cond} is not a union of intervals in x; "
        "use max/min/abs/sign/step of expressions whose zeros are simple"
    )
    if region is None or region.has(sp.ConditionSet) or not (
        region.is_Interval or region.is_Union or region.is_FiniteSet or region.is_empty
    ):
        raise problem
    try:
        boundary = region.boundary
    except (NotImplementedError, TypeError, ValueError):
        raise problem from None
    ends = set()
    for point in boundary:
        if point.is_finite:
            ends.add(float(point))
    return ends


def analyze(expr: sp.Expr) -> PiecewiseInfo:
    """Split ``expr`` into smooth pieces at its kinks and measure its regularity there."""
    try:
        return _analyze(expr)
    except RecursionError:
        raise ValueError(f"cannot separate the kinks of {expr} (sympy recursion limit); "
                         "simplify the max/min/abs/sign/step arguments") from None


def _analyze(expr: sp.Expr) -> PiecewiseInfo:
    folded = _to_piecewise(expr)
    if not isinstance(folded, sp.Piecewise):
        if folded.has(sp.Piecewise):
            raise ValueError(f"cannot separate the kinks of {expr}")
        return PiecewiseInfo((Piece(-math.inf, math.inf, folded),), (), MAX_JUMP_ORDER + 1)
    ends: set[float] = set()
    for _, cond in folded.args:
        ends |= _interval_ends(cond)
    kinks = tuple(sorted(ends))
    bounds = (-math.inf, *kinks, math.inf)
    pieces = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if math.isinf(lo) and math.isinf(hi):
            mid = 0.0
        elif math.isinf(lo):
            mid = hi - 1.0
        elif math.isinf(hi):
            mid = lo + 1.0
        else:
            mid = 0.5 * (lo + hi)
        for piece_expr, cond in folded.args:
            holds = cond.subs(X, sp.Float(mid)) if cond not in (sp.true, sp.false) else cond
            if bool(holds):
                if piece_expr.has(sp.Piecewise):
                    raise ValueError(f"cannot separate the kinks of {expr}")
                pieces.append(Piece(lo, hi, sp.sympify(piece_expr)))
                break
    smooth_order, jumps = _regularity(pieces, kinks)
    return PiecewiseInfo(tuple(pieces), kinks, smooth_order, jumps)


def _regularity(pieces: list[Piece], kinks: tuple[float, ...]) -> tuple[int, dict]:
    jumps: dict[int, tuple[float, ...]] = {}
    smooth_order = MAX_JUMP_ORDER + 1
    for order in range(MAX_JUMP_ORDER + 1):
        per_kink = []
        for i, kink in enumerate(kinks):
            left = sp.diff(pieces[i].expr, X, order).subs(X, kink)
            right = sp.diff(pieces[i + 1].expr, X, order).subs(X, kink)
            per_kink.append(float(sp.N(right - left, 30)))
        jumps[order] = tuple(per_kink)
        if any(abs(j) > 1e-13 for j in per_kink) and smooth_order > MAX_JUMP_ORDER:
            smooth_order = order
    return smooth_order, jumps


@cache
def _lambdified(expr: sp.Expr, order: int, backend: str) -> Callable:
    derivative = sp.diff(expr, X, order) if order else expr
    modules = NUMPY_MODULES if backend == "numpy" else MPMATH_MODULES
    return sp.lambdify(X, derivative, modules=modules, cse=True)


def piece_function(expr: sp.Expr, order: int = 0, backend: str = "numpy") -> Callable:
    """Compiled ``order``-th derivative of one smooth piece."""
    return _lambdified(expr, order, backend)


def evaluate_pieces(info: PiecewiseInfo, x: np.ndarray, order: int = 0) -> np.ndarray:
    """Evaluate the ``order``-th derivative (a.e.) of the piecewise function at ``x``."""
    x = np.asarray(x, dtype=float)
    if len(info.pieces) == 1:
        fn = piece_function(info.pieces[0].expr, order)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.broadcast_to(np.asarray(fn(x), dtype=float), x.shape).copy()
    out = np.empty_like(x)
    for piece in info.pieces:
        mask = (x >= piece.lo) & (x < piece.hi) if piece.lo > -math.inf else x < piece.hi
        if not mask.any():
            continue
        fn = piece_function(piece.expr, order)
        with np.errstate(over="ignore", invalid="ignore"):
            out[mask] = np.broadcast_to(np.asarray(fn(x[mask]), dtype=float), (mask.sum(),))
    return out


Z1, Z2, CORR, ZQ = sp.symbols("z1 z2 c z", real=True)


@cache
def density_weight(m: int, backend: str = "numpy") -> Callable:
    """P_m(z1, z2, c) = (d^m/dz1^m d^m/dz2^m p_c) / p_c = (d^m p_c/dc^m) / p_c.

    ``p_c`` is the standard bivariate normal density with correlation c.
    """
    p = sp.exp(-(Z1**2 - 2 * CORR * Z1 * Z2 + Z2**2) / (2 * (1 - CORR**2)))
    ratio = sp.simplify(sp.diff(p, Z1, m, Z2, m) / p)
    return sp.lambdify((Z1, Z2, CORR), ratio, "numpy" if backend == "numpy" else "mpmath")


@cache
def q_derivative_weight(order: int, backend: str = "numpy") -> Callable:
    """S_k(z) with d^k/dq^k E[h(sqrt(q) z)] = E[h(sqrt(q) z) S_k(z)] / q^k."""
    x, q = sp.symbols("x q", positive=True)
    density = sp.exp(-(x**2) / (2 * q)) / sp.sqrt(q)
    ratio = sp.simplify(sp.diff(density, q, order) / density * q**order)
    poly = sp.expand(ratio.subs(x, sp.sqrt(q) * ZQ))
    return sp.lambdify(ZQ, poly, "numpy" if backend == "numpy" else "mpmath")
