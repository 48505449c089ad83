"""Closed-form dual kernels against the 2-D panel quadrature (an independent route)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernelshape.engine import closed_forms, maps
from kernelshape.engine.activations import Transform, activation
from kernelshape.engine.quadrature import Scaled, expect_1d

# (spec, params, transforms): every family, with flips (negative input scale), output
# shift/scale, and input shifts where the family allows them.
NO_SHIFT = [Transform(), Transform(1.7, 0.0, 0.3, 0.8), Transform(-0.6, 0.0, -0.2, 1.5)]
ANY_SHIFT = NO_SHIFT + [Transform(0.9, 0.7, 0.1, 1.2), Transform(-1.3, -1.1, 0.0, 0.7)]
FAMILIES = [
    ("relu", {}, NO_SHIFT),
    ("leaky_relu", {"negative_slope": 0.2}, NO_SHIFT),
    ("abs", {}, NO_SHIFT),
    ("step", {}, NO_SHIFT),
    ("sign", {}, NO_SHIFT),
    ("erf", {}, NO_SHIFT),
    ("gelu_exact", {}, NO_SHIFT[:2]),  # alpha > 0 only
    ("sin", {}, ANY_SHIFT),
    ("cos", {}, ANY_SHIFT),
    ("exp", {}, ANY_SHIFT[:2] + ANY_SHIFT[3:4]),
    ("gaussian", {}, ANY_SHIFT),
    ("identity", {}, ANY_SHIFT),
    ("square", {}, ANY_SHIFT),
    ("x**3 - 2*x + 0.5", {}, ANY_SHIFT[:2] + ANY_SHIFT[3:]),
    ("(x + 1)**4 / 8", {}, ANY_SHIFT[:1] + ANY_SHIFT[3:4]),
]
CASES = [(spec, params, t) for spec, params, ts in FAMILIES for t in ts]
POINTS = (-1.0, -0.93, -0.35, 0.42, 0.999, 1.0)
QS = ((1.0, 1.0), (0.3, 2.2))


def _ids(case: tuple) -> str:
    spec, params, t = case
    return f"{spec}{params or ''}-{t.input_scale}-{t.input_shift}-{t.output_shift}"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_closed_form_matches_quadrature(case: tuple) -> None:
    spec, params, t = case
    act = activation(spec, **params).transformed(t)
    assert closed_forms.supports(act)
    orders = range(min(act.smooth_order, 2) + 1)
    for q1, q2 in QS:
        for order in orders:
            closed = closed_forms.kernel(act, q1, q2, np.array(POINTS), order)
            quad = np.array([maps._kernel_point(act, q1, q2, c, order) for c in POINTS])
            scale = max(1.0, float(np.max(np.abs(quad))))
            np.testing.assert_allclose(closed, quad, rtol=0, atol=3e-14 * scale,
                                       err_msg=f"q=({q1}, {q2}) order={order}")


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_closed_form_q_map_matches_quadrature(case: tuple) -> None:
    spec, params, t = case
    act = activation(spec, **params).transformed(t)
    for q in (0.05, 1.0, 6.0):
        g = Scaled.of(act, q)
        quad = expect_1d([(g, 0), (g, 0)])
        assert abs(maps.qmap(act, q) - quad) <= 2e-15 * quad


@pytest.mark.parametrize("name", ["relu", "step", "sign", "leaky_relu", "abs"])
def test_kinked_second_derivatives_against_density_weights(name: str) -> None:
    """Past the kink order, quadrature differentiates the Gaussian density instead (order 2
    and 3 of ReLU-like maps, order 1 and 2 of step/sign) at interior c."""
    act = activation(name).transformed(Transform(1.3, 0.0, 0.2, 0.9))
    c = np.array([-0.7, -0.1, 0.3, 0.8])
    for order in range(act.smooth_order + 1, act.smooth_order + 3):
        closed = closed_forms.kernel(act, 0.6, 1.4, c, order)
        quad = np.array([maps._kernel_point(act, 0.6, 1.4, ci, order) for ci in c])
        np.testing.assert_allclose(closed, quad, rtol=2e-12, atol=2e-13)


def test_unsupported_transforms_fall_back() -> None:
    for spec, t in [("relu", Transform(1.0, 0.1)), ("erf", Transform(1.0, -0.5)),
                    ("gelu_exact", Transform(-1.0)), ("step", Transform(0.0))]:
        assert not closed_forms.supports(activation(spec).transformed(t)), spec
    assert not closed_forms.supports(activation("tanh"))
    assert not closed_forms.supports(activation("x*tanh(x)"))


def test_textbook_values() -> None:
    """Values quoted in the literature: ReLU C(0) = 1/pi, arcsine law, erf at q = 1."""
    assert abs(maps.cmap("relu", 0.0) - 1 / math.pi) < 1e-16
    c = np.array([-0.5, 0.25, 0.9])
    np.testing.assert_allclose(maps.cmap("sign", c), 2 / np.pi * np.arcsin(c), rtol=1e-15)
    np.testing.assert_allclose(maps.cmap("erf", c),
                               np.arcsin(2 * c / 3) / np.arcsin(2 / 3), rtol=1e-15)
    np.testing.assert_allclose(maps.cmap("sin", c), np.sinh(c) / np.sinh(1.0), rtol=1e-15)
