"""Property tests (hypothesis) over built-ins, random transforms and random expressions.

At equal q the C map is a power series ``sum_k b_k c^k`` with ``b_k >= 0`` and ``sum b_k = 1``
(Mehler), hence: C(1) = 1, |C(c)| <= C(|c|) <= 1, C increasing and convex on [0, 1] with
nonnegative Taylor coefficients at 0, C'(1) >= 1 - C(0). Derivatives obey Price's identity.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kernelshape.engine.activations import Activation, Transform, activation, list_activations
from kernelshape.engine.maps import cmap, qmap

TOL = 1e-12
SETTINGS = settings(max_examples=14, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

transforms = st.builds(
    Transform,
    input_scale=st.floats(0.15, 3.0) | st.floats(-3.0, -0.15),
    input_shift=st.floats(-2.0, 2.0),
    output_shift=st.floats(-1.0, 1.0),
    output_scale=st.floats(0.5, 2.0),
)

# random expressions from the whitelist grammar, built from pieces whose Gaussian moments are
# finite (bounded or at most polynomially growing)
BOUNDED = ["tanh", "sin", "cos", "atan", "erf", "sigmoid", "erfc"]
GROWING = ["softplus", "relu", "abs", "asinh", ""]
atoms = st.builds(
    lambda f, a, b: f"{f}({a:.3g}*x + {b:.3g})",
    st.sampled_from(BOUNDED + GROWING), st.floats(-2.0, 2.0).filter(lambda v: abs(v) > 0.1),
    st.floats(-1.5, 1.5))
linear = st.builds(lambda a, b: f"{a:.3g}*x + {b:.3g}", st.floats(-2.0, 2.0),
                   st.floats(-1.5, 1.5))
expressions = st.one_of(
    atoms,
    st.builds(lambda u, v, w: f"{u} + {w:.3g}*{v}", atoms, atoms, st.floats(-2.0, 2.0)),
    st.builds(lambda u, v: f"({u})*({v})", atoms, atoms),
    st.builds(lambda u, v: f"max({u}, {v})", linear, linear),  # kinks sympy can locate
)


def _expression(text: str) -> Activation:
    try:
        return activation(text)
    except ValueError:
        assume(False)
        raise


def check_pgf_properties(act: Activation, q: float) -> None:
    assume(qmap(act, q) > 1e-8)
    grid = np.array([-0.9, -0.5, -0.1, 0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
    c = cmap(act, grid, q, q)
    assert c[-1] == 1.0 or abs(c[-1] - 1.0) <= 1e-15  # C(1) = 1
    for ci, value in zip(grid, c, strict=True):  # |C(c)| <= C(|c|) <= 1
        mirror = c[np.nonzero(grid == abs(ci))[0][0]] if abs(ci) in grid else None
        if mirror is not None:
            assert abs(value) <= mirror + TOL
        assert value <= 1.0 + TOL
    pos = c[3:]  # C on [0, 0.1, 0.25, 0.5, 0.75, 0.9, 1]: increasing and convex
    assert np.all(np.diff(pos) >= -TOL)
    x = grid[3:]
    slopes = np.diff(pos) / np.diff(x)
    assert np.all(np.diff(slopes) >= -1e-10)
    for order in (1, 2):  # Taylor coefficients b_1, 2 b_2 at 0
        assert cmap(act, 0.0, q, q, order=order) >= -TOL
    if act.smooth_order >= 1:  # C'(1) = sum k b_k >= sum_{k>=1} b_k = 1 - C(0)
        assert cmap(act, 1.0, q, q, order=1) >= 1.0 - c[3] - TOL


def check_derivative_identities(act: Activation, q: float) -> None:
    h = 1e-4
    c0 = 0.3
    fd = (cmap(act, c0 + h, q, 1.3 * q) - cmap(act, c0 - h, q, 1.3 * q)) / (2 * h)
    exact = cmap(act, c0, q, 1.3 * q, order=1)
    assert abs(fd - exact) <= 1e-6 * max(1.0, abs(exact))
    dq = (qmap(act, q * (1 + h)) - qmap(act, q * (1 - h))) / (2 * h * q)
    exact_q = qmap(act, q, order=1)
    assert abs(dq - exact_q) <= 1e-6 * max(1.0, abs(exact_q))


@SETTINGS
@given(name=st.sampled_from(list_activations()), t=transforms, q=st.floats(0.05, 5.0))
def test_builtins_with_random_transforms(name: str, t: Transform, q: float) -> None:
    act = activation(name).transformed(t)
    check_pgf_properties(act, q)
    check_derivative_identities(act, q)


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(text=expressions, q=st.floats(0.1, 3.0))
def test_random_expressions(text: str, q: float) -> None:
    act = _expression(text)
    check_pgf_properties(act, q)
    check_derivative_identities(act, q)


@SETTINGS
@given(name=st.sampled_from(list_activations()), t=transforms,
       q1=st.floats(0.05, 5.0), q2=st.floats(0.05, 5.0), c=st.floats(-1.0, 1.0))
def test_unequal_q_is_a_correlation(name: str, t: Transform, q1: float, q2: float,
                                    c: float) -> None:
    """|C(c; q1, q2)| <= 1 (Cauchy-Schwarz) and C(c; q1, q2) = C(c; q2, q1)."""
    act = activation(name).transformed(t)
    assume(min(qmap(act, q1), qmap(act, q2)) > 1e-8)
    value = cmap(act, c, q1, q2)
    assert abs(value) <= 1.0 + TOL
    assert math.isclose(value, cmap(act, c, q2, q1), rel_tol=0, abs_tol=1e-14)
