"""Formulas, certified series and exact local conditions, each against an independent method.

* kernel formulas vs a 30-digit mpmath integral over z1 of phi_hat(sqrt(q1) z1) times the
  Gaussian expectation of the second factor given z1, in closed form by the one-dimensional
  identities (E[relu(m + s w)] = m Phi(m/s) + s phi(m/s), E[erf(m + s w)] = erf(m /
  sqrt(1 + 2 s^2)), ...), which never use a two-dimensional kernel formula;
* series coefficients vs the engine's C maps (float64 routes), their tails as bounds;
* local formulas vs the engine's local summaries (float64) and mpmath (30 digits).
"""

from __future__ import annotations

import json

import mpmath as mp
import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import kernelshape as ks
from kernelshape.cli.app import main
from kernelshape.engine import precise
from kernelshape.engine.activations import activation
from kernelshape.engine.formulas import (
    Q1,
    Q2,
    C,
    kernel_formula,
    local_formulas,
    output_scale_formula,
    substituted,
)
from kernelshape.engine.maps import cmap, local_summary
from kernelshape.engine.series import TruncatedSeries, cmap_series


def _npdf(x):
    return mp.npdf(x)


def _ncdf(x):
    return mp.ncdf(x)


# E_w[phi(m + s w)] for w ~ N(0, 1), by one-dimensional Gaussian identities
INNER = {
    "relu": lambda m, s: m * _ncdf(m / s) + s * _npdf(m / s),
    "step": lambda m, s: _ncdf(m / s),
    "sign": lambda m, s: 2 * _ncdf(m / s) - 1,
    "erf": lambda m, s: mp.erf(m / mp.sqrt(1 + 2 * s * s)),
    "sin": lambda m, s: mp.sin(m) * mp.exp(-s * s / 2),
    "cos": lambda m, s: mp.cos(m) * mp.exp(-s * s / 2),
    "exp": lambda m, s: mp.exp(m + s * s / 2),
    "gelu_exact": lambda m, s: (m * _ncdf(m / mp.sqrt(1 + s * s))
                                + s * s / mp.sqrt(1 + s * s) * _npdf(m / mp.sqrt(1 + s * s))),
    # x^3 - x: E[(m + s w)^3] - m = m^3 + 3 m s^2 - m
    "x**3 - x": lambda m, s: m**3 + 3 * m * s * s - m,
}
INNER["leaky_relu"] = lambda m, s: (INNER["relu"](m, s)
                                    - mp.mpf("0.01") * INNER["relu"](-m, s))
INNER["abs"] = lambda m, s: INNER["relu"](m, s) + INNER["relu"](-m, s)

CASES = [
    ("relu", {}), ("leaky_relu", {"output_shift": -0.2, "output_scale": 1.3}),
    ("abs", {"input_scale": -0.8}), ("step", {}), ("sign", {"input_scale": 2.0}),
    ("erf", {"input_scale": 1.3, "output_shift": 0.1}),
    ("sin", {"input_scale": 0.7, "input_shift": 0.4, "output_shift": 0.1}),
    ("cos", {"input_scale": -1.1, "input_shift": 0.3}), ("exp", {"input_scale": 0.5}),
    ("gelu_exact", {"input_scale": 0.9}), ("x**3 - x", {"input_shift": 0.3}),
]
POINTS = [(sp.Rational(7, 10), sp.Rational(8, 5), sp.Rational(9, 20)),
          (sp.Integer(2), sp.Rational(1, 2), sp.Rational(-3, 4))]


def mpq(r: sp.Rational) -> mp.mpf:
    """An exact rational at the working precision."""
    return mp.mpf(int(r.p)) / int(r.q)


def reference_kernel(name: str, transform: dict, q1, q2, c) -> mp.mpf:
    """K(q1, q2, c) of gamma (phi(alpha x + beta) + delta) at 30 digits (module docstring)."""
    act = activation(name)
    t = ks.Transform(**transform)
    # the decimals as written (the formulas hold them exactly)
    alpha, beta = mp.mpf(repr(t.input_scale)), mp.mpf(repr(t.input_shift))
    delta, gamma = mp.mpf(repr(t.output_shift)), mp.mpf(repr(t.output_scale))
    exact = act.expr.xreplace({f: sp.Rational(repr(float(f))) for f in act.expr.atoms(sp.Float)})
    fn = sp.lambdify(sp.Symbol("x", real=True), exact, "mpmath")
    s = abs(alpha) * mp.sqrt(q2) * mp.sqrt(1 - c * c)

    def integrand(z):
        first = gamma * (fn(alpha * mp.sqrt(q1) * z + beta) + delta)
        m = alpha * mp.sqrt(q2) * c * z + beta
        second = gamma * ((fn(m) if s == 0 else INNER[name](m, s)) + delta)
        return first * second * mp.npdf(z)

    kinks = sorted((mp.mpf(k) - beta) / (alpha * mp.sqrt(q1)) for k in act.kinks)
    return mp.quad(integrand, [-mp.inf, *kinks, mp.inf])


@pytest.mark.parametrize("name, transform", CASES, ids=[c[0] for c in CASES])
def test_kernel_formulas_match_30_digit_quadrature(name: str, transform: dict) -> None:
    act = activation(name).transformed(transform) if transform else activation(name)
    formula = kernel_formula(act)
    with mp.workdps(40):
        for q1, q2, c in POINTS:
            want = reference_kernel(name, transform, mpq(q1), mpq(q2), mpq(c))
            got = sp.N(formula.kernel.subs({Q1: q1, Q2: q2, C: c}), 40)
            assert abs(mp.mpf(str(got)) - want) <= 1e-25 * max(1, abs(want)), (name, q1, q2, c)
        # Q(q) = K(q, q, 1) and C(c) = K(1, 1, c) / K(1, 1, 1), by the same reference
        q_ref = reference_kernel(name, transform, mp.mpf(3) / 2, mp.mpf(3) / 2, mp.mpf(1))
        got_q = sp.N(formula.qmap.subs(sp.Symbol("q", positive=True), sp.Rational(3, 2)), 40)
        assert abs(mp.mpf(str(got_q)) - q_ref) <= 1e-25 * max(1, abs(q_ref))
        c_ref = (reference_kernel(name, transform, 1, 1, mp.mpf(1) / 3)
                 / reference_kernel(name, transform, 1, 1, mp.mpf(1)))
        got_c = sp.N(formula.cmap.subs(C, sp.Rational(1, 3)), 40)
        assert abs(mp.mpf(str(got_c)) - c_ref) <= 1e-25


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(CASES), st.fractions(sp.Rational(1, 10), 3, max_denominator=50),
       st.fractions(sp.Rational(1, 10), 3, max_denominator=50),
       st.fractions(-sp.Rational(19, 20), sp.Rational(19, 20), max_denominator=50))
def test_kernel_formulas_at_random_points(case, q1, q2, c) -> None:
    name, transform = case
    act = activation(name).transformed(transform) if transform else activation(name)
    kernel = kernel_formula(act).kernel
    q1, q2, c = (sp.Rational(v.numerator, v.denominator) for v in (q1, q2, c))
    with mp.workdps(40):
        want = reference_kernel(name, transform, mpq(q1), mpq(q2), mpq(c))
        got = mp.mpf(str(sp.N(kernel.subs({Q1: q1, Q2: q2, C: c}), 40)))
        assert abs(got - want) <= 1e-25 * max(1, abs(want)), (name, q1, q2, c)


@pytest.mark.parametrize("text, words", [
    ("tanh", "no closed-form kernel"),
    ("softplus", "certified Hermite series"),
])
def test_no_closed_form_names_the_nearest_representation(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        kernel_formula(activation(text))


def test_shifted_relu_needs_its_condition() -> None:
    with pytest.raises(ValueError, match="input_shift = 0"):
        kernel_formula(activation("relu").transformed({"input_shift": 0.5}))


# --- local conditions --------------------------------------------------------------------------

LOCAL_CASES = ["relu", "leaky_relu", "abs", "sign", "step", "max(min(x, 1), -1)", "x**3",
               "sin", "cos", "exp", "gaussian"]


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(LOCAL_CASES), st.floats(0.3, 2.5), st.floats(-1.5, 1.5),
       st.floats(-1.0, 1.0), st.floats(0.5, 2.0))
def test_local_formulas_match_the_engine(name, alpha, beta, delta, gamma) -> None:
    transform = ks.Transform(input_scale=alpha, input_shift=beta, output_shift=delta,
                             output_scale=gamma)
    act = activation(name)
    got = substituted(local_formulas(act), transform)
    want = local_summary(act.transformed(transform))
    for key, value in got.items():
        if not value.is_finite:
            assert want[key] == np.inf, (name, key)
            continue
        assert float(value) == pytest.approx(want[key], rel=2e-12, abs=1e-13), (name, key)


def test_local_formulas_match_mpmath_to_25_digits() -> None:
    # binary-exact constants: the mpmath route reads the float64 values, the formulas the
    # decimals they print as
    transform = ks.Transform(input_scale=1.25, input_shift=0.5, output_shift=-0.375,
                             output_scale=1.5)
    for name in ("relu", "sin", "x**3"):
        act = activation(name)
        got = substituted(local_formulas(act), transform, dps=40)
        want = precise.local_summary(act.transformed(transform), dps=35)
        with mp.workdps(40):
            for key, value in got.items():
                if value.is_finite:
                    gap = abs(mp.mpf(str(value)) - want[key])
                    assert gap <= 1e-25 * max(1, abs(want[key])), (name, key, gap)


def test_tat_leaky_output_scale_is_exact() -> None:
    formulas = local_formulas(activation("leaky_relu", negative_slope=0.3))
    from kernelshape.engine.formulas import ALPHA, BETA, DELTA, SLOPE

    gamma = output_scale_formula(formulas).subs({ALPHA: 1, BETA: 0, DELTA: 0})
    assert sp.simplify(gamma - sp.sqrt(2 / (1 + SLOPE**2))) == 0


# --- series ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, transform", [
    ("tanh", {}), ("relu", {}), ("softplus", {"input_scale": 0.8, "input_shift": 0.4}),
    ("x*tanh(log(1+exp(x)))", {}), ("sign", {})])
def test_series_coefficients_and_tail_bound_hold(name: str, transform: dict) -> None:
    act = activation(name).transformed(transform) if transform else activation(name)
    series = cmap_series(act, 10, dps=20)
    assert all(b >= 0 for b in series.coefficients)
    assert mp.fsum(series.coefficients) <= 1 + 1e-18
    c = np.linspace(-1.0, 1.0, 41)
    err = np.abs(series(c) - cmap(act, c))
    assert np.all(err <= float(series.tail) + 1e-14)
    # the bound is attained at c = 1, where C(1) - partial = tail exactly
    assert err[-1] == pytest.approx(float(series.tail), rel=1e-6, abs=1e-14)
    summary = local_summary(act)
    for k, key in ((1, "c_slope_1"), (2, "c_curv_1")):
        bound = float(series.slope_tails[k - 1])
        if np.isinf(summary[key]):
            assert np.isinf(bound)
        else:
            assert 0 <= summary[key] - series.derivative_at_one(k) <= bound + 1e-12


def test_series_at_other_q_matches_the_c_map() -> None:
    act = activation("tanh")
    series = cmap_series(act, 14, q=2.5, dps=20)
    c = np.linspace(-1.0, 1.0, 21)
    assert np.all(np.abs(series(c) - cmap(act, c, 2.5, 2.5)) <= float(series.tail) + 1e-14)


def test_series_order_is_checked() -> None:
    with pytest.raises(ValueError, match="between 0 and 200"):
        cmap_series(activation("tanh"), 1000)


@settings(max_examples=4, deadline=None)
@given(st.integers(1, 4), st.sampled_from(["relu", "tanh", "erf"]))
def test_network_series_bounds_the_network_map(depth: int, name: str) -> None:
    net = ks.nets.mlp(depth=depth, activation=name)
    series = net.cmap_series(8)
    c = np.linspace(-1.0, 1.0, 17)
    err = np.abs(series(c) - net.cmap(c))
    assert np.all(series.coefficients >= 0)
    assert np.all(err <= series.tail_bound() + 1e-13)


def test_shaped_network_series() -> None:
    net = ks.nets.resnet(depth=18, width=8, activation="softplus")
    sol = ks.shape(net, "tat")
    series = net.cmap_series(10, transforms=sol.transforms)
    c = np.linspace(-1.0, 1.0, 11)
    err = np.abs(series(c) - net.cmap(c, transforms=sol.transforms))
    assert series.tail_bound() < 1e-6 and np.all(err <= series.tail_bound() + 1e-13)


def test_truncated_series_composition_is_exact_for_polynomials() -> None:
    inner = TruncatedSeries(np.array([0.5, 0.5, 0.0, 0.0]))
    composed = inner.compose(np.array([0.0, 0.0, 1.0]))  # (0.5 + 0.5 c)^2
    np.testing.assert_allclose(composed.coefficients, [0.25, 0.5, 0.25, 0.0])


# --- command line ------------------------------------------------------------------------------

def test_cli_formula_latex_and_series(capsys) -> None:
    assert main(["maps", "relu", "--formula", "--series", "6", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["formulas"]["maps"]["qmap"] == "q/2"
    assert payload["formulas"]["local"]["c_curv_1"] == "oo"
    assert len(payload["series"]["coefficients"]) == 7
    assert main(["maps", "erf", "--latex"]) == 0
    assert "\\operatorname{asin}" in capsys.readouterr().out
    assert main(["maps", "tanh", "--formula"]) == 0
    assert "none: tanh has no closed-form kernel" in capsys.readouterr().out


def test_cli_shape_formula(capsys) -> None:
    assert main(["shape", "--net", "mlp:depth=20,activation=leaky_relu", "--method", "tat",
                 "--formula"]) == 0
    out = capsys.readouterr().out
    assert "exact: gamma = sqrt(2)/sqrt(a**2 + 1)  (from Q(1) = 1)" in out
    assert main(["shape", "--net", "mlp:depth=20,activation=relu", "--method", "dks",
                 "--formula"]) == 0
    out = capsys.readouterr().out
    assert "exact: delta = -alpha*phi(beta/alpha) - beta*Phi(beta/alpha)" in out


def test_network_formula_composes_closed_forms() -> None:
    c = np.linspace(-0.99, 0.99, 15)
    relu = ks.nets.mlp(depth=3, activation="relu")
    formula = relu.cmap_formula()
    assert formula.free_symbols == {C}
    np.testing.assert_allclose(sp.lambdify(C, formula)(c), relu.cmap(c), atol=1e-14)
    assert abs(sp.N(formula.subs(C, 1), 30) - 1) < 1e-25  # C_f(1) = 1 exactly
    mixed = ks.nets.resnet(depth=18, width=8, activation="erf")  # sums of branches
    formula = mixed.cmap_formula(simplify=False)
    np.testing.assert_allclose(sp.lambdify(C, formula)(c), mixed.cmap(c), atol=1e-14)
    with pytest.raises(ValueError, match="tanh has no closed-form kernel"):
        ks.nets.mlp(depth=2, activation="tanh").cmap_formula()
