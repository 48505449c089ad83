"""The op table: every function an activation expression may call, defined once.

Each op has an arity, its value on Python floats (``fold``: constant folding and the scalar
reference the runtimes are tested against) and a one-line meaning. The engine lowers ops to
sympy (:data:`kernelshape.engine.symbolic.SYMPY_OPS`); every framework runtime in
``kernelshape/runtime/`` defines ``_f_<name>`` for each op. A test checks all three agree.

Conventions at kinks: ``sign(0) = 1``, ``step(0) = 1``; ``leaky_relu(x, a)`` and ``elu(x, a)``
take a constant second argument (the slope / the negative-side scale).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple


class Op(NamedTuple):
    """One function of the expression language."""

    arity: int | None  # number of arguments; None: two or more
    fold: Callable[..., float]  # the op on Python floats (math module)
    meaning: str
    constant_args: tuple[int, ...] = ()  # argument positions that must not depend on x


def _sigmoid(v: float) -> float:
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


def _softplus(v: float) -> float:
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


OPS: dict[str, Op] = {
    "exp": Op(1, math.exp, "exp(u)"),
    "log": Op(1, math.log, "natural logarithm"),
    "log1p": Op(1, math.log1p, "log(1 + u)"),
    "expm1": Op(1, math.expm1, "exp(u) - 1"),
    "sqrt": Op(1, math.sqrt, "square root"),
    "tanh": Op(1, math.tanh, "hyperbolic tangent"),
    "sinh": Op(1, math.sinh, "hyperbolic sine"),
    "cosh": Op(1, math.cosh, "hyperbolic cosine"),
    "sin": Op(1, math.sin, "sine"),
    "cos": Op(1, math.cos, "cosine"),
    "atan": Op(1, math.atan, "arctangent"),
    "asinh": Op(1, math.asinh, "inverse hyperbolic sine"),
    "erf": Op(1, math.erf, "error function"),
    "erfc": Op(1, math.erfc, "1 - erf(u)"),
    "abs": Op(1, abs, "|u|"),
    "sign": Op(1, lambda v: 1.0 if v >= 0 else -1.0, "1 if u >= 0 else -1"),
    "step": Op(1, lambda v: 1.0 if v >= 0 else 0.0, "1 if u >= 0 else 0"),
    "relu": Op(1, lambda v: max(v, 0.0), "max(u, 0)"),
    "sigmoid": Op(1, _sigmoid, "1 / (1 + exp(-u))"),
    "softplus": Op(1, _softplus, "log(1 + exp(u))"),
    "max": Op(None, max, "largest argument"),
    "min": Op(None, min, "smallest argument"),
    "leaky_relu": Op(2, lambda v, a: v if v >= 0 else a * v, "u if u >= 0 else a u",
                     constant_args=(1,)),
    "elu": Op(2, lambda v, a: v if v > 0 else a * math.expm1(v), "u if u > 0 else a (exp(u) - 1)",
              constant_args=(1,)),
}

#: other spellings accepted for ops (numpy's and sympy's names)
ALIASES: dict[str, str] = {"arctan": "atan", "arcsinh": "asinh", "Abs": "abs", "Max": "max",
                           "Min": "min"}

#: named constants
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "E": math.e}


def op_name(name: str) -> str | None:
    """The op ``name`` stands for (aliases resolved), or None."""
    name = ALIASES.get(name, name)
    return name if name in OPS else None
