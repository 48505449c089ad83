"""The float64 map engine: routes, caches, the Hermite route, interpolants, identities, Monte Carlo.

Every check compares two independent computations (two routes, a route and an identity, or a
route and a simulation); no expected number below was produced by the code under test.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelshape.engine import hermite, maps
from kernelshape.engine.activations import Transform, activation, list_activations
from kernelshape.engine.maps import SUMMARY_KEYS, cmap, local_summary, qmap, route, snap_q
from kernelshape.engine.quadrature import Scaled, expect_1d

CLOSED = {"relu", "leaky_relu", "abs", "step", "sign", "erf", "sin", "cos", "exp", "gaussian",
          "gelu_exact", "identity", "square"}
HERMITE = {"tanh", "sigmoid", "softplus", "swish", "gelu", "mish", "bentid", "atan", "asinh"}
QUADRATURE = {"elu", "selu", "softsign"}


def kernel_2d(act, q1: float, q2: float, c: float, order: int = 0) -> float:
    """Normalized map through the 2-D panel quadrature, bypassing routes and caches."""
    norm = math.sqrt(qmap(act, q1) * qmap(act, q2))
    return maps._kernel_point(act, q1, q2, c, order) / norm


# --- routes ----------------------------------------------------------------------------------

def test_every_builtin_has_a_known_route() -> None:
    assert CLOSED | HERMITE | QUADRATURE == set(list_activations())
    for name in list_activations():
        expected = ("closed" if name in CLOSED else "hermite" if name in HERMITE
                    else "quadrature")
        assert route(name) == expected, name


def test_route_depends_on_transform_and_q() -> None:
    assert route(activation("relu").transformed(Transform(input_shift=0.5))) == "quadrature"
    assert route("tanh", q1=100.0) == "quadrature"  # Mehler tail not below 1e-14 in 2048 terms
    assert route("tanh", q1=0.01, q2=3.0) == "hermite"
    assert route("x*tanh(x)") == "hermite"
    assert route("x**3 - 2*x") == "closed"  # polynomials: exact Hermite re-expansion


def test_docs_route_table_is_current() -> None:
    """docs/maps.md lists, per built-in, the route at q = 1, 10, 100: it must match the code."""
    text = (Path(__file__).parent.parent / "docs" / "maps.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`") and cells[0].endswith("`"):
            rows[cells[0].strip("`")] = cells[3:]
    assert set(rows) == set(list_activations())
    for name, routes in rows.items():
        assert routes == [route(name, q) for q in (1.0, 10.0, 100.0)], name


# --- q snapping and caches -------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1e-6, max_value=1e6, allow_nan=False))
def test_snap_bound(q: float) -> None:
    assert abs(snap_q(q) - q) <= 5e-14 * q
    assert snap_q(snap_q(q)) == snap_q(q)


def test_drifting_q_reuses_the_cache() -> None:
    act = activation("tanh").transformed(Transform(1.3, 0.1, -0.05, 1.1))
    c = np.linspace(-1.0, 1.0, 4096)
    maps.clear_caches()
    first = cmap(act, c, 2.0, 2.0)
    for q in (2.0000000000000004, 1.9999999999999998, 2.000000000000001):
        np.testing.assert_array_equal(cmap(act, c, q, q), first)
        assert qmap(act, q) == qmap(act, 2.0)
    assert maps._hermite_table.cache_info().misses == 1
    assert maps._expansion.cache_info().misses == 1


def test_snapping_error_is_below_its_bound() -> None:
    """q = 1.2345678901234567 is evaluated at 1.2345678901235: the C map moves by < 1e-13."""
    q = 1.2345678901234567
    act = activation("gelu").transformed(Transform(1.6, -0.3))
    for c in (-0.8, 0.1, 0.9):
        assert abs(cmap(act, c, q, 0.5) - kernel_2d(act, q, 0.5, c)) < 1e-13
    assert abs(qmap(act, q) - expect_1d([(Scaled.of(act, q), 0)] * 2)) < 1e-13 * qmap(act, q)


# --- Hermite route ---------------------------------------------------------------------------

HERMITE_CASES = [
    ("tanh", Transform(), 1.0, 1.0),
    ("tanh", Transform(1.5, 0.4, -0.2, 1.3), 0.3, 2.5),
    ("gelu", Transform(-1.2, 0.3), 1.7, 0.05),
    ("softplus", Transform(0.8, -1.0, 0.5), 4.0, 4.0),
    ("atan", Transform(), 2.0, 0.6),
    ("x*sin(x)", Transform(0.7), 1.0, 1.3),
]


@pytest.mark.parametrize(("name", "t", "q1", "q2"), HERMITE_CASES)
def test_hermite_route_matches_2d_quadrature(name: str, t: Transform, q1: float,
                                             q2: float) -> None:
    act = activation(name).transformed(t)
    c = np.array([-1.0, -0.97, -0.4, 0.0, 0.3, 0.8, 0.999, 1.0])
    for order in (0, 1, 2):
        assert route(act, q1, q2, order) == "hermite"
        got = cmap(act, c, q1, q2, order=order)
        want = np.array([kernel_2d(act, q1, q2, ci, order) for ci in c])
        scale = max(1.0, float(np.max(np.abs(want))))
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-14 * scale)


@pytest.mark.parametrize(("q1", "q2"), [(1.0, 1.0), (0.02, 7.0), (10.0, 10.0)])
def test_hermite_expansion_reproduces_the_erf_closed_form(q1: float, q2: float) -> None:
    """erf is routed to its closed form; its Mehler series must reproduce it."""
    act = activation("erf").transformed(Transform(1.0, 0.0, 0.0, 1.0))
    e1 = hermite.expansion(Scaled.of(act, q1), 1)
    e2 = hermite.expansion(Scaled.of(act, q2), 1)
    terms = max(hermite.truncation(e1, e2, 0), hermite.truncation(e1, e2, 1))
    e1 = hermite.expansion(Scaled.of(act, q1), 1, min_terms=terms)
    e2 = hermite.expansion(Scaled.of(act, q2), 1, min_terms=terms)
    c = np.linspace(-1.0, 1.0, 41)
    for order in (0, 1):
        series = hermite.kernel_coefficients(e1, e2, order)
        exact = maps._kernel(act, c, q1, q2, order)
        scale = math.sqrt(e1.moment(order) * e2.moment(order))
        bound = hermite.error_bound(e1, e2, order)
        assert bound <= hermite.TOLERANCE * scale
        err = np.max(np.abs(maps.horner(c, series) - exact))
        assert err <= bound + 1e-15 * scale


def test_hermite_coefficients_of_polynomials_are_exact() -> None:
    """x^3 = He_3 + 3 He_1: a_3 = sqrt(6) q^{3/2}, a_1 = 3 q^{3/2}, tail 0."""
    q = 2.0
    e = hermite.expansion(Scaled.of(activation("x**3"), q))
    assert e is not None and e.terms(0) == 3
    np.testing.assert_allclose(e.coef[:5], [0.0, 3 * q**1.5, 0.0, math.sqrt(6) * q**1.5, 0.0],
                               atol=1e-14)


def test_hermite_refuses_kinks_and_uncertified_tails() -> None:
    assert hermite.expansion(Scaled.of(activation("elu"), 1.0)) is None
    assert hermite.expansion(Scaled.of(activation("tanh"), 100.0)) is None
    assert maps._hermite_series(activation("tanh"), 100.0, 100.0, 0) is None


# --- interpolated many-point maps ------------------------------------------------------------

@pytest.mark.parametrize(("name", "t", "q", "order"), [
    ("tanh", Transform(), 1.0, 0),
    ("gelu", Transform(1.4, 0.2), 3.0, 1),
    ("elu", Transform(), 1.0, 0),
    ("softsign", Transform(0.7, 0.1), 1.0, 1),
])
def test_many_point_maps_equal_pointwise_maps(name: str, t: Transform, q: float,
                                              order: int) -> None:
    act = activation(name).transformed(t)
    many = np.linspace(-1.0, 1.0, 20001)
    picks = np.array([0, 1, 37, 2500, 9999, 10000, 15000, 19999, 20000])
    fast = cmap(act, many, q, q, order=order)[picks]
    direct = np.array([cmap(act, float(many[i]), q, q, order=order) for i in picks])
    scale = max(1.0, float(np.max(np.abs(direct))))
    np.testing.assert_allclose(fast, direct, rtol=0, atol=2e-14 * scale)


def test_c_of_one_is_exactly_one() -> None:
    for name in ("tanh", "elu", "relu", "gelu"):
        act = activation(name).transformed(Transform(1.2, 0.3, 0.1, 2.0))
        for n in (1, 40, 5000):
            c = np.linspace(-1.0, 1.0, n) if n > 1 else np.array([1.0])
            assert cmap(act, c, 0.7, 0.7)[-1] == 1.0


# --- Gaussian quadrature accuracy -------------------------------------------------------------

def test_gaussian_moments_beat_the_dks_rule() -> None:
    """dks' 100000-node Gauss-Legendre rule on [-10, 10] gives E[1] = 1 + 1.35e-11 (measured by
    ``python -m benchmarks.bench_maps`` in a side environment); our panels must be exact."""
    identity = Scaled.of(activation("identity"), 1.0)
    one = Scaled(identity.act, 0.0, 1.0, 1.0, 0.0)  # g(z) = identity(0 z + 1) = 1
    assert abs(expect_1d([(one, 0)]) - 1.0) <= 1e-15
    assert abs(expect_1d([(identity, 0)] * 2) - 1.0) <= 1e-15
    assert abs(expect_1d([(identity, 0)] * 4) - 3.0) <= 3e-15
    cosine = Scaled.of(activation("cos"), 1.0)
    assert abs(expect_1d([(cosine, 0)]) - math.exp(-0.5)) <= 1e-16
    relu = Scaled.of(activation("relu"), 1.0)
    assert abs(expect_1d([(relu, 0)]) - 1 / math.sqrt(2 * math.pi)) <= 2e-16
    assert abs(expect_1d([(relu, 0)] * 2) - 0.5) <= 2e-16


@pytest.mark.parametrize("b", [0.7, -3.1])  # more shifts and activations in test_precise's sweep
def test_steep_transforms_are_exact(b: float) -> None:
    """2-D quadrature of gaussian(20 x + b) (steep, shifted) against its closed form, and
    E[tanh(20 z + b)^2] against dps=40 (plain Gauss-Hermite is off by ~2e-2 here)."""
    act = activation("gaussian").transformed(Transform(20.0, b, -0.1, 1.0))
    for c in (-0.9, 0.2, 0.95):
        exact = float(maps._kernel(act, np.array([c]), 1.0, 0.6, 0)[0])
        assert abs(maps._kernel_point(act, 1.0, 0.6, c, 0) - exact) <= 1e-15
    tanh = activation("tanh").transformed(Transform(20.0, b))
    exact = qmap(tanh, 1.0, dps=40)  # E[tanh(20 z + b)^2]
    assert abs(qmap(tanh, 1.0) - float(exact)) <= 2e-16


# --- identities --------------------------------------------------------------------------------

IDENTITY_CASES = [
    ("tanh", Transform(1.1, 0.2)), ("relu", Transform(1.0, 0.3)), ("elu", Transform()),
    ("gelu_exact", Transform()), ("softsign", Transform(2.0)), ("sign", Transform(1.0, 0.4)),
]


@pytest.mark.parametrize(("name", "t"), IDENTITY_CASES)
def test_price_identity(name: str, t: Transform) -> None:
    """d/dc of the order-k map equals the order-(k+1) map (central differences, h = 1e-4)."""
    act = activation(name).transformed(t)
    h = 1e-4
    for c in (-0.6, 0.15, 0.7):
        for order in (0, 1):
            fd = (cmap(act, c + h, 0.8, 1.3, order=order)
                  - cmap(act, c - h, 0.8, 1.3, order=order)) / (2 * h)
            exact = cmap(act, c, 0.8, 1.3, order=order + 1)
            assert abs(fd - exact) < 1e-6 * max(1.0, abs(exact)), (c, order)


@pytest.mark.parametrize(("name", "t"), IDENTITY_CASES)
def test_q_derivatives_match_finite_differences(name: str, t: Transform) -> None:
    act = activation(name).transformed(t)
    h = 1e-4
    for q in (0.05, 1.0, 7.0):
        d1 = (qmap(act, q * (1 + h)) - qmap(act, q * (1 - h))) / (2 * h * q)
        assert abs(qmap(act, q, order=1) - d1) < 1e-7 * max(1.0, abs(d1))
        d2 = (qmap(act, q * (1 + h), order=1) - qmap(act, q * (1 - h), order=1)) / (2 * h * q)
        assert abs(qmap(act, q, order=2) - d2) < 1e-6 * max(1.0, abs(d2))


@pytest.mark.parametrize("name", list_activations())
def test_local_summary_matches_the_maps(name: str) -> None:
    """Each summary key through its own formula vs the general maps (other code paths)."""
    act = activation(name)
    s = local_summary(act)
    assert set(s) == set(SUMMARY_KEYS)
    assert abs(s["q_value"] - qmap(act, 1.0)) <= 1e-15 * s["q_value"]
    assert abs(s["q_slope"] - qmap(act, 1.0, order=1)) <= 1e-13 * max(1.0, abs(s["q_slope"]))
    assert abs(s["c_value_0"] - cmap(act, 0.0)) <= 1e-14
    assert abs(s["c_slope_0"] - cmap(act, 0.0, order=1)) <= 1e-13
    if act.smooth_order >= 1:
        assert abs(s["c_slope_1"] - cmap(act, 1.0, order=1)) <= 1e-13 * s["c_slope_1"]
    else:
        assert s["c_slope_1"] == math.inf
    if act.smooth_order >= 2:
        assert abs(s["c_curv_1"] - cmap(act, 1.0, order=2)) <= 1e-12 * max(1.0, s["c_curv_1"])
    else:
        assert s["c_curv_1"] == math.inf


# --- Monte Carlo: a wide random layer ------------------------------------------------------------

WIDTH = 8192


def wide_layer(act, q1: float, q2: float, c: float, seed: int) -> tuple[float, float, float]:
    """(estimate, standard error, estimate of Q(q1)) of E[phi(u) phi(v)] from one random layer
    ``phi(W x)``: W is WIDTH x 64 with N(0, 1/64) entries, |x1|^2 = 64 q1, |x2|^2 = 64 q2 and
    <x1, x2> = 64 c sqrt(q1 q2)."""
    rng = np.random.default_rng(seed)
    d = 64
    basis, _ = np.linalg.qr(rng.standard_normal((d, 2)))
    x1 = math.sqrt(d * q1) * basis[:, 0]
    x2 = math.sqrt(d * q2) * (c * basis[:, 0] + math.sqrt(1 - c * c) * basis[:, 1])
    w = rng.standard_normal((WIDTH, d)) / math.sqrt(d)
    h1, h2 = act(w @ x1), act(w @ x2)
    prod = h1 * h2
    return float(prod.mean()), float(prod.std(ddof=1) / math.sqrt(WIDTH)), float(
        np.mean(h1 * h1))


@pytest.mark.parametrize(("name", "t", "q1", "q2", "c"), [
    ("tanh", Transform(1.5, 0.3, 0.0, 1.0), 1.0, 1.0, 0.5),
    ("relu", Transform(1.0, -0.4), 0.7, 2.0, -0.3),
    ("elu", Transform(), 1.0, 1.0, 0.9),
    ("gelu", Transform(), 3.0, 0.2, 0.1),
    ("sign", Transform(1.0, 0.5), 1.0, 1.0, 0.6),
    ("x*tanh(softplus(x))", Transform(0.9), 1.0, 1.5, -0.8),
])
def test_monte_carlo_wide_layer(name: str, t: Transform, q1: float, q2: float, c: float) -> None:
    act = activation(name).transformed(t)
    estimate, stderr, _ = wide_layer(act, q1, q2, c, seed=zlib.crc32(name.encode()))
    kernel = cmap(act, c, q1, q2) * math.sqrt(qmap(act, q1) * qmap(act, q2))
    assert abs(estimate - kernel) <= 4 * stderr


@settings(max_examples=12, deadline=None, derandomize=True)
@given(name=st.sampled_from(list_activations()),
       alpha=st.floats(0.2, 3.0), beta=st.floats(-2.0, 2.0), delta=st.floats(-1.0, 1.0),
       q=st.floats(0.1, 4.0), c=st.floats(-0.95, 0.95))
def test_monte_carlo_random_transforms(name: str, alpha: float, beta: float, delta: float,
                                       q: float, c: float) -> None:
    act = activation(name).transformed(Transform(alpha, beta, delta, 1.0))
    estimate, stderr, _ = wide_layer(act, q, q, c, seed=7)
    kernel = cmap(act, c, q, q) * qmap(act, q)
    assert abs(estimate - kernel) <= 4 * stderr + 1e-12


# --- API behaviour ----------------------------------------------------------------------------

def test_shapes_and_scalars() -> None:
    c = np.linspace(-1, 1, 12).reshape(3, 4)
    assert cmap("tanh", c).shape == (3, 4)
    assert isinstance(cmap("tanh", 0.5), float)
    assert qmap("tanh", np.array([0.5, 1.0])).shape == (2,)
    assert isinstance(qmap("relu", 2.0), float)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        cmap("tanh", 1.5)
    with pytest.raises(ValueError, match="finite"):
        cmap("tanh", np.nan)
    with pytest.raises(ValueError, match="q1 must be a finite positive"):
        cmap("tanh", 0.5, q1=0.0)
    with pytest.raises(ValueError, match="q must be a finite positive"):
        qmap("tanh", -1.0)
    with pytest.raises(ValueError, match="order"):
        cmap("tanh", 0.5, order=-1)
    with pytest.raises(ValueError, match="identically zero"):
        local_summary("0*x")
    with pytest.raises(ValueError, match="Dirac"):
        cmap("elu", -1.0, q1=1.0, q2=2.0, order=3)
    assert cmap("relu", 1.0, order=2) == math.inf
    assert local_summary("relu")["c_curv_1"] == math.inf
