"""Activation expressions: one whitelist parser and the typed tree every consumer reads.

Text in ``x`` is parsed with :mod:`ast` and every node is checked against a whitelist; nothing
is ever ``eval``-ed. The result is a small typed tree (:data:`Node`), lowered

* to sympy for the engine (:func:`kernelshape.engine.symbolic.to_sympy`),
* to Python source for the exported files (:func:`to_source`),
* to a function of arrays for any framework (:func:`evaluate` with a runtime's ops).

The language: numbers, the variable ``x``, the constants ``pi`` and ``e``, ``+ - * / **``,
unary minus, and calls of the ops in :data:`kernelshape.engine.ops.OPS`. ``log(1 + exp(u))``
and ``1 / (1 + exp(-u))`` are rewritten to ``softplus(u)`` and ``sigmoid(u)`` (the same
function, without overflow). Limits: :data:`MAX_TEXT_LENGTH` characters, nesting depth
:data:`MAX_DEPTH`, constant exponents of magnitude at most :data:`MAX_EXPONENT`.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kernelshape.engine.ops import ALIASES, CONSTANTS, OPS, op_name

MAX_TEXT_LENGTH = 500
MAX_DEPTH = 40
MAX_EXPONENT = 64


@dataclass(frozen=True)
class Num:
    """A real constant. ``text`` is the decimal literal as written (exact in sympy); None for
    values that arrive as floats (parameters, folded constants)."""

    value: float
    text: str | None = None


@dataclass(frozen=True)
class Const:
    """A named constant (``pi``, ``e``): exact in sympy."""

    name: str


@dataclass(frozen=True)
class Var:
    """The variable ``x``."""


@dataclass(frozen=True)
class Neg:
    operand: Node


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / **
    left: Node
    right: Node


@dataclass(frozen=True)
class Call:
    name: str  # a key of OPS
    args: tuple[Node, ...]


Node = Num | Const | Var | Neg | BinOp | Call

X = Var()
_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_DECIMAL = re.compile(r"^[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?$|^\.[0-9]+([eE][+-]?[0-9]+)?$")


def allowed_description() -> str:
    """One line saying what an expression may contain (in every parse error)."""
    names = ", ".join(sorted(OPS))
    return ("allowed: numbers, the variable x, + - * / ** and parentheses, the constants pi and "
            f"e, and the functions {names}")


class _Parser:
    def __init__(self, text: str, params: Mapping[str, float]) -> None:
        self.text = text
        self.params = params

    def error(self, problem: str) -> ValueError:
        shown = self.text if len(self.text) <= 80 else self.text[:77] + "..."
        return ValueError(f"invalid activation expression {shown!r}: {problem} "
                          f"({allowed_description()})")

    def number(self, node: ast.Constant) -> Num:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(f"constant {value!r} is not a real number")
        try:
            number = float(value)
        except OverflowError:
            raise self.error("it contains an infinite or NaN constant (a number too large "
                             "for float64)") from None
        if not math.isfinite(number):
            raise self.error("it contains an infinite or NaN constant")
        source = ast.get_source_segment(self.text, node) or ""
        text = source if _DECIMAL.match(source) else (str(value) if isinstance(value, int)
                                                       else repr(number))
        return Num(number, text)

    def convert(self, node: ast.AST, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise self.error(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, ast.Constant):
            return self.number(node)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.USub | ast.UAdd):
                raise self.error(f"unary operator {type(node.op).__name__} is not allowed")
            operand = self.convert(node.operand, depth + 1)
            return Neg(operand) if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.BitXor):
                raise self.error("'^' is not a power in Python syntax: use **")
            op = _BINOPS.get(type(node.op))
            if op is None:
                raise self.error(f"operator {type(node.op).__name__} is not allowed")
            left = self.convert(node.left, depth + 1)
            right = self.convert(node.right, depth + 1)
            return self.binop(op, left, right)
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        raise self.error(f"{type(node).__name__} is not allowed")

    def name(self, name: str) -> Node:
        if name == "x":
            return X
        if name in self.params:
            return Num(float(self.params[name]))
        if name in CONSTANTS:
            return Const(name)
        if op_name(name) is not None:
            raise self.error(f"function {name!r} used without arguments: call it, e.g. "
                             f"{name}(x)")
        raise self.error(f"unknown name {name!r}")

    def binop(self, op: str, left: Node, right: Node) -> Node:
        if op == "/" and not depends_on_x(right) and _constant_value(right, self) == 0.0:
            raise self.error("division by zero")
        if op == "**" and not depends_on_x(right):
            exponent = _constant_value(right, self)
            if abs(exponent) > MAX_EXPONENT:
                raise self.error(f"exponents larger than {MAX_EXPONENT} in magnitude are not "
                                 "supported")
        return _stabilize(BinOp(op, left, right))

    def call(self, node: ast.Call, depth: int) -> Node:
        if not isinstance(node.func, ast.Name):
            raise self.error("only plain function calls like tanh(x) are allowed")
        name = op_name(node.func.id)
        if name is None:
            raise self.error(f"unknown function {node.func.id!r}")
        if node.keywords:
            raise self.error(f"keyword arguments are not allowed in {name}()")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise self.error(f"{name}() takes positional arguments only")
        op = OPS[name]
        count = len(node.args)
        if (op.arity is None and count < 2) or (op.arity is not None and count != op.arity):
            wanted = "2 or more" if op.arity is None else str(op.arity)
            raise self.error(f"{name}() takes {wanted} argument(s), got {count}")
        args = tuple(self.convert(a, depth + 1) for a in node.args)
        for i in op.constant_args:
            if depends_on_x(args[i]):
                raise self.error(f"argument {i + 1} of {name}() must be a constant")
        return _stabilize(Call(name, args))


def parse(text: str, params: Mapping[str, float] | None = None) -> Node:
    """The tree of ``text``, an expression in ``x``; ``params`` names constants the text may
    use (built-in formulas: ``negative_slope``, ``alpha``). Raises ValueError naming the
    problem and what is allowed, TypeError for a non-string."""
    if not isinstance(text, str):
        raise TypeError(f"activation expression must be a string, got {type(text).__name__}")
    parser = _Parser(text.strip(), dict(params or {}))
    if not parser.text:
        raise parser.error("the expression is empty")
    if len(parser.text) > MAX_TEXT_LENGTH:
        parser.text = parser.text[:40]
        raise parser.error(f"longer than {MAX_TEXT_LENGTH} characters")
    try:
        tree = ast.parse(parser.text, mode="eval")
    except SyntaxError as exc:
        raise parser.error(f"syntax error at column {exc.offset}") from None
    except (RecursionError, MemoryError):
        raise parser.error(f"nested deeper than {MAX_DEPTH} levels") from None
    root = parser.convert(tree.body, 0)
    _constant_parts_defined(root, parser)
    return root


# --------------------------------------------------------------------------- tree queries

def depends_on_x(node: Node) -> bool:
    if isinstance(node, Var):
        return True
    if isinstance(node, Num | Const):
        return False
    if isinstance(node, Neg):
        return depends_on_x(node.operand)
    if isinstance(node, BinOp):
        return depends_on_x(node.left) or depends_on_x(node.right)
    return any(depends_on_x(a) for a in node.args)


def ops_used(node: Node) -> set[str]:
    """Names of the ops ``node`` calls."""
    if isinstance(node, Num | Const | Var):
        return set()
    if isinstance(node, Neg):
        return ops_used(node.operand)
    if isinstance(node, BinOp):
        return ops_used(node.left) | ops_used(node.right)
    out = {node.name}
    for a in node.args:
        out |= ops_used(a)
    return out


def _arith(op: str, a: float, b: float) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a / b
    return math.pow(a, b)


def _constant_value(node: Node, parser: _Parser | None = None) -> float:
    """Value of an x-free subtree with the ops' float functions (ValueError if undefined)."""
    try:
        value = evaluate(node, 0.0, {name: op.fold for name, op in OPS.items()})
    except (ValueError, ZeroDivisionError, OverflowError) as exc:
        why = f"a constant part is undefined ({exc})"
        raise (parser.error(why) if parser else ValueError(why)) from None
    value = float(value)
    if not math.isfinite(value):
        why = "a constant part evaluates to an infinite or NaN number"
        raise parser.error(why) if parser else ValueError(why)
    return value


def _constant_parts_defined(node: Node, parser: _Parser) -> None:
    """Every maximal x-free subtree has a finite value."""
    if not depends_on_x(node):
        _constant_value(node, parser)
        return
    children: tuple[Node, ...] = ()
    if isinstance(node, Neg):
        children = (node.operand,)
    elif isinstance(node, BinOp):
        children = (node.left, node.right)
    elif isinstance(node, Call):
        children = node.args
    for child in children:
        _constant_parts_defined(child, parser)


def _is_one(node: Node) -> bool:
    return isinstance(node, Num) and node.value == 1.0


def _stabilize(node: Node) -> Node:
    """``log(1 + exp(u))`` -> ``softplus(u)``, ``log1p(exp(u))`` -> ``softplus(u)``,
    ``1 / (1 + exp(-u))`` -> ``sigmoid(u)`` (either order of the sum)."""
    if isinstance(node, BinOp) and node.op == "/" and _is_one(node.left):
        den = node.right
        if isinstance(den, BinOp) and den.op == "+":
            for one, other in ((den.left, den.right), (den.right, den.left)):
                if _is_one(one) and isinstance(other, Call) and other.name == "exp":
                    arg = other.args[0]
                    return Call("sigmoid", (arg.operand if isinstance(arg, Neg) else Neg(arg),))
    if isinstance(node, Call) and node.name == "log1p":
        arg = node.args[0]
        if isinstance(arg, Call) and arg.name == "exp":
            return Call("softplus", arg.args)
    if isinstance(node, Call) and node.name == "log":
        arg = node.args[0]
        if isinstance(arg, BinOp) and arg.op == "+":
            for one, other in ((arg.left, arg.right), (arg.right, arg.left)):
                if _is_one(one) and isinstance(other, Call) and other.name == "exp":
                    return Call("softplus", other.args)
    return node


def fold(node: Node) -> Node:
    """``node`` with every x-free subtree replaced by its float value (for runtimes)."""
    if not depends_on_x(node):
        return Num(_constant_value(node))
    if isinstance(node, Neg):
        return Neg(fold(node.operand))
    if isinstance(node, BinOp):
        return BinOp(node.op, fold(node.left), fold(node.right))
    if isinstance(node, Call):
        return Call(node.name, tuple(fold(a) for a in node.args))
    return node


# --------------------------------------------------------------------------- lowering

def evaluate(node: Node, x: Any, ops: Mapping[str, Callable[..., Any]]) -> Any:
    """The tree at ``x`` with ``ops[name]`` for every call (a runtime's ops, or floats);
    calls whose arguments are all Python floats use the op table's float function.
    Calls of ``max``/``min`` with more than two arguments nest pairwise."""
    if isinstance(node, Var):
        return x
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Const):
        return CONSTANTS[node.name]
    if isinstance(node, Neg):
        return -evaluate(node.operand, x, ops)
    if isinstance(node, BinOp):
        a, b = evaluate(node.left, x, ops), evaluate(node.right, x, ops)
        if isinstance(a, float) and isinstance(b, float):
            return _arith(node.op, a, b)
        if node.op == "+":
            return a + b
        if node.op == "-":
            return a - b
        if node.op == "*":
            return a * b
        if node.op == "/":
            return a / b
        return a**b
    name = node.name

    def call(*values: Any) -> Any:  # framework ops need arrays: all-float calls use floats
        constant = all(isinstance(v, float) for v in values)
        return (OPS[name].fold if constant else ops[name])(*values)

    args = [evaluate(a, x, ops) for a in node.args]
    while len(args) > 2:
        args = [*args[:-2], call(args[-2], args[-1])]
    return call(*args)


_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "neg": 3, "**": 4}


def _number_text(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _precedence(node: Node) -> int:
    if isinstance(node, BinOp):
        return _PREC[node.op]
    if isinstance(node, Neg) or (isinstance(node, Num) and math.copysign(1.0, node.value) < 0):
        return _PREC["neg"]
    return 5


def to_source(node: Node, prefix: str = "_f_") -> str:
    """Python source of ``node``; calls become ``{prefix}{name}(...)``, constants ``math.pi``
    (``prefix=""`` gives the readable text). Fold first for runtimes (:func:`fold`)."""
    if isinstance(node, Var):
        return "x"
    if isinstance(node, Num):
        return _number_text(node.value)
    if isinstance(node, Const):
        return node.name if not prefix else f"math.{'pi' if node.name == 'pi' else 'e'}"
    if isinstance(node, Neg):
        inner = to_source(node.operand, prefix)
        return f"-({inner})" if _precedence(node.operand) < _PREC["neg"] else f"-{inner}"
    if isinstance(node, BinOp):
        p = _PREC[node.op]
        left, right = to_source(node.left, prefix), to_source(node.right, prefix)
        if _precedence(node.left) < p or (node.op == "**" and _precedence(node.left) <= p):
            left = f"({left})"
        if _precedence(node.right) <= p:  # keeps the evaluation order of the source
            right = f"({right})"
        return f"{left}**{right}" if node.op == "**" else f"{left} {node.op} {right}"
    args = list(node.args)
    if len(args) > 2:  # n-ary max / min nest pairwise, as evaluate does
        return to_source(Call(node.name, (*args[:-2], Call(node.name, tuple(args[-2:])))),
                         prefix)
    return f"{prefix}{node.name}({', '.join(to_source(a, prefix) for a in args)})"


__all__ = ["ALIASES", "MAX_DEPTH", "MAX_EXPONENT", "MAX_TEXT_LENGTH", "BinOp", "Call", "Const",
           "Neg", "Node", "Num", "Var", "allowed_description", "depends_on_x", "evaluate",
           "fold", "ops_used", "parse", "to_source"]
