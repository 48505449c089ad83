"""Accuracy of both engines: float64 against ``dps=40``, and ``dps=N`` against ``dps=2N``.

* float64 (closed / hermite / quadrature routes) must be within 1e-12 (absolute, for C values
  and normalized derivatives, i.e. every local-summary key but ``q_value``; Q values relative)
  of ``dps=40`` for every built-in, q in [0.01, 100], c in [-1, 1] and transforms with
  |input_scale| <= 10, |input_shift| <= 5. CI runs a fixed sample (its 2-D kernels and
  extreme-q ends against ``dps=20``, ample for a 1e-12 check and half the time); the full
  sweep is ``slow``.
* ``dps=N`` must be correct to N-5 digits, checked against ``dps=2N``: 1-D quantities for
  every built-in, 2-D kernels on a few points (they cost seconds each at 40 digits).
"""

from __future__ import annotations

from functools import cache

import mpmath as mp
import numpy as np
import pytest

from kernelshape.engine import maps
from kernelshape.engine.activations import Transform, activation, list_activations
from kernelshape.engine.maps import SUMMARY_KEYS, cmap, local_summary, qmap

FLOAT_TOL = 1e-12
TRANSFORMS = {
    "id": Transform(),
    "steep": Transform(7.5, -3.2, 0.4, 1.3),
    "flip": Transform(-10.0, 5.0, 0.0, 1.0),
    "flat": Transform(0.3, 1.0, -0.2, 2.0),
}


def _act(name: str, transform: str):
    return activation(name).transformed(TRANSFORMS[transform])


@cache
def _summary(name: str, transform: str, dps: int | None) -> dict:
    return local_summary(_act(name, transform), dps=dps)


def _close(value: float, reference: mp.mpf, tol: float) -> bool:
    if mp.isinf(reference):
        return value == float(reference)
    return abs(value - float(reference)) <= tol


def _check_summary(name: str, transform: str) -> None:
    got, ref = _summary(name, transform, None), _summary(name, transform, 40)
    for key in SUMMARY_KEYS:
        if key == "q_value":
            tol = FLOAT_TOL * float(abs(ref[key]))
        elif key == "q_slope":
            tol = FLOAT_TOL * max(1.0, float(abs(ref["q_value"])))
        else:  # absolute, or relative where a normalized derivative exceeds 1 (C''(1) ~ 800)
            tol = FLOAT_TOL * max(1.0, float(abs(ref[key])) if mp.isfinite(ref[key]) else 1.0)
        assert _close(got[key], ref[key], tol), (key, got[key], mp.nstr(ref[key], 20))


def _check_q_and_ends(name: str, transform: str, qs: tuple[float, ...], dps: int = 40) -> None:
    """Q at extreme q (relative) and C, C', C'' at c = +-1 with q1 != q2 (1-D at ``dps``)."""
    act = _act(name, transform)
    for q in qs:
        ref = qmap(act, q, dps=dps)
        assert abs(qmap(act, q) - float(ref)) <= FLOAT_TOL * float(ref), (q, mp.nstr(ref, 20))
    q1, q2 = qs[0], qs[-1]
    for order in range(min(act.smooth_order, 2) + 1):
        for c in (-1.0, 1.0):
            ref = cmap(act, c, q1, q2, order=order, dps=dps)
            got = cmap(act, c, q1, q2, order=order)
            assert abs(got - float(ref)) <= FLOAT_TOL * max(1.0, float(abs(ref))), (order, c)


# --- CI sample -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list_activations())
def test_float64_summary_within_1e12_of_dps40(name: str) -> None:
    _check_summary(name, "id")


@pytest.mark.parametrize(("name", "transform"), [
    ("tanh", "steep"), ("relu", "flip"), ("sign", "steep"), ("softsign", "flat"),
])
def test_float64_transformed_within_1e12_of_dps40(name: str, transform: str) -> None:
    _check_summary(name, transform)


@pytest.mark.parametrize("name", ["tanh", "step"])
def test_float64_extreme_q_within_1e12_of_dps20(name: str) -> None:
    _check_q_and_ends(name, "id", (0.01, 100.0), dps=20)


@pytest.mark.parametrize(("name", "transform", "q1", "q2", "c", "order"), [
    ("tanh", "flat", 0.5, 2.0, 0.6, 0),  # Hermite route, q1 != q2
    ("elu", "id", 1.0, 1.0, -0.45, 1),  # quadrature route, derivative
])
def test_float64_interior_c_within_1e12_of_dps20(name: str, transform: str, q1: float,
                                                 q2: float, c: float, order: int) -> None:
    act = _act(name, transform)
    ref = cmap(act, c, q1, q2, order=order, dps=20)
    assert abs(cmap(act, c, q1, q2, order=order) - float(ref)) <= FLOAT_TOL


@pytest.mark.parametrize("name", list_activations())
def test_dps_n_correct_to_n_minus_5_digits_1d(name: str) -> None:
    """dps=20 against dps=40: every summary key to 15 significant digits."""
    low, high = _summary(name, "id", 20), _summary(name, "id", 40)
    for key in SUMMARY_KEYS:
        if mp.isinf(high[key]):
            assert mp.isinf(low[key])
            continue
        with mp.workdps(45):
            err = abs(low[key] - high[key])
            assert err <= mp.mpf(10) ** -15 * max(1, abs(high[key])), (key, mp.nstr(err, 3))


def test_dps_n_correct_to_n_minus_5_digits_2d() -> None:
    """2-D kernel of a shifted ReLU (its kink moves with z1 and is placed exactly): dps=10 vs
    dps=20, and float64 vs dps=20 (more points, at 20 vs 40 digits, in the slow sweep)."""
    act = activation("relu").transformed(Transform(1.0, 0.4, 0.1, 1.0))
    low = cmap(act, -0.8, dps=10)
    high = cmap(act, -0.8, dps=20)
    with mp.workdps(25):
        assert abs(low - high) <= mp.mpf(10) ** -5 * max(1, abs(high))
    assert abs(cmap(act, -0.8) - float(high)) <= 1e-15


def test_dps_results_carry_n_digits() -> None:
    """Known values to ~N digits (not rounded to float64 on the way out)."""
    with mp.workdps(60):
        relu = local_summary("relu", dps=40)
        assert abs(relu["c_value_0"] - 1 / mp.pi) < mp.mpf(10) ** -38
        assert abs(relu["q_value"] - mp.mpf(1) / 2) < mp.mpf(10) ** -38
        erf = qmap("erf", 1.0, dps=40)  # quadrature at 40 digits vs the closed form
        assert abs(erf - 2 / mp.pi * mp.asin(mp.mpf(2) / 3)) < mp.mpf(10) ** -38
        sign = cmap("sign", 0.3, dps=20)  # 2-D, jump at 0
        assert abs(sign - 2 / mp.pi * mp.asin(mp.mpf(0.3))) < mp.mpf(10) ** -18  # float 0.3
        assert abs(cmap("sin", 1.0, 2.0, 2.0, dps=30) - mp.mpf(1)) < mp.mpf(10) ** -28


def test_dps_results_are_mpmath_numbers_and_vectorized() -> None:
    out = cmap("tanh", np.array([-1.0, 1.0]), dps=15)
    assert out.shape == (2,) and all(isinstance(v, mp.mpf) for v in out)
    assert isinstance(qmap("tanh", 1.0, dps=15), mp.mpf)
    with pytest.raises(ValueError, match="dps"):
        qmap("tanh", 1.0, dps=2)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        cmap("tanh", 1.5, dps=15)
    assert local_summary("relu", dps=15)["c_curv_1"] == mp.inf


# --- the full sweep --------------------------------------------------------------------------

SWEEP = [(name, t) for name in list_activations() for t in TRANSFORMS]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "transform"), SWEEP)
def test_sweep_float64_within_1e12_of_dps40(name: str, transform: str) -> None:
    _check_summary(name, transform)
    _check_q_and_ends(name, transform, (0.01, 1.0, 100.0))
    act = _act(name, transform)
    if transform in ("steep", "flip") and name not in ("identity", "square"):
        qs = (0.01, 0.3)  # keep 2-D steep transforms at dps=40 within minutes
    else:
        qs = (0.3, 3.0)
    for c, order in ((-0.7, 0), (0.5, 0), (0.95, 1)):
        if order > act.smooth_order:
            continue
        ref = cmap(act, c, qs[0], qs[1], order=order, dps=40)
        got = cmap(act, c, qs[0], qs[1], order=order)
        assert abs(got - float(ref)) <= FLOAT_TOL * max(1.0, float(abs(ref))), (c, order)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_activations())
def test_sweep_steep_tanh_like_moments(name: str) -> None:
    """E[phi(20 z + b)^2] and E[phi(20 z + b)] against dps=40 for several shifts b."""
    for b in (0.0, 0.7, -3.1, 4.9):
        act = activation(name).transformed(Transform(20.0, b))
        ref = qmap(act, 1.0, dps=40)
        assert abs(qmap(act, 1.0) - float(ref)) <= FLOAT_TOL * float(ref), b


@pytest.mark.slow
@pytest.mark.parametrize(("name", "transform"), SWEEP)
def test_sweep_dps_n_vs_2n_1d(name: str, transform: str) -> None:
    act = _act(name, transform)
    for n in (15, 30):
        low, high = local_summary(act, dps=n), local_summary(act, dps=2 * n)
        for key in SUMMARY_KEYS:
            if mp.isinf(high[key]):
                continue
            with mp.workdps(2 * n + 5):
                assert abs(low[key] - high[key]) <= mp.mpf(10) ** (5 - n) * max(1, abs(high[key]))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "transform", "c"), [
    ("tanh", "id", 0.3), ("tanh", "flat", -0.97), ("relu", "id", 0.97), ("softsign", "flat", 0.5),
    ("gelu", "flat", 0.35),
    ("selu", "id", -0.2), ("gelu", "steep", 0.6), ("sign", "flat", 0.1),
])
def test_sweep_dps_n_vs_2n_2d(name: str, transform: str, c: float) -> None:
    act = _act(name, transform)
    low, high = cmap(act, c, 0.8, 1.25, dps=20), cmap(act, c, 0.8, 1.25, dps=40)
    with mp.workdps(45):
        assert abs(low - high) <= mp.mpf(10) ** -15 * max(1, abs(high))
    if act.smooth_order >= 1:
        low = cmap(act, c, 0.8, 1.25, order=1, dps=20)
        high = cmap(act, c, 0.8, 1.25, order=1, dps=40)
        with mp.workdps(45):
            assert abs(low - high) <= mp.mpf(10) ** -15 * max(1, abs(high))


def test_route_table_is_complete() -> None:
    """Every built-in has a route (used by docs/maps.md)."""
    assert {maps.route(name) for name in list_activations()} <= {"closed", "hermite",
                                                                  "quadrature"}
