"""Safe translation of activation formulas into framework-neutral code.

Formulas (built-in definitions and user expressions in ``x``) are parsed with Python's
``ast`` module and checked against a whitelist; nothing is ever ``eval``-ed. The result is
a small expression tree which is constant-folded (with :mod:`math`) and printed as Python
source that calls helper functions named ``_f_<name>``; every generated file defines those
helpers for its framework. At 0, ``step`` is 1 and ``sign`` is 1, as in
``kernelshape.engine.activations``.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from typing import Any

# A node is one of:  ("num", float) | ("x",) | ("neg", node) | ("bin", op, left, right)
#                    | ("call", name, (node, ...))
Node = tuple[Any, ...]

MAX_EXPRESSION_LENGTH = 2000
MAX_DEPTH = 60

#: functions a user expression may call, with their arity (None: two or more arguments)
USER_FUNCTIONS: dict[str, int | None] = {
    "exp": 1, "log": 1, "log1p": 1, "expm1": 1, "sqrt": 1, "tanh": 1, "sinh": 1, "cosh": 1,
    "sin": 1, "cos": 1, "atan": 1, "asinh": 1, "erf": 1, "erfc": 1, "abs": 1, "sign": 1,
    "step": 1, "relu": 1, "sigmoid": 1, "softplus": 1, "max": None, "min": None,
}
#: spellings produced by sympy's printer (and numpy's names) accepted as aliases
ALIASES = {"Abs": "abs", "Max": "max", "Min": "min", "arctan": "atan", "arcsinh": "asinh"}
CONSTANTS = {"pi": math.pi, "e": math.e, "E": math.e}
#: helpers only the built-in definitions use; their second argument must be a constant
INTERNAL_FUNCTIONS: dict[str, int | None] = {"leaky_relu": 2, "elu": 2}
ALL_FUNCTIONS = {**USER_FUNCTIONS, **INTERNAL_FUNCTIONS}

_SELU_SCALE = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717

#: built-in activations: formula in the internal language, and parameters with defaults
#: (``None``: required).
BUILTINS: dict[str, tuple[str, dict[str, float | None]]] = {
    "identity": ("x", {}),
    "relu": ("max(x, 0)", {}),
    "leaky_relu": ("leaky_relu(x, {negative_slope})", {"negative_slope": None}),
    "abs": ("abs(x)", {}),
    "step": ("step(x)", {}),  # 1 for x >= 0, else 0 (as kernelshape.engine.activations)
    "sign": ("sign(x)", {}),  # 1 for x >= 0, else -1 (as kernelshape.engine.activations)
    "tanh": ("tanh(x)", {}),
    "sigmoid": ("sigmoid(x)", {}),
    "erf": ("erf(x)", {}),
    "softplus": ("softplus(x)", {}),
    "elu": ("elu(x, {alpha})", {"alpha": 1.0}),
    "selu": (f"{_SELU_SCALE!r} * elu(x, {_SELU_ALPHA!r})", {}),
    "swish": ("x * sigmoid(x)", {}),
    # tanh-approximate GELU 0.5 x (1 + tanh(t)), written as x sigmoid(2 t) (no cancellation)
    "gelu": ("x * sigmoid(2 * sqrt(2 / pi) * (x + 0.044715 * x**3))", {}),
    "gelu_exact": ("0.5 * x * erfc(-x / sqrt(2))", {}),
    "mish": ("x * tanh(softplus(x))", {}),
    "bentid": ("(sqrt(x**2 + 1) - 1) / 2 + x", {}),
    "atan": ("atan(x)", {}),
    "asinh": ("asinh(x)", {}),
    "softsign": ("x / (1 + abs(x))", {}),
    "square": ("x**2", {}),
    "sin": ("sin(x)", {}),
    "cos": ("cos(x)", {}),
    "gaussian": ("exp(-x**2 / 2)", {}),
    "exp": ("exp(x)", {}),
}

#: other names of built-ins (as accepted by kernelshape.engine.activations)
BUILTIN_ALIASES = {"silu": "swish", "linear": "identity", "lrelu": "leaky_relu",
                   "arctan": "atan"}

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}


def _allowed_names() -> str:
    return ", ".join(["x", *CONSTANTS, *USER_FUNCTIONS, *ALIASES])


def parse_formula(text: str, *, internal: bool = False) -> Node:
    """Parse ``text`` (an expression in ``x``) into a constant-folded expression tree.

    Raises ``ValueError`` for anything outside the whitelist (attribute access, subscripts,
    other names, keyword arguments, comparisons, strings, ...).
    """
    if not isinstance(text, str):
        raise ValueError(f"activation expression must be a string, got {type(text).__name__}")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ValueError(
            f"activation expression is longer than {MAX_EXPRESSION_LENGTH} characters"
        )
    if not text.strip():
        raise ValueError("activation expression is empty")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"cannot parse activation expression {text!r}: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ValueError(f"activation expression {text[:40]!r}... is nested too deeply") from None
    node = _Converter(text, internal).convert(tree.body, 0)
    if not _has_x(node):
        raise ValueError(f"activation expression {text!r} does not depend on x")
    return node


class _Converter:
    def __init__(self, text: str, internal: bool):
        self.text = text
        self.internal = internal

    def fail(self, why: str) -> ValueError:
        return ValueError(f"activation expression {self.text!r}: {why}")

    def convert(self, node: ast.AST, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise self.fail(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.fail(f"literal {value!r} is not allowed (only real numbers)")
            try:
                number = float(value)
            except OverflowError:
                raise self.fail(f"number {str(value)[:20]}... is too large") from None
            if not math.isfinite(number):
                raise self.fail(f"number {value!r} is not finite")
            return ("num", number)
        if isinstance(node, ast.Name):
            if node.id == "x":
                return ("x",)
            if node.id in CONSTANTS:
                return ("num", CONSTANTS[node.id])
            if ALIASES.get(node.id, node.id) in ALL_FUNCTIONS:
                raise self.fail(f"{node.id!r} is a function: call it, e.g. {node.id}(x)")
            raise self.fail(f"unknown name {node.id!r} (allowed: {_allowed_names()})")
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return _fold(("neg", self.convert(node.operand, depth + 1)), self)
            if isinstance(node.op, ast.UAdd):
                return self.convert(node.operand, depth + 1)
            raise self.fail(f"unary operator {type(node.op).__name__} is not allowed")
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.BitXor):
                raise self.fail("'^' is not a power in Python syntax: use **")
            op = _BINOPS.get(type(node.op))
            if op is None:
                raise self.fail(f"operator {type(node.op).__name__} is not allowed")
            left = self.convert(node.left, depth + 1)
            right = self.convert(node.right, depth + 1)
            return _simplify(_fold(("bin", op, left, right), self))
        if isinstance(node, ast.Call):
            return self.convert_call(node, depth)
        raise self.fail(f"{type(node).__name__} is not allowed in an activation expression")

    def convert_call(self, node: ast.Call, depth: int) -> Node:
        if not isinstance(node.func, ast.Name):
            raise self.fail("only calls of whitelisted functions by name are allowed")
        name = ALIASES.get(node.func.id, node.func.id)
        table = ALL_FUNCTIONS if self.internal else USER_FUNCTIONS
        if name not in table:
            raise self.fail(
                f"unknown function {node.func.id!r} (allowed: {', '.join(USER_FUNCTIONS)})"
            )
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(f"{name}() takes positional arguments only")
        arity = table[name]
        count = len(node.args)
        if (arity is None and count < 2) or (arity is not None and count != arity):
            wanted = "at least 2" if arity is None else str(arity)
            raise self.fail(f"{name}() takes {wanted} argument(s), got {count}")
        args = tuple(self.convert(a, depth + 1) for a in node.args)
        if name in INTERNAL_FUNCTIONS and arity == 2 and args[1][0] != "num":
            raise self.fail(f"the second argument of {name}() must be a constant")
        return _simplify(_fold(("call", name, args), self))


# --------------------------------------------------------------------------- folding


def _has_x(node: Node) -> bool:
    kind = node[0]
    if kind == "x":
        return True
    if kind == "num":
        return False
    if kind == "neg":
        return _has_x(node[1])
    if kind == "bin":
        return _has_x(node[2]) or _has_x(node[3])
    return any(_has_x(a) for a in node[2])


def _softplus(v: float) -> float:
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


def _sigmoid(v: float) -> float:
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


_MATH = {
    "exp": math.exp, "log": math.log, "log1p": math.log1p, "expm1": math.expm1,
    "sqrt": math.sqrt, "tanh": math.tanh, "sinh": math.sinh, "cosh": math.cosh,
    "sin": math.sin, "cos": math.cos, "atan": math.atan, "asinh": math.asinh,
    "erf": math.erf, "erfc": math.erfc, "abs": abs, "sigmoid": _sigmoid,
    "softplus": _softplus, "sign": lambda v: 1.0 if v >= 0 else -1.0,
    "step": lambda v: 1.0 if v >= 0 else 0.0, "relu": lambda v: max(v, 0.0),
    "max": max, "min": min,
}


def _fold(node: Node, conv: _Converter) -> Node:
    """Evaluate ``node`` with :mod:`math` when all its operands are numbers."""
    kind = node[0]
    try:
        if kind == "neg" and node[1][0] == "num":
            return ("num", -node[1][1])
        if kind == "bin" and node[2][0] == "num" and node[3][0] == "num":
            a, b = node[2][1], node[3][1]
            op = node[1]
            value = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                     "/": lambda: a / b, "**": lambda: math.pow(a, b)}[op]()
            return _finite(value, conv)
        if kind == "call" and node[1] in _MATH and all(a[0] == "num" for a in node[2]):
            return _finite(_MATH[node[1]](*(a[1] for a in node[2])), conv)
    except (ValueError, ZeroDivisionError, OverflowError) as exc:
        raise conv.fail(f"a constant part is undefined ({exc})") from None
    return node


def _finite(value: float, conv: _Converter) -> Node:
    value = float(value)
    if not math.isfinite(value):
        raise conv.fail("a constant part evaluates to a non-finite number")
    return ("num", value)


def _simplify(node: Node) -> Node:
    """Rewrite ``log(1 + exp(u))`` as ``softplus(u)`` and ``1 / (1 + exp(-u))`` as
    ``sigmoid(u)``: the same function, without overflow for large |u|."""
    if node[0] == "bin" and node[1] == "/" and node[2] == ("num", 1.0):
        den = node[3]
        if den[0] == "bin" and den[1] == "+":
            for one, other in ((den[2], den[3]), (den[3], den[2])):
                if one == ("num", 1.0) and other[0] == "call" and other[1] == "exp":
                    arg = other[2][0]
                    return ("call", "sigmoid", (arg[1] if arg[0] == "neg" else ("neg", arg),))
    if node[0] == "call" and node[1] == "log":
        arg = node[2][0]
        if arg[0] == "bin" and arg[1] == "+":
            for one, other in ((arg[2], arg[3]), (arg[3], arg[2])):
                if one == ("num", 1.0) and other[0] == "call" and other[1] == "exp":
                    return ("call", "softplus", other[2])
    return node


# --------------------------------------------------------------------------- printing

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "neg": 3, "**": 4}


def _number_text(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _prec(node: Node) -> int:
    if node[0] == "bin":
        return _PREC[node[1]]
    if node[0] == "neg" or (node[0] == "num" and (node[1] < 0 or math.copysign(1, node[1]) < 0)):
        return _PREC["neg"]
    return 5


def render(node: Node, prefix: str = "_f_") -> str:
    """Print ``node`` as Python source; functions become ``{prefix}{name}(...)``."""
    kind = node[0]
    if kind == "x":
        return "x"
    if kind == "num":
        return _number_text(node[1])
    if kind == "neg":
        inner = render(node[1], prefix)
        return f"-({inner})" if _prec(node[1]) < _PREC["neg"] else f"-{inner}"
    if kind == "bin":
        op, left, right = node[1], node[2], node[3]
        p = _PREC[op]
        ltext, rtext = render(left, prefix), render(right, prefix)
        if _prec(left) < p or (op == "**" and _prec(left) <= p):
            ltext = f"({ltext})"
        if _prec(right) <= p:  # keeps the evaluation order of the source exactly
            rtext = f"({rtext})"
        return f"{ltext} {op} {rtext}" if op != "**" else f"{ltext}**{rtext}"
    name, args = node[1], node[2]
    if name in ("max", "min") and len(args) > 2:
        return render(("call", name, (args[0], ("call", name, args[1:]))), prefix)
    return f"{prefix}{name}({', '.join(render(a, prefix) for a in args)})"


def functions_used(node: Node) -> set[str]:
    """Names of the helper functions ``node`` calls."""
    kind = node[0]
    if kind in ("x", "num"):
        return set()
    if kind == "neg":
        return functions_used(node[1])
    if kind == "bin":
        return functions_used(node[2]) | functions_used(node[3])
    out = {node[1]}
    for a in node[2]:
        out |= functions_used(a)
    return out


# --------------------------------------------------------------------------- activations


def base_formula(activation: str, params: Mapping[str, Any], negative_slope: float | None
                 ) -> tuple[Node, str]:
    """Expression tree and a human-readable text of the base activation of an entry.

    ``activation`` is a built-in name or an expression in ``x``; ``negative_slope`` (the
    transform's, if any) overrides ``params["negative_slope"]`` for leaky_relu.
    """
    activation = BUILTIN_ALIASES.get(activation, activation)
    if activation in BUILTINS:
        template, defaults = BUILTINS[activation]
        unknown = set(params) - set(defaults)
        if unknown:
            raise ValueError(
                f"activation {activation!r}: unknown parameter(s) {sorted(unknown)} "
                f"(allowed: {sorted(defaults) or 'none'})"
            )
        values = {**defaults, **params}
        if activation == "leaky_relu" and negative_slope is not None:
            values["negative_slope"] = negative_slope
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"activation {activation!r}: parameter {key!r} must be a number,"
                                 f" got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"activation {activation!r}: parameter {key!r} is not finite")
        text = template.format(**{k: repr(float(v)) for k, v in values.items()})
        node = parse_formula(text, internal=True)
        return node, render(node, prefix="")
    if params:
        raise ValueError(
            f"activation expression {activation!r} takes no parameters, got {sorted(params)}"
        )
    if activation.isidentifier() and activation != "x":
        raise ValueError(
            f"unknown built-in activation {activation!r} (the exporter knows: "
            f"{', '.join(BUILTINS)}; or give an expression in x)"
        )
    node = parse_formula(activation, internal=False)
    return node, render(node, prefix="")
