"""One activation vocabulary: every op and every built-in computes the same function in the
engine (sympy pieces), in the float reference (the op table) and in every framework runtime
(numpy, JAX, PyTorch, TensorFlow where installed); what one part accepts, all accept."""

from __future__ import annotations

import ast
import importlib
from importlib import resources

import numpy as np
import pytest
from grammar import expressions
from hypothesis import given, settings

from kernelshape.engine.activations import activation
from kernelshape.engine.builtins import BUILTINS
from kernelshape.engine.expression import Call, Num, X, evaluate, fold, parse
from kernelshape.engine.ops import OPS
from kernelshape.engine.symbolic import SYMPY_OPS, analyze, evaluate_pieces, to_sympy
from kernelshape.export import FRAMEWORKS, export

RUNTIMES = tuple(FRAMEWORKS)

# x values inside each op's domain (kinks at 0 included exactly)
GRID = np.concatenate([np.linspace(-3.0, 3.0, 61), [0.0, -0.0, 1e-300, -1e-300]])
POSITIVE = np.linspace(0.05, 4.0, 40)
DOMAIN = {"log": POSITIVE, "sqrt": POSITIVE, "log1p": POSITIVE - 0.9}


def _runtime_text(name: str) -> str:
    return resources.files("kernelshape.runtime").joinpath(f"{name}.py").read_text("utf-8")


def _runtime(name: str):
    """(module, to_numpy, from_numpy) of a runtime whose framework is installed, float64."""
    if name == "numpy":
        mod = importlib.import_module("kernelshape.runtime.numpy")
        return mod, np.asarray, np.asarray
    if name == "jax":
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)
        mod = importlib.import_module("kernelshape.runtime.jax")
        return mod, np.asarray, jax.numpy.asarray
    if name == "pytorch":
        torch = pytest.importorskip("torch")
        mod = importlib.import_module("kernelshape.runtime.pytorch")
        return mod, lambda t: t.detach().numpy(), torch.from_numpy
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed")
    mod = importlib.import_module("kernelshape.runtime.tensorflow")
    return mod, lambda t: np.asarray(t), lambda a: tf.constant(a, dtype=tf.float64)


def _call(name: str, arity: int | None) -> Call:
    extra = {2: (Num(0.3),), None: (Num(0.25), Num(-0.5))}.get(arity, ())
    return Call(name, (X, *extra))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_op_is_defined_once_in_every_runtime(runtime: str) -> None:
    """Read as text (no framework import): exactly one ``_f_<op>`` per op (``OPS`` collects
    them), and the sympy lowering covers the same ops."""
    tree = ast.parse(_runtime_text(runtime))
    helpers = [n.name[3:] for n in tree.body if isinstance(n, ast.FunctionDef)
               and n.name.startswith("_f_")]
    assert sorted(helpers) == sorted(OPS)
    assert set(SYMPY_OPS) == set(OPS)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("op", sorted(OPS))
def test_op_values_agree(op: str, runtime: str) -> None:
    mod, to_np, from_np = _runtime(runtime)
    node = _call(op, OPS[op].arity)
    x = DOMAIN.get(op, GRID)
    reference = np.array([evaluate(node, float(v), {k: o.fold for k, o in OPS.items()})
                          for v in x])
    engine = evaluate_pieces(analyze(to_sympy(node)), x)
    got = to_np(evaluate(node, from_np(x.copy()), mod.OPS))
    np.testing.assert_allclose(engine, reference, rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(got, reference, rtol=1e-14, atol=1e-300)
    if op in ("sign", "step"):  # the kink convention: 1 at 0
        zero = from_np(np.array([0.0, -0.0]))
        np.testing.assert_array_equal(to_np(evaluate(node, zero, mod.OPS)), [1.0, 1.0])


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_values_agree(name: str, runtime: str) -> None:
    mod, to_np, from_np = _runtime(runtime)
    act = activation(name)
    x = np.concatenate([np.linspace(-6.0, 6.0, 97), [0.0]])
    engine = act(x)
    tree = fold(act.expression)
    got = to_np(evaluate(tree, from_np(x.copy()), mod.OPS))
    scalar = np.array([evaluate(tree, float(v), {k: o.fold for k, o in OPS.items()}) for v in x])
    np.testing.assert_allclose(got, engine, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(scalar, engine, rtol=1e-13, atol=1e-15)


LEAVES = ["x", "0.5", "2", "pi", "e", "1.25e-1"]
UNARY = ["exp", "log1p", "expm1", "sqrt", "tanh", "sinh", "cosh", "sin", "cos", "atan", "arctan",
         "asinh", "erf", "erfc", "abs", "sign", "step", "relu", "sigmoid", "softplus", "log", "-"]
BINARY = ["+", "-", "*", "/", "**", "max", "min", "leaky_relu", "elu"]


@settings(max_examples=40, deadline=None)
@given(expressions(2, LEAVES, UNARY, BINARY))
def test_what_the_engine_accepts_every_part_computes_alike(text: str) -> None:
    """An expression ks.activation accepts exports, and the numpy and JAX runtimes compute
    the engine's values; one it refuses, the exporter refuses too."""
    from kernelshape.constants import build_document

    doc = build_document("none", {}, {"f": {"activation": text}}, {}, {})
    try:
        act = activation(text)
    except ValueError:
        with pytest.raises(ValueError):
            export(doc, to="numpy")
        return
    export(doc, to="numpy")
    x = np.linspace(-4.0, 4.0, 41)
    engine = act(x)
    tree = fold(parse(text))
    for runtime in ("numpy", "jax"):
        mod, to_np, from_np = _runtime(runtime)
        got = to_np(evaluate(tree, from_np(x.copy()), mod.OPS))
        scale = max(1.0, float(np.max(np.abs(engine))))
        np.testing.assert_allclose(got, engine, rtol=1e-9, atol=1e-9 * scale)
