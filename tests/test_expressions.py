"""The whitelist parser: what user text may contain, and clear errors for everything else."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from grammar import expressions
from hypothesis import example, given, settings

from kernelshape.engine.activations import activation, checked_sympy
from kernelshape.engine.expression import MAX_TEXT_LENGTH, parse
from kernelshape.engine.ops import OPS
from kernelshape.engine.symbolic import X


def parse_expression(text: str) -> sp.Expr:
    """The checked sympy form of ``text`` (what the engine works with)."""
    return checked_sympy(parse(text), text)

ALLOWED = "allowed: numbers, the variable x"

# (text, words the message must contain): syntax-level problems name the offending piece and
# list the grammar; semantic problems name the failure and the requirement.
SYNTAX_ERRORS = [
    ("foo(x)", ["unknown function 'foo'"]),
    ("y + x", ["unknown name 'y'"]),
    ("x * z", ["unknown name 'z'"]),
    ("x +* 2", ["syntax error"]),
    ("x; x", ["syntax error"]),
    ("tanh(x", ["syntax error"]),
    ("__import__('os')", ["unknown function '__import__'"]),
    ("__import__('os').system('ls')", ["only plain function calls"]),
    ("x.real", ["Attribute is not allowed"]),
    ("x.__class__", ["Attribute is not allowed"]),
    ("(lambda x: x)(x)", ["only plain function calls"]),
    ("lambda x: x", ["Lambda is not allowed"]),
    ("[x for x in (1, 2)]", ["ListComp is not allowed"]),
    ("(t for t in x)", ["GeneratorExp is not allowed"]),
    ("x if x > 0 else 0", ["IfExp is not allowed"]),
    ("x == 1", ["Compare is not allowed"]),
    ("x[0]", ["Subscript is not allowed"]),
    ("x, x", ["Tuple is not allowed"]),
    ("x @ x", ["MatMult is not allowed"]),
    ("x // 2", ["FloorDiv is not allowed"]),
    ("x % 2", ["Mod is not allowed"]),
    ("'a' * x", ["not a real number"]),
    ("True * x", ["not a real number"]),
    ("x + nan", ["unknown name 'nan'"]),
    ("x * inf", ["unknown name 'inf'"]),
    ("1e400 * x", ["infinite or NaN constant"]),
    ("float('nan') * x", ["unknown function 'float'"]),
    ("x / 0", ["division by zero"]),
    ("x ** 100", ["exponents larger than 64"]),
    ("max(x)", ["max() takes 2 or more argument(s), got 1"]),
    ("leaky_relu(x, x)", ["argument 2 of leaky_relu() must be a constant"]),
    ("log(-1) + x", ["a constant part is undefined"]),
    ("tanh(x, 2)", ["tanh() takes 1 argument(s), got 2"]),
    ("tanh(x=1)", ["keyword arguments are not allowed"]),
    ("tanh", []),  # a built-in name: accepted (see test_builtin_names_win)
    ("", ["empty"]),
    ("   ", ["empty"]),
    ("x + " * 200 + "x", [f"longer than {MAX_TEXT_LENGTH} characters"]),
]

SEMANTIC_ERRORS = [
    ("exp(x**2)", ["grows too fast", "second moment"]),
    ("exp(x**2/4)", ["grows too fast"]),
    ("-x**2*exp(x**2/3)", ["grows too fast"]),
    ("sqrt(x)", ["not finite and real", "real-valued on the whole real line"]),
    ("x**0.5", ["not finite and real"]),
    ("log(x)", ["not finite and real"]),
    ("log(x - 10)", ["not finite and real"]),
    ("1/x", ["not finite and real", "x=0"]),
    ("x**x", ["not finite and real"]),
    ("exp(exp(x))", ["not finite and real"]),
]


@pytest.mark.parametrize(("text", "words"), [e for e in SYNTAX_ERRORS if e[1]])
def test_syntax_errors_name_the_problem_and_the_grammar(text: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        activation(text)
    message = str(info.value)
    for word in words:
        assert word in message
    assert ALLOWED in message
    for name in ("tanh", "softplus", "erf", "max"):  # the function list is spelled out
        assert name in message


@pytest.mark.parametrize(("text", "words"), SEMANTIC_ERRORS)
def test_semantic_errors_name_the_problem_and_the_requirement(text: str,
                                                              words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        activation(text)
    message = str(info.value)
    for word in words:
        assert word in message
    assert repr(text.strip()) in message or text.strip() in message


def test_unknown_identifier_lists_builtins() -> None:
    with pytest.raises(ValueError, match="unknown activation 'swishy'.*built-ins: abs"):
        activation("swishy")


def test_builtin_names_win() -> None:
    assert activation("tanh").builtin
    assert activation("silu") is activation("swish")


def test_parser_never_evaluates_text(tmp_path, monkeypatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.chdir(tmp_path)
    for text in ("__import__('pathlib').Path('pwned').touch()",
                 "open('pwned', 'w')", "exec('x')", "eval('x')", "globals()"):
        with pytest.raises(ValueError):
            parse_expression(text)
    assert not marker.exists()


def test_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_expression(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_whitelisted_function_parses(name: str) -> None:
    arity = OPS[name].arity or 3  # n-ary max / min: three arguments
    text = f"{name}({', '.join(['x'] + ['0.5'] * (arity - 1))})"
    expr = parse_expression(text)
    assert expr.free_symbols <= {X}


def test_constants_and_precedence() -> None:
    expr = parse_expression("-x**2 + 2*pi - e/2")
    assert sp.simplify(expr - (-X**2 + 2 * sp.pi - sp.E / 2)) == 0
    assert float(parse_expression("2**-1")) == 0.5


def test_expression_activation_matches_text() -> None:
    act = activation("x*tanh(log(1+exp(x)))")  # mish, written out
    mish = activation("mish")
    x = np.linspace(-30.0, 30.0, 601)
    np.testing.assert_allclose(act(x), mish(x), rtol=1e-14, atol=1e-300)
    assert np.all(np.isfinite(act(np.array([-800.0, 800.0]))))  # stable rewrite of log(1+exp)


# --- random expressions from the grammar -------------------------------------------------------

LEAVES = ["x", "0.5", "2", "pi", "e", "1.25e-1"]
UNARY = ["exp", "log1p", "sqrt", "tanh", "sinh", "cosh", "sin", "cos", "atan", "arctan", "asinh",
         "erf", "erfc", "abs", "sign", "step", "relu", "sigmoid", "softplus", "log", "-"]
BINARY = ["+", "-", "*", "/", "**", "max", "min"]


@settings(max_examples=60, deadline=None)
@given(expressions(2, LEAVES, UNARY, BINARY))
@example("(x)/(step(x))")  # a piece of the lowering divides by zero
@example("(x)**(-(0.5))")
def test_grammar_strings_parse_or_fail_cleanly(text: str) -> None:
    """Any grammar string either parses to a real expression in x or raises ValueError."""
    try:
        expr = parse_expression(text)
    except ValueError as exc:
        assert "invalid activation expression" in str(exc)
        return
    assert expr.free_symbols <= {X}
    assert not expr.has(sp.I, sp.nan, sp.zoo)
