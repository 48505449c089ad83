"""The built-in activations, defined once: formula, display text and parameters.

A formula is written in the expression language (:mod:`kernelshape.engine.expression`) and may
use its parameters by name. The engine lowers it to sympy, the exporters and the JAX trainer to
framework code, so every consumer computes the same function.
This module needs no sympy: the exporter reads it directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from kernelshape.engine.expression import Node, depends_on_x, parse

SELU_SCALE = "1.0507009873554804934193349852946"
SELU_ALPHA = "1.6732632423543772848170429916717"


@dataclass(frozen=True)
class Builtin:
    """``formula`` in the expression language, ``display`` for people, parameter defaults."""

    formula: str
    display: str
    params: Mapping[str, float] = field(default_factory=dict)


BUILTINS: dict[str, Builtin] = {
    "identity": Builtin("x", "x"),
    "relu": Builtin("relu(x)", "max(x, 0)"),
    "leaky_relu": Builtin("leaky_relu(x, negative_slope)", "x if x >= 0 else negative_slope * x",
                          {"negative_slope": 0.01}),
    "abs": Builtin("abs(x)", "|x|"),
    "step": Builtin("step(x)", "1 if x >= 0 else 0"),
    "sign": Builtin("sign(x)", "sign(x)"),
    "tanh": Builtin("tanh(x)", "tanh(x)"),
    "sigmoid": Builtin("sigmoid(x)", "1 / (1 + exp(-x))"),
    "erf": Builtin("erf(x)", "erf(x)"),
    "softplus": Builtin("softplus(x)", "log(1 + exp(x))"),
    "elu": Builtin("elu(x, alpha)", "x if x >= 0 else alpha * (exp(x) - 1)", {"alpha": 1.0}),
    "selu": Builtin(f"{SELU_SCALE} * elu(x, {SELU_ALPHA})",
                    "scale * elu(x, alpha), dks constants"),
    "swish": Builtin("x * sigmoid(x)", "x * sigmoid(x)"),
    # tanh-approximate GELU 0.5 x (1 + tanh(t)) = x sigmoid(2 t): no cancellation as x -> -inf
    "gelu": Builtin("x * sigmoid(2 * sqrt(2 / pi) * (x + 0.044715 * x**3))",
                    "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))"),
    "gelu_exact": Builtin("0.5 * x * erfc(-x / sqrt(2))", "x * Phi(x)"),
    "mish": Builtin("x * tanh(softplus(x))", "x * tanh(softplus(x))"),
    "bentid": Builtin("(sqrt(x**2 + 1) - 1) / 2 + x", "(sqrt(x^2 + 1) - 1) / 2 + x"),
    "atan": Builtin("atan(x)", "arctan(x)"),
    "asinh": Builtin("asinh(x)", "arcsinh(x)"),
    "softsign": Builtin("x / (1 + abs(x))", "x / (1 + |x|)"),
    "square": Builtin("x**2", "x^2"),
    "sin": Builtin("sin(x)", "sin(x)"),
    "cos": Builtin("cos(x)", "cos(x)"),
    "gaussian": Builtin("exp(-x**2 / 2)", "exp(-x^2 / 2)"),
    "exp": Builtin("exp(x)", "exp(x)"),
}

#: other names of built-ins
ALIASES: dict[str, str] = {"silu": "swish", "linear": "identity", "lrelu": "leaky_relu",
                           "arctan": "atan"}


def builtin_name(name: str) -> str | None:
    """The built-in ``name`` stands for (aliases resolved, whitespace stripped), or None."""
    name = name.strip()
    name = ALIASES.get(name, name)
    return name if name in BUILTINS else None


def list_builtins() -> list[str]:
    """Names of the built-in activations (aliases not included)."""
    return sorted(BUILTINS)


def check_params(name: str, params: Mapping[str, object]) -> dict[str, float]:
    """The built-in's parameters: defaults overridden by ``params`` (finite numbers only)."""
    defaults = BUILTINS[name].params
    unknown = set(params) - set(defaults)
    if unknown:
        what = ", ".join(sorted(defaults)) or "none"
        raise ValueError(f"activation {name!r} has no parameter(s) "
                         f"{', '.join(sorted(map(str, unknown)))}; its parameters: {what}")
    merged: dict[str, float] = {}
    for key, value in {**defaults, **params}.items():
        if isinstance(value, bool) or not isinstance(value, int | float) and not hasattr(
                value, "__float__"):
            raise ValueError(f"parameter {key} of {name!r} must be a number, got {value!r}")
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number):
            raise ValueError(f"parameter {key} of {name!r} must be finite, got {value!r}")
        merged[key] = number
    return merged


def base_expression(activation: str, params: Mapping[str, object] | None = None
                    ) -> tuple[str | None, dict[str, float], Node]:
    """(built-in name or None, parameters, tree) of a built-in name or an expression in x.

    Expressions take no parameters and must depend on x; an unknown bare name is refused
    with the list of built-ins."""
    if not isinstance(activation, str):
        raise TypeError(f"activation must be a name or an expression string, got "
                        f"{activation!r}")
    params = dict(params or {})
    name = builtin_name(activation)
    if name is not None:
        merged = check_params(name, params)
        return name, merged, parse(BUILTINS[name].formula, merged)
    text = activation.strip()
    if params:
        raise ValueError(f"{text!r} is not a built-in activation, so it takes no parameters "
                         f"(built-ins: {', '.join(list_builtins())})")
    if text.isidentifier() and text != "x":
        raise ValueError(f"unknown activation {text!r}; built-ins: {', '.join(list_builtins())}"
                         "; or give an expression in x such as 'x*tanh(softplus(x))'")
    tree = parse(text)
    if not depends_on_x(tree):
        raise ValueError(f"invalid activation expression {text!r}: it does not depend on x "
                         "(an activation is a function of x)")
    return None, {}, tree
