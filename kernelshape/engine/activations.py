"""Activations: the built-in library, user expressions, and the DKS/TAT ``Transform``.

Built-ins and typed expressions are expression trees (:mod:`kernelshape.engine.expression`,
built-ins defined once in :mod:`kernelshape.engine.builtins`) lowered to sympy here; numpy and
mpmath callables for any derivative order are derived from the sympy form.
A transformed activation is ``phi_hat(x) = gamma * (phi(alpha * x + beta) + delta)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import cached_property

import mpmath as mp
import numpy as np
import sympy as sp

from kernelshape.engine.builtins import BUILTINS, base_expression, builtin_name, list_builtins
from kernelshape.engine.callables import (
    FD_STEPS,
    STENCIL_HALF_WIDTH,
    fd_weights,
    jax_derivative,
    vectorized,
)
from kernelshape.engine.expression import Node, allowed_description
from kernelshape.engine.symbolic import (
    MAX_JUMP_ORDER,
    Piece,
    PiecewiseInfo,
    X,
    analyze,
    evaluate_pieces,
    piece_function,
    to_sympy,
)
from kernelshape.engine.transform import Transform


def list_activations() -> list[str]:
    """Names of the built-in activations (aliases not included)."""
    return list_builtins()


def builtin_formula(name: str) -> str:
    """Human-readable formula of a built-in activation."""
    return BUILTINS[builtin_name(name) or name].display


class Activation:
    """An activation phi (built-in or parsed expression) with an optional Transform.

    Calling it evaluates ``gamma * (phi(alpha*x + beta) + delta)`` elementwise (numpy).
    """

    def __init__(
        self,
        name: str,
        expr: sp.Expr,
        params: Mapping[str, float] | None = None,
        transform: Transform | None = None,
        builtin: bool = False,
        _info: PiecewiseInfo | None = None,
        *,
        expression: Node | None = None,
    ) -> None:
        self.name = name
        self.expr = expr
        self.params = dict(params or {})
        self.transform = transform or Transform()
        self.builtin = builtin
        self._info = _info
        self.expression = expression  # the tree every runtime evaluates (None: a callable)

    # --- identity -------------------------------------------------------------------------
    def _key(self) -> tuple:
        return (self.name, tuple(sorted(self.params.items())), self.transform)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Activation) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        params = "".join(f", {k}={v!r}" for k, v in self.params.items())
        t = "" if self.transform.is_identity else f", transform={self.transform}"
        return f"Activation({self.name!r}{params}{t})"

    # --- structure ------------------------------------------------------------------------
    @property
    def info(self) -> PiecewiseInfo:
        """Smooth pieces, kinks and regularity of the *base* activation."""
        if self._info is None:
            self._info = analyze(self.expr)
        return self._info

    @property
    def kinks(self) -> tuple[float, ...]:
        """Kinks of the base activation, in its own input coordinate."""
        return self.info.kinks

    @property
    def smooth_order(self) -> int:
        """How many derivatives are bounded ordinary functions (no Dirac terms, no blow-up at
        a kink): Price's formula uses up to this many derivatives of phi directly."""
        return self.info.smooth_order

    def square_integrable(self, order: int) -> bool:
        """Whether ``E[phi^(order)(a z + b)^2]`` is finite (for every a != 0, b)."""
        return self.info.square_integrable(order)

    @property
    def base(self) -> Activation:
        """The untransformed activation."""
        return Activation(self.name, self.expr, self.params, None, self.builtin, self._info,
                          expression=self.expression)

    def transformed(self, t: Transform | Mapping[str, float]) -> Activation:
        """The activation ``gamma * (self(alpha*x + beta) + delta)`` (transforms compose)."""
        if isinstance(t, Mapping):
            t = Transform(**t)
        if t.negative_slope is not None:
            if self.name != "leaky_relu":
                raise ValueError(
                    f"negative_slope applies only to leaky_relu, not to {self.name!r}"
                )
            base = activation("leaky_relu", negative_slope=t.negative_slope)
            t = replace(t, negative_slope=None)
            combined = self.transform.then(t) if not self.transform.is_identity else t
            combined = replace(combined, negative_slope=base.params["negative_slope"])
            return Activation(base.name, base.expr, base.params, combined, True, base._info,
                              expression=base.expression)
        combined = self.transform.then(t) if not self.transform.is_identity else t
        combined = replace(combined, negative_slope=self.transform.negative_slope)
        return Activation(self.name, self.expr, self.params, combined, self.builtin, self._info,
                          expression=self.expression)

    # --- evaluation -----------------------------------------------------------------------
    def base_derivative(self, x: np.ndarray, order: int = 0) -> np.ndarray:
        """``order``-th derivative (almost everywhere) of the base activation."""
        return evaluate_pieces(self.info, x, order)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.derivative(x, 0)

    def derivative(self, x: np.ndarray, order: int = 1) -> np.ndarray:
        """``order``-th derivative (a.e.) of the transformed activation:
        ``gamma * alpha**order * phi^(order)(alpha*x + beta)`` (+ gamma*delta for order 0)."""
        if not isinstance(order, int | np.integer) or order < 0:
            raise ValueError(f"derivative order must be a nonnegative integer, got {order!r}")
        t = self.transform
        x = np.asarray(x, dtype=float)
        y = self.base_derivative(t.input_scale * x + t.input_shift, int(order))
        if order == 0:
            return t.output_scale * (y + t.output_shift)
        return t.output_scale * t.input_scale**order * y

    def mp_piece_functions(self, order: int = 0) -> list[tuple[float, float, Callable]]:
        """(lo, hi, mpmath callable) per smooth piece of the base activation's derivative."""
        return [(p.lo, p.hi, piece_function(p.expr, order, "mpmath")) for p in self.info.pieces]

    def mp_base(self, x: mp.mpf, order: int = 0) -> mp.mpf:
        """Base activation (or derivative) at one mpmath point."""
        for lo, hi, fn in self.mp_piece_functions(order):
            if (x >= lo or lo == -math.inf) and x < hi:
                return fn(x)
        return self.mp_piece_functions(order)[-1][2](x)

    @cached_property
    def formula(self) -> str:
        """Readable formula of the transformed activation."""
        base = builtin_formula(self.name) if self.builtin else self.name
        if self.transform.is_identity:
            return f"phi(x) = {base}"
        t = self.transform
        return (
            f"phi_hat(x) = {t.output_scale!r} * (phi({t.input_scale!r} * x + {t.input_shift!r})"
            f" + {t.output_shift!r}),  phi(x) = {base}"
        )

    # --- serialization --------------------------------------------------------------------
    def to_dict(self) -> dict:
        d: dict = {"activation": self.name, "params": dict(self.params)}
        d["transform"] = self.transform.as_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> Activation:
        act = activation(d["activation"], **d.get("params", {}))
        t = d.get("transform")
        return act.transformed(Transform(**t)) if t else act


_CACHE: dict[tuple, Activation] = {}
_CALLABLES = itertools.count(1)  # labels of unnamed callables


def activation(spec: str | Activation | Callable, **params: float) -> Activation:
    """Get an activation: a built-in name, an expression in ``x``, or an Activation.

    Python callables are wrapped by :func:`kernelshape.engine.callables.from_callable`.
    """
    if isinstance(spec, Activation):
        if params:
            raise ValueError("parameters cannot be given together with an Activation object")
        return spec
    if callable(spec) and not isinstance(spec, str):
        return from_callable(spec, **params)
    if not isinstance(spec, str):
        raise TypeError(
            f"activation must be a name, an expression string or a callable, got {spec!r}"
        )
    name = builtin_name(spec) or spec.strip()
    key = (name, tuple(sorted(params.items())))
    if key in _CACHE:
        return _CACHE[key]
    builtin, merged, tree = base_expression(spec, params)
    expr = checked_sympy(tree, spec)
    act = Activation(builtin or _normalized_text(spec), expr, merged, builtin=builtin is not None,
                     expression=tree)
    _validate(act, spec)
    _CACHE[key] = act
    return act


MAX_CONSTANT = 1e150  # largest |number| in an expression: (1e150)^2 stays a finite float64


def checked_sympy(tree: Node, spec: str) -> sp.Expr:
    """The sympy form of a parsed activation, checked to be a real function of x.

    Refuses trees whose lowering holds an infinite, NaN or complex constant anywhere, including
    in one piece of a piecewise result (``x/step(x)``).
    """

    def invalid(problem: str) -> ValueError:
        return ValueError(f"invalid activation expression {spec.strip()!r}: {problem} "
                          f"({allowed_description()})")

    expr = to_sympy(tree)
    if not isinstance(expr, sp.Expr):
        raise invalid("it is not an arithmetic expression")
    if expr.free_symbols - {X}:
        raise invalid("unknown variable(s); the only variable is x")
    if expr.has(sp.zoo, sp.oo, -sp.oo, sp.nan, sp.I):
        raise invalid("it contains an infinite, NaN or complex constant")
    huge = [n for n in expr.atoms(sp.Number) if abs(n) > MAX_CONSTANT]
    if huge:
        raise invalid(f"the constant {float(huge[0]):.3g} is beyond what float64 maps resolve "
                      f"(|constant| <= {MAX_CONSTANT:g}, so that squared derivatives stay finite)")
    return expr


def _normalized_text(text: str) -> str:
    return " ".join(text.split())


def _validate(act: Activation, spec: str) -> None:
    """Reject activations that are complex, undefined or whose E[phi(z)^2] diverges."""
    try:
        info = act.info
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"activation {spec!r}: {exc}") from None
    grid = np.linspace(-12.0, 12.0, 481)
    with np.errstate(all="ignore"):
        values = act.base_derivative(grid)
    if not np.all(np.isfinite(values)):
        bad = grid[~np.isfinite(values)][0]
        raise ValueError(
            f"activation {spec!r} is not finite and real for every real x (e.g. at x={bad:g}); "
            "activations must be real-valued on the whole real line"
        )
    with mp.workdps(30):
        growth = []
        for z in (20, 30, -20, -30):
            value = act.mp_base(mp.mpf(z))
            if isinstance(value, mp.mpc):
                raise ValueError(f"activation {spec!r} takes complex values (at x={z})")
            magnitude = abs(value)
            growth.append(-math.inf if magnitude == 0 else float(2 * mp.log(magnitude) - z * z / 2))
    for g20, g30 in ((growth[0], growth[1]), (growth[2], growth[3])):
        if g30 > -60.0 or (g30 > g20 and g30 > -200.0):
            raise ValueError(
                f"activation {spec!r} grows too fast: its Gaussian second moment E[phi(z)^2] "
                "diverges (or is not reliably finite); activations must satisfy "
                "phi(x)^2 * exp(-x^2/2) -> 0 quickly, e.g. grow at most like exp(x^2/8)"
            )
    del info


class CallableActivation(Activation):
    """An :class:`Activation` backed by a Python callable (see the module docstring)."""
    def __init__(self, fn: Callable, name: str, kinks: Sequence[float] = (),
                 transform: Transform | None = None, smooth_order: int | None = None,
                 _derivatives: dict | None = None) -> None:
        self.fn = fn
        self._values = vectorized(fn)
        self._kink_points = tuple(sorted(float(k) for k in kinks))
        self._given_smooth_order = smooth_order
        self._derivatives = {} if _derivatives is None else _derivatives
        super().__init__(name, sp.Function(name.replace(" ", "_"))(X), {}, transform, False,
                         None)

    # identity: the callable object itself is part of the key
    def _key(self) -> tuple:
        return ("callable", id(self.fn), self.name, self._kink_points, self.transform)

    @property
    def info(self) -> PiecewiseInfo:
        if self._info is None:
            kinks = self._kink_points
            bounds = (-math.inf, *kinks, math.inf)
            pieces = tuple(Piece(lo, hi, self.expr) for lo, hi in itertools.pairwise(bounds))
            order = self._given_smooth_order
            if order is None:
                order = self._estimate_smooth_order() if kinks else MAX_JUMP_ORDER + 1
            self._info = PiecewiseInfo(pieces, kinks, order, jump_order=order)
        return self._info

    def _estimate_smooth_order(self) -> int:
        """0 if the value jumps at a kink, 1 if the slope jumps, else 2."""
        for k in self._kink_points:
            h = 1e-9 * max(1.0, abs(k))
            left, right = self._values(np.array([k - h, k + h]))
            if abs(right - left) > 1e-6 * max(1.0, abs(left), abs(right)):
                return 0
        for k in self._kink_points:
            left = self._one_sided(np.array([k - 1e-12]), 1, k, -1)[0]
            right = self._one_sided(np.array([k]), 1, k, +1)[0]
            if abs(right - left) > 1e-6 * max(1.0, abs(left), abs(right)):
                return 1
        return 2

    @property
    def base(self) -> CallableActivation:
        return CallableActivation(self.fn, self.name, self._kink_points, None,
                                  self._given_smooth_order, self._derivatives)

    def transformed(self, t: Transform | Mapping[str, float]) -> CallableActivation:
        if isinstance(t, Mapping):
            t = Transform(**t)
        if t.negative_slope is not None:
            raise ValueError("negative_slope applies only to leaky_relu, not to a callable")
        combined = self.transform.then(t) if not self.transform.is_identity else t
        combined = replace(combined, negative_slope=None)
        out = CallableActivation(self.fn, self.name, self._kink_points, combined,
                                 self._given_smooth_order, self._derivatives)
        out._info = self._info
        return out

    # --- evaluation ---------------------------------------------------------------------
    def base_derivative(self, x: np.ndarray, order: int = 0) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if order == 0:
            return self._values(x)
        if order not in self._derivatives:
            self._derivatives[order] = jax_derivative(self.fn, order) or False
        exact = self._derivatives[order]
        if exact:
            return exact(x)
        return self._finite_difference(x, order)

    def _finite_difference(self, x: np.ndarray, order: int) -> np.ndarray:
        h = FD_STEPS.get(order, 0.08)
        p = STENCIL_HALF_WIDTH
        out = np.empty(x.shape)
        near = np.zeros(x.shape, dtype=bool)
        for k in self._kink_points:
            for side, mask in ((+1, (x >= k) & (x < k + p * h)), (-1, (x < k) & (x > k - p * h))):
                mask &= ~near
                if mask.any():
                    out[mask] = self._one_sided(x[mask], order, k, side)
                    near |= mask
        far = ~near
        if far.any():
            offsets = tuple(range(-p, p + 1))
            w = fd_weights(order, offsets)
            xf = x[far]
            acc = np.zeros(xf.shape)
            for j, wj in zip(offsets, w, strict=True):
                if wj != 0.0:
                    acc += wj * self._values(xf + j * h)
            out[far] = acc / h**order
        return out

    def _one_sided(self, x: np.ndarray, order: int, kink: float, side: int) -> np.ndarray:
        """Stencil entirely on one side of ``kink`` (``side`` +1: right, -1: left)."""
        h = 0.5 * FD_STEPS.get(order, 0.08)
        n = 2 * STENCIL_HALF_WIDTH
        offsets = tuple(range(0, n + 1)) if side > 0 else tuple(range(-n, 1))
        w = fd_weights(order, offsets)
        acc = np.zeros(x.shape)
        for j, wj in zip(offsets, w, strict=True):
            acc += wj * self._values(x + j * h)
        return acc / h**order

    def mp_piece_functions(self, order: int = 0) -> list[tuple[float, float, Callable]]:
        """mpmath wrappers around the float64 callable (float64-limited precision)."""
        def fn(x: mp.mpf) -> mp.mpf:
            return mp.mpf(float(self.base_derivative(np.array([float(x)]), order)[0]))

        return [(p.lo, p.hi, fn) for p in self.info.pieces]

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["callable"] = getattr(self.fn, "__qualname__", repr(self.fn))
        return d


def from_callable(fn: Callable, name: str | None = None, kinks: Sequence[float] = (),
                  smooth_order: int | None = None) -> CallableActivation:
    """Wrap a Python callable ``fn(x)`` (numpy-vectorized or scalar) as an activation.

    ``kinks``: points where ``fn`` is not smooth (the pieces between them must be analytic);
    ``smooth_order``: how many derivatives are ordinary functions at the kinks (estimated if
    omitted). Raises ValueError if ``fn`` is not real and finite or grows too fast for
    ``E[fn(z)^2]`` to be finite.
    """
    if not callable(fn):
        raise TypeError(f"expected a callable, got {fn!r}")
    label = name or getattr(fn, "__name__", "callable")
    if label == "<lambda>":
        label = "lambda"
    label = f"callable:{label}#{next(_CALLABLES)}" if name is None else name
    act = CallableActivation(fn, label, kinks, None, smooth_order)
    grid = np.linspace(-12.0, 12.0, 481)
    try:
        values = act.base_derivative(grid)
    except Exception as exc:  # noqa: BLE001 - report any failure of the user's function
        raise ValueError(f"activation callable {label!r} failed on a float array: {exc}") from exc
    if not np.all(np.isfinite(values)):
        bad = grid[~np.isfinite(values)][0]
        raise ValueError(f"activation callable {label!r} is not finite and real for every real "
                         f"x (e.g. at x={bad:g})")
    with np.errstate(all="ignore"):
        far = act.base_derivative(np.array([20.0, 30.0, -20.0, -30.0]))
        growth = 2 * np.log(np.abs(far)) - np.array([20.0, 30.0, 20.0, 30.0]) ** 2 / 2
    if np.any(np.isnan(far)):
        raise ValueError(f"activation callable {label!r} returns NaN at |x| = 20 or 30")
    for g20, g30 in ((growth[0], growth[1]), (growth[2], growth[3])):
        if g30 > -60.0 or (g30 > g20 and g30 > -200.0):
            raise ValueError(
                f"activation callable {label!r} grows too fast: its Gaussian second moment "
                "E[phi(z)^2] diverges (or is not reliably finite)")
    return act
