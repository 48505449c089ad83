"""The activation library: built-ins, stable numerics, transforms, serialization, callables."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import sympy as sp

import kernelshape as ks
from kernelshape.engine.activations import (
    Activation,
    CallableActivation,
    Transform,
    activation,
    from_callable,
    list_activations,
)
from kernelshape.engine.callables import fd_weights
from kernelshape.engine.maps import SUMMARY_KEYS, cmap, local_summary, qmap
from kernelshape.engine.symbolic import Sigmoid, Softplus, X

BUILTINS = list_activations()
KINKED = {"relu", "leaky_relu", "abs", "step", "sign", "elu", "selu", "softsign"}
GRID = np.linspace(-6.0, 6.0, 241) + 1e-3  # avoids the kinks at 0


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_numpy_matches_its_sympy_expression(name: str) -> None:
    act = activation(name)
    raw = act.expr.replace(lambda e: isinstance(e, Sigmoid | Softplus),
                           lambda e: e.rewrite(sp.exp))  # the textbook formulas
    exact = sp.lambdify(X, raw, "mpmath")
    with mp.workdps(40):
        expected = np.array([float(exact(mp.mpf(float(x)))) for x in GRID])
    np.testing.assert_allclose(act(GRID), expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_derivatives_match_finite_differences(name: str) -> None:
    act = activation(name)
    h = 1e-3
    x = GRID[np.abs(GRID) > 10 * h]
    for order in (1, 2):
        w = fd_weights(order, tuple(range(-4, 5)))
        fd = sum(wj * act(x + j * h) for j, wj in zip(range(-4, 5), w, strict=True)) / h**order
        np.testing.assert_allclose(act.derivative(x, order), fd, rtol=1e-7, atol=1e-7)


def test_kinks_and_smoothness() -> None:
    for name in BUILTINS:
        act = activation(name)
        assert bool(act.kinks) == (name in KINKED), name
    assert activation("step").smooth_order == 0
    assert activation("sign").smooth_order == 0
    assert activation("relu").smooth_order == 1
    assert activation("selu").smooth_order == 1
    assert activation("elu").smooth_order == 2  # alpha = 1: slope continuous
    assert activation("elu", alpha=2.0).smooth_order == 1
    assert activation("softsign").smooth_order == 2
    assert activation("tanh").smooth_order > 8


@pytest.mark.parametrize("name", ["sigmoid", "softplus", "mish", "swish"])
def test_stable_forms_at_large_inputs(name: str) -> None:
    """The stable numpy forms agree with the raw formula evaluated in 400-digit arithmetic."""
    raw = {
        "sigmoid": lambda x: 1 / (1 + mp.exp(-x)),
        "softplus": lambda x: mp.log(1 + mp.exp(x)),
        "mish": lambda x: x * mp.tanh(mp.log(1 + mp.exp(x))),
        "swish": lambda x: x / (1 + mp.exp(-x)),
    }[name]
    x = np.array([-745.0, -700.0, -200.0, -40.0, -1e-8, 0.0, 3.0, 40.0, 200.0, 700.0, 745.0])
    got = activation(name)(x)
    assert np.all(np.isfinite(got))
    with mp.workdps(400):
        want = np.array([float(raw(mp.mpf(v))) for v in x])
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-300)


def test_transform_formula_and_composition() -> None:
    act = activation("tanh")
    t1 = Transform(input_scale=1.3, input_shift=-0.2, output_shift=0.1, output_scale=0.7)
    t2 = Transform(input_scale=-0.5, input_shift=0.4, output_shift=-0.3, output_scale=2.0)
    x = np.linspace(-3, 3, 13)
    one = act.transformed(t1)
    np.testing.assert_allclose(one(x), 0.7 * (np.tanh(1.3 * x - 0.2) + 0.1), rtol=1e-15)
    two = one.transformed(t2)  # t2 applied to the already transformed activation
    np.testing.assert_allclose(two(x), 2.0 * (one(-0.5 * x + 0.4) - 0.3), rtol=1e-14)
    np.testing.assert_allclose(two.derivative(x, 1), 2.0 * -0.5 * one.derivative(-0.5 * x + 0.4),
                               rtol=1e-14)
    assert two.base == act
    assert act.transformed({"input_scale": 2.0}) == act.transformed(Transform(input_scale=2.0))


def test_transform_validation() -> None:
    with pytest.raises(ValueError, match="finite"):
        Transform(input_scale=math.inf)
    with pytest.raises(TypeError):
        Transform(input_scale=True)
    with pytest.raises(ValueError, match="negative_slope applies only to leaky_relu"):
        activation("tanh").transformed(Transform(negative_slope=0.2))
    lrelu = activation("leaky_relu").transformed(Transform(negative_slope=0.2, output_scale=2.0))
    np.testing.assert_allclose(lrelu(np.array([-1.0, 1.0])), [-0.4, 2.0])
    assert Transform(negative_slope=0.3).as_dict()["negative_slope"] == 0.3
    assert "negative_slope" not in Transform().as_dict()


def test_parameters() -> None:
    assert activation("leaky_relu").params == {"negative_slope": 0.01}
    assert activation("leaky_relu", negative_slope=0.2)(np.array([-1.0]))[0] == -0.2
    with pytest.raises(ValueError, match="has no parameter"):
        activation("tanh", slope=2.0)
    with pytest.raises(ValueError, match="finite"):
        activation("elu", alpha=math.nan)
    with pytest.raises(ValueError, match="takes no parameters"):
        activation("x*tanh(x)", alpha=1.0)


@pytest.mark.parametrize("spec", ["leaky_relu", "x*sigmoid(x)", "selu"])
def test_dict_round_trip(spec: str) -> None:
    act = activation(spec).transformed(Transform(1.5, 0.25, -0.5, 2.0))
    back = Activation.from_dict(act.to_dict())
    assert back == act
    x = np.linspace(-2, 2, 9)
    np.testing.assert_array_equal(back(x), act(x))


def test_derivative_order_validation() -> None:
    with pytest.raises(ValueError, match="nonnegative integer"):
        activation("tanh").derivative(np.zeros(2), -1)


# --- Python callables ------------------------------------------------------------------------

# Precision promised in kernelshape/engine/callables.py for finite differences (tanh-like
# functions):
FD_PRECISION = {0: 1e-15, 1: 1e-13, 2: 1e-11, 3: 1e-9, 4: 1e-7}


def test_callable_tanh_matches_builtin_within_the_stated_tolerance() -> None:
    fn = activation(lambda x: np.tanh(x))
    tanh = activation("tanh")
    assert isinstance(fn, CallableActivation)
    assert fn.kinks == () and fn.smooth_order > 8
    x = np.linspace(-6.0, 6.0, 121)
    for order, tol in FD_PRECISION.items():
        np.testing.assert_allclose(fn.derivative(x, order), tanh.derivative(x, order),
                                   rtol=0, atol=tol * 4)
    got, want = local_summary(fn), local_summary(tanh)
    for key, tol in (("q_value", 1e-15), ("q_slope", 1e-15), ("c_value_0", 1e-15),
                     ("c_slope_0", 1e-15), ("c_slope_1", 1e-13), ("c_curv_1", 1e-11)):
        assert abs(got[key] - want[key]) <= tol * max(1.0, abs(want[key])), key
    c = np.linspace(-1.0, 1.0, 9)
    t = Transform(1.7, 0.3, -0.2, 1.2)
    np.testing.assert_allclose(cmap(fn.transformed(t), c, 0.5, 2.0),
                               cmap(tanh.transformed(t), c, 0.5, 2.0), atol=1e-14)
    np.testing.assert_allclose(cmap(fn, c[1:-1], order=1), cmap(tanh, c[1:-1], order=1),
                               atol=1e-12)
    assert abs(qmap(fn, 2.5) - qmap(tanh, 2.5)) < 1e-15
    # dps=N cannot give N digits of a float64 callable: refused, not padded with noise
    with pytest.raises(ValueError, match="Python callable is evaluated in float64"):
        local_summary(fn, dps=30)


def test_callable_scalar_function_and_kinks() -> None:
    relu = activation(lambda x: max(x, 0.0), kinks=[0.0])  # scalar-only callable
    assert relu.kinks == (0.0,) and relu.smooth_order == 1
    assert activation(lambda x: np.where(x < 0, 0.0, 1.0), kinks=[0.0]).smooth_order == 0
    builtin = activation("relu")
    for key in SUMMARY_KEYS[:4]:
        assert abs(local_summary(relu)[key] - local_summary(builtin)[key]) < 1e-14
    c = np.array([-0.9, -0.2, 0.4, 0.95])
    np.testing.assert_allclose(cmap(relu, c), cmap(builtin, c), atol=1e-14)
    x = np.array([-1.0, -1e-3, 0.0, 1e-3, 1.0])  # one-sided stencils next to the kink
    np.testing.assert_allclose(relu.derivative(x), [0.0, 0.0, 1.0, 1.0, 1.0], atol=1e-11)


def test_callables_are_distinct_cache_keys() -> None:
    a = from_callable(lambda x: np.tanh(x), name="f")
    b = from_callable(lambda x: np.sin(x), name="f")
    assert a != b
    assert abs(qmap(a, 1.0) - qmap("tanh", 1.0)) < 1e-15
    assert abs(qmap(b, 1.0) - qmap("sin", 1.0)) < 1e-15
    assert a.transformed(Transform(2.0)).base == a


def test_callable_validation() -> None:
    with pytest.raises(ValueError, match="grows too fast"):
        activation(lambda x: np.exp(x**2))
    with pytest.raises(ValueError, match="not finite and real"):
        activation(lambda x: np.sqrt(x))
    with pytest.raises(ValueError, match="complex"):
        activation(lambda x: np.exp(1j * x))
    with pytest.raises(ValueError, match="failed"):
        activation(lambda x: 1 / 0)
    with pytest.raises(ValueError, match="negative_slope"):
        activation(lambda x: x).transformed(Transform(negative_slope=0.1))


def test_callable_jax_derivatives_are_exact() -> None:
    jnp = pytest.importorskip("jax.numpy")
    fn = activation(lambda x: jnp.tanh(x))
    tanh = activation("tanh")
    got, want = local_summary(fn), local_summary(tanh)
    for key in SUMMARY_KEYS:
        assert abs(got[key] - want[key]) <= 1e-15 * max(1.0, abs(want[key])), key


def test_fd_weights_are_exact_on_polynomials() -> None:
    offsets = tuple(range(-5, 6))
    x = np.linspace(-1, 1, 5)
    for order in (1, 2, 3):
        w = fd_weights(order, offsets)
        poly = np.polynomial.Polynomial(np.arange(1.0, 11.0))  # degree 9 < 11 points
        fd = sum(wj * poly(x + j * 0.1) for j, wj in zip(offsets, w, strict=True)) / 0.1**order
        np.testing.assert_allclose(fd, poly.deriv(order)(x), rtol=1e-8)


def test_top_level_api() -> None:
    assert ks.activation("tanh") is activation("tanh")
    assert "tanh" in ks.list_activations() and "silu" not in ks.list_activations()
