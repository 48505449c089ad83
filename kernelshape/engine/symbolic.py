"""Symbolic layer: the variable ``x``, stable special functions, piecewise analysis, lambdify.

An activation is a sympy expression in :data:`X`. :func:`analyze` splits it at its kinks into
smooth pieces and records, per kink, the first derivative order that jumps. Numpy and mpmath
callables for any derivative order are compiled from the pieces.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache

import mpmath as mp
import numpy as np
import sympy as sp
from scipy import special

from kernelshape.engine.expression import BinOp, Const, Neg, Node, Num, Var

X = sp.Symbol("x", real=True)

MAX_JUMP_ORDER = 8  # derivatives checked for jumps at a kink; beyond this a piece is "smooth"
#: a blow-up exponent at or above this makes the square of that derivative non-integrable (1/2
#: exactly; the margin absorbs the error of the numerical exponent, ~1e-7 for power laws)
SINGULAR_LIMIT = 0.5 - 1e-6
SINGULAR_STEPS = (1e-6, 1e-8)  # distances from a kink at which a blow-up exponent is measured
KINK_ORDERS = 4  # derivative orders 0..3 examined at kinks (smooth_order <= 4 when kinked)


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

    ``smooth_order`` is the number of derivatives that are bounded ordinary functions near
    every kink (no Dirac terms, no blow-up): 0 when the activation jumps or its slope blows up,
    1 when it is continuous with a kink, ...; ``MAX_JUMP_ORDER + 1`` means neither was found (smooth
    activation or no kinks). ``jump_order`` is the first order that jumps (the derivatives up
    to it are ordinary functions). ``singular`` maps an order whose one-sided derivative is
    infinite at a kink to its blow-up exponent ``p`` (``|phi^(n)(x)| ~ |x - kink|^-p``):
    ``E[phi^(n)(z)^2]`` is finite exactly when ``p < 1/2``.
    """

    pieces: tuple[Piece, ...]
    kinks: tuple[float, ...]
    smooth_order: int
    jumps: dict[int, tuple[float, ...]] = field(default_factory=dict)  # order -> jump per kink
    jump_order: int = MAX_JUMP_ORDER + 1
    singular: dict[int, float] = field(default_factory=dict)
    features: tuple[float, ...] = ()  # x where a steep inner argument takes integer values

    def square_integrable(self, order: int) -> bool:
        """Whether ``E[phi^(order)(z)^2]`` is finite near the kinks (no Dirac term, blow-up
        exponent below 1/2)."""
        return order <= self.jump_order and self.singular.get(order, 0.0) < SINGULAR_LIMIT


#: the sympy forms whose branch depends on the sign of an argument (kinks sit at its zeros)
SWITCHES = (sp.Piecewise, sp.Max, sp.Min, sp.Abs, sp.sign, sp.Heaviside)
MAX_KINKS = 64  # kinks of one activation (each splits every quadrature panel layout)


def _condition_functions(cond: sp.Basic) -> list[sp.Expr]:
    """``lhs - rhs`` of every relation in a Piecewise condition."""
    if cond in (sp.true, sp.false):
        return []
    if isinstance(cond, sp.core.relational.Relational):
        return [cond.lhs - cond.rhs]
    if isinstance(cond, sp.logic.boolalg.BooleanFunction):  # And, Or, Not, ITE, ...
        return [f for arg in cond.args for f in _condition_functions(arg)]
    raise ValueError(f"cannot separate the kinks of the condition {cond}")


def _switch_arguments(expr: sp.Expr) -> set[sp.Expr]:
    """The functions of x whose sign picks a branch somewhere in ``expr``."""
    found: set[sp.Expr] = set()
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Piecewise):
            for _, cond in node.args:
                found.update(_condition_functions(cond))
        elif isinstance(node, sp.Max | sp.Min):
            args = node.args
            found.update(args[i] - args[j] for i in range(len(args))
                         for j in range(i + 1, len(args)))
        elif isinstance(node, sp.Abs | sp.sign | sp.Heaviside):
            found.add(node.args[0])
    return {u for u in found if u.has(X)}


def _zeros(u: sp.Expr) -> set[float]:
    """Real zeros of ``u`` (which may itself switch), piece by piece; ValueError when they
    are not finitely many points sympy can name."""
    problem = ValueError(f"the kink condition {u} = 0 does not have finitely many solutions "
                         "sympy can find; use max/min/abs/sign/step of expressions whose zeros "
                         "are simple")
    zeros: set[float] = set()
    for piece in _analyze(u).pieces:
        if piece.expr.is_positive or piece.expr.is_negative:  # e.g. exp(...): no zero at all
            continue
        try:
            found = sp.solveset(piece.expr, X, sp.Interval(piece.lo, piece.hi))
        except (NotImplementedError, TypeError, ValueError):
            raise problem from None
        if not isinstance(found, sp.FiniteSet):
            raise problem
        zeros |= {float(v) for v in found if v.is_real}
    return zeros


def _branch(expr: sp.Expr, x0: sp.Float) -> sp.Expr:
    """``expr`` with every switch replaced by the branch it takes at ``x0`` (a point strictly
    inside a piece, so the same branch holds on the whole piece)."""
    if not expr.has(X) or not expr.args:
        return expr
    if isinstance(expr, sp.Piecewise):
        for value, cond in expr.args:
            if cond == sp.true or bool(cond.subs(X, x0)):
                return _branch(value, x0)
        raise ValueError(f"{expr} is undefined at x = {float(x0):g}")
    if isinstance(expr, sp.Max | sp.Min):
        values = [float(sp.N(a.subs(X, x0), 30)) for a in expr.args]
        pick = values.index(max(values) if isinstance(expr, sp.Max) else min(values))
        return _branch(expr.args[pick], x0)
    if isinstance(expr, sp.Abs | sp.sign | sp.Heaviside):
        inner = expr.args[0]
        positive = float(sp.N(inner.subs(X, x0), 30)) > 0
        if isinstance(expr, sp.Abs):
            return _branch(inner if positive else -inner, x0)
        if isinstance(expr, sp.sign):
            return sp.Integer(1 if positive else -1)
        return sp.Integer(1 if positive else 0)
    return expr.func(*(_branch(a, x0) for a in expr.args))


def analyze(expr: sp.Expr) -> PiecewiseInfo:
    """Split ``expr`` into smooth pieces at its kinks and measure its regularity there."""
    try:
        return replace(_analyze(expr), features=steep_points(expr))
    except RecursionError:
        raise ValueError(f"cannot separate the kinks of {expr} (sympy recursion limit); "
                         "simplify the max/min/abs/sign/step arguments") from None


@cache
def _analyze(expr: sp.Expr) -> PiecewiseInfo:
    """Kinks: the zeros of every switch argument (each found on its own, so the work grows
    linearly with the number of switches, not exponentially); pieces: ``expr`` with each
    switch resolved at the midpoint of the interval between consecutive kinks."""
    arguments = _switch_arguments(expr)
    if not arguments:
        return PiecewiseInfo((Piece(-math.inf, math.inf, expr),), (), MAX_JUMP_ORDER + 1)
    candidates = sorted(set().union(*(_zeros(u) for u in arguments)))
    kinks: list[float] = []
    for k in candidates:
        if not kinks or k - kinks[-1] > 1e-12 * max(1.0, abs(k)):
            kinks.append(k)
    if len(kinks) > MAX_KINKS:
        raise ValueError(f"the activation has {len(kinks)} kinks; at most {MAX_KINKS} are "
                         "supported")
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
        piece = Piece(lo, hi, _branch(expr, sp.Float(mid, 30)))
        if pieces and pieces[-1].expr == piece.expr:  # a zero where no branch changes
            pieces[-1] = Piece(pieces[-1].lo, hi, piece.expr)
        else:
            pieces.append(piece)
    kinks = tuple(p.lo for p in pieces[1:])
    if not kinks:
        return PiecewiseInfo((Piece(-math.inf, math.inf, pieces[0].expr),), (),
                             MAX_JUMP_ORDER + 1)
    return _regularity(tuple(pieces), kinks)


STEEP_STEPS = 40  # integer values of a steep linear inner argument that get a quadrature break
MAX_STEEPNESS = 100.0  # largest steepness of an inner argument that is not linear in x


def _steepness(u: sp.Expr) -> float:
    """``max |c|^(1/d)`` over the terms ``c x^d`` of ``u`` (the scale on which ``u`` moves)."""
    out = 0.0
    for term in sp.Add.make_args(sp.expand(u)):
        if not term.has(X):
            continue
        coeff, rest = term.as_coeff_Mul()
        degree = sp.degree(rest, X) if rest.is_polynomial(X) else 1
        out = max(out, abs(float(coeff)) ** (1.0 / max(int(degree), 1)))
    return out


@cache
def steep_points(expr: sp.Expr) -> tuple[float, ...]:
    """Quadrature breaks for inner arguments steeper than x itself.

    For each function applied to ``u = k x + m`` with ``|k| > 1`` (``tanh(1e10 x)``): the x
    where ``u`` takes the integer values ``-STEEP_STEPS..STEEP_STEPS`` (the function's own
    unit scale), so that panels resolve a feature far narrower than the default unit panels.
    A function of a steeper, non-linear argument (``exp(-1e6 x^2)``) is refused: its features
    cannot be located in advance.
    """
    points: set[float] = set()
    for node in sp.preorder_traversal(expr):
        if not isinstance(node, sp.Function) or isinstance(node, SWITCHES):
            continue
        for u in node.args:
            if not u.has(X):
                continue
            if u.is_polynomial(X) and sp.degree(u, X) == 1:
                k, m = float(u.coeff(X, 1)), float(u.coeff(X, 0))
                if abs(k) > 1.0:
                    points.update((j - m) / k for j in range(-STEEP_STEPS, STEEP_STEPS + 1))
            elif (scale := _steepness(u)) > MAX_STEEPNESS:
                raise ValueError(
                    f"the argument {u} of {node.func} varies on a scale of 1/{scale:.3g} in x, "
                    f"steeper than the quadrature can locate for a non-linear argument (at most "
                    f"{MAX_STEEPNESS:g}); write the steepness as a linear factor, e.g. "
                    "tanh(30*x), or as the transform's input_scale")
    return tuple(sorted(points))


def _blow_up(piece: Piece, kink: float, order: int, side: float) -> float:
    """Exponent p of ``|phi^(order)(kink + side h)| ~ h^-p`` as h -> 0 (0 when bounded)."""
    fn = piece_function(piece.expr, order)
    h = np.array(SINGULAR_STEPS)
    with np.errstate(all="ignore"):
        values = np.abs(np.asarray(fn(kink + side * h), dtype=float))
    if not np.all(np.isfinite(values)) or np.any(values == 0.0):
        return math.inf if not np.all(np.isfinite(values)) else 0.0
    p = -float(np.diff(np.log(values))[0] / np.diff(np.log(h))[0])
    return max(p, 0.0)


def _one_sided(expr: sp.Expr, kink: float) -> sp.Expr:
    return sp.N(expr.subs(X, kink), 30)


def _regularity(pieces: tuple[Piece, ...], kinks: tuple[float, ...]) -> PiecewiseInfo:
    """Jumps and blow-ups of the derivatives at the kinks, orders 0..KINK_ORDERS-1 (each
    piece differentiated once per order; the maps never need more derivatives of a kinked
    activation, and a lower ``smooth_order`` than the truth only moves derivatives onto the
    Gaussian density, which is always valid)."""
    jumps: dict[int, tuple[float, ...]] = {}
    singular: dict[int, float] = {}
    jump_order = KINK_ORDERS
    derivatives = [p.expr for p in pieces]
    for order in range(KINK_ORDERS):
        if order:
            derivatives = [sp.diff(d, X) for d in derivatives]
        per_kink = []
        for i, kink in enumerate(kinks):
            left = _one_sided(derivatives[i], kink)
            right = _one_sided(derivatives[i + 1], kink)
            if not (left.is_finite and right.is_finite):  # blows up, or sympy cannot tell
                p = max(_blow_up(pieces[i], kink, order, -1.0),
                        _blow_up(pieces[i + 1], kink, order, 1.0))
                if p > 1e-3:
                    singular[order] = max(singular.get(order, 0.0), p)
                per_kink.append(0.0)  # bounded one-sided values that sympy could not evaluate
                continue
            per_kink.append(float(right - left))
        jumps[order] = tuple(per_kink)
        if any(abs(j) > 1e-13 for j in per_kink):
            jump_order = order
            break
    smooth_order = min([jump_order, *(order - 1 for order in singular)])
    return PiecewiseInfo(pieces, kinks, smooth_order, jumps, jump_order, singular)


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
