"""Whitelist parser: activation text in ``x`` -> sympy expression.

The text is parsed with :mod:`ast` and every node is checked against a whitelist; nothing is
ever passed to ``eval``/``sympify``. Allowed: numbers, the variable ``x``, ``+ - * / **``,
unary minus, the constants ``pi`` and ``e``, and the functions in :data:`FUNCTIONS`.
"""

from __future__ import annotations

import ast
import math

import sympy as sp

from kernelshape.engine.symbolic import Sigmoid, Softplus, X

MAX_TEXT_LENGTH = 500

FUNCTIONS: dict[str, tuple[int, object]] = {
    # name: (number of arguments, builder)
    "exp": (1, sp.exp),
    "log": (1, sp.log),
    "log1p": (1, lambda a: sp.log(1 + a)),
    "sqrt": (1, sp.sqrt),
    "tanh": (1, sp.tanh),
    "sinh": (1, sp.sinh),
    "cosh": (1, sp.cosh),
    "sin": (1, sp.sin),
    "cos": (1, sp.cos),
    "atan": (1, sp.atan),
    "arctan": (1, sp.atan),
    "asinh": (1, sp.asinh),
    "arcsinh": (1, sp.asinh),
    "erf": (1, sp.erf),
    "erfc": (1, sp.erfc),
    "abs": (1, sp.Abs),
    "sign": (1, sp.sign),
    "step": (1, lambda a: sp.Piecewise((0, a < 0), (1, True))),
    "relu": (1, lambda a: sp.Max(0, a)),
    "sigmoid": (1, Sigmoid),
    "softplus": (1, Softplus),
    "max": (2, sp.Max),
    "min": (2, sp.Min),
}
CONSTANTS = {"pi": sp.pi, "e": sp.E}


def allowed_description() -> str:
    """One line saying what an expression may contain (used in every error message)."""
    names = ", ".join(sorted(FUNCTIONS))
    return (
        "allowed: numbers, the variable x, + - * / ** and parentheses, the constants pi and e, "
        f"and the functions {names}"
    )


def _error(text: str, problem: str) -> ValueError:
    return ValueError(
        f"invalid activation expression {text!r}: {problem} ({allowed_description()})"
    )


def parse_expression(text: str) -> sp.Expr:
    """Parse ``text`` (an expression in x) into a real sympy expression, or raise ValueError."""
    if not isinstance(text, str):
        raise TypeError(f"activation expression must be a string, got {type(text).__name__}")
    if not text.strip():
        raise _error(text, "the expression is empty")
    if len(text) > MAX_TEXT_LENGTH:
        raise _error(text[:40] + "...", f"longer than {MAX_TEXT_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise _error(text, f"syntax error at column {exc.offset}") from None
    expr = _build(tree.body, text)
    if not isinstance(expr, sp.Expr):
        raise _error(text, "it is not an arithmetic expression")
    if expr.free_symbols - {X}:
        names = ", ".join(sorted(str(s) for s in expr.free_symbols - {X}))
        raise _error(text, f"unknown variable(s) {names}; the only variable is x")
    if expr.has(sp.zoo, sp.oo, -sp.oo, sp.nan, sp.I):
        raise _error(text, "it contains an infinite, NaN or complex constant")
    return expr


def _number(value: object, text: str) -> sp.Expr:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _error(text, f"constant {value!r} is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise _error(text, "it contains an infinite or NaN constant")
    # decimal literals become exact rationals: kinks such as max(x, 0.3) are then located
    # exactly, and sympy's Piecewise code does not recurse forever on Float conditions
    return sp.Integer(value) if isinstance(value, int) else sp.Rational(repr(value))


def _build(node: ast.AST, text: str) -> sp.Expr:
    if isinstance(node, ast.Constant):
        return _number(node.value, text)
    if isinstance(node, ast.Name):
        if node.id == "x":
            return X
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        if node.id in FUNCTIONS:
            raise _error(text, f"function {node.id!r} used without arguments")
        raise _error(text, f"unknown name {node.id!r}")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _build(node.operand, text)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left, right = _build(node.left, text), _build(node.right, text)
        op = node.op
        if isinstance(op, ast.Add):
            return left + right
        if isinstance(op, ast.Sub):
            return left - right
        if isinstance(op, ast.Mult):
            return left * right
        if isinstance(op, ast.Div):
            if right == 0:
                raise _error(text, "division by zero")
            return left / right
        if isinstance(op, ast.Pow):
            if right.is_number and abs(float(right)) > 64:
                raise _error(text, "exponents larger than 64 in magnitude are not supported")
            return left**right
        raise _error(text, f"operator {type(op).__name__} is not allowed")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise _error(text, "only plain function calls like tanh(x) are allowed")
        name = node.func.id
        if name not in FUNCTIONS:
            raise _error(text, f"unknown function {name!r}")
        if node.keywords:
            raise _error(text, f"keyword arguments are not allowed in {name}()")
        arity, builder = FUNCTIONS[name]
        if len(node.args) != arity:
            raise _error(text, f"{name}() takes {arity} argument(s), got {len(node.args)}")
        return builder(*(_build(a, text) for a in node.args))
    raise _error(text, f"{type(node).__name__} is not allowed")
