"""Activations: the built-in library, user expressions, and the DKS/TAT ``Transform``.

Built-ins and typed expressions are expression trees (:mod:`kernelshape.engine.expression`,
built-ins defined once in :mod:`kernelshape.engine.builtins`) lowered to sympy here; numpy and
mpmath callables for any derivative order are derived from the sympy form.
A transformed activation is ``phi_hat(x) = gamma * (phi(alpha * x + beta) + delta)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import cached_property

import mpmath as mp
import numpy as np
import sympy as sp

from kernelshape.engine.builtins import BUILTINS, base_expression, builtin_name, list_builtins
from kernelshape.engine.expression import Node, allowed_description
from kernelshape.engine.symbolic import (
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
        """How many derivatives are ordinary functions (no Dirac terms)."""
        return self.info.smooth_order

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


def activation(spec: str | Activation | Callable, **params: float) -> Activation:
    """Get an activation: a built-in name, an expression in ``x``, or an Activation.

    Python callables are wrapped by :func:`kernelshape.engine.callables.from_callable`.
    """
    if isinstance(spec, Activation):
        if params:
            raise ValueError("parameters cannot be given together with an Activation object")
        return spec
    if callable(spec) and not isinstance(spec, str):
        from kernelshape.engine.callables import from_callable

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
    expr = _to_sympy(tree, spec)
    act = Activation(builtin or _normalized_text(spec), expr, merged, builtin=builtin is not None,
                     expression=tree)
    _validate(act, spec)
    _CACHE[key] = act
    return act


def _to_sympy(tree: Node, spec: str) -> sp.Expr:
    """The sympy form of a parsed activation, checked to be a real function of x."""

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
    return expr


def _normalized_text(text: str) -> str:
    return " ".join(text.split())


def _validate(act: Activation, spec: str) -> None:
    """Reject activations that are complex, undefined or whose E[phi(z)^2] diverges."""
    try:
        info = act.info
    except ValueError as exc:
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
