"""Root selection: grid independence, symmetries, sigmoid = shifted tanh, TAT stability.

The local systems have several roots; kernelshape enumerates them from a grid of starts,
canonicalizes (input_scale > 0, input_shift >= 0 for odd/even activations), removes
symmetric duplicates, filters TAT roots by ``|Q''(1)| <= tau_local`` and picks the smallest
|input_shift|. These tests check that the choice does not depend on the start grid and that
the symmetries really map solutions onto equivalent solutions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kernelshape as ks
from kernelshape.topology import nets

DEPTH = 50
C_GRID = np.linspace(-1.0, 1.0, 21)
KEYS = ("input_scale", "input_shift", "output_shift", "output_scale")

# every (activation, method) pair with roots in the search box (13 s in all)
CASES = [(a, m) for a in ("tanh", "sigmoid", "erf", "softplus", "swish", "gelu", "gelu_exact",
                          "atan", "asinh", "bentid", "elu", "softsign", "selu")
         for m in ("dks", "tat") if not (m == "tat" and a == "selu")]


def solve(activation: str, method: str, depth: int = DEPTH, **kw) -> ks.solve.Solution:
    return ks.shape(nets.mlp(depth, activation=activation), method, **kw)


def assert_same_params(a: dict[str, float], b: dict[str, float], rel: float = 1e-9) -> None:
    for key in KEYS:
        assert math.isclose(a[key], b[key], rel_tol=rel, abs_tol=rel), (key, a[key], b[key])


def check_grid_independence(activation: str, method: str) -> None:
    default = solve(activation, method)
    dense = solve(activation, method, all_solutions=True)
    assert_same_params(default.params[activation], dense.params[activation])
    selected = [r for r in dense.alternatives[activation] if r["selected"]]
    assert len(selected) == 1
    assert_same_params(selected[0], default.params[activation])


@pytest.mark.parametrize("activation, method", CASES)
def test_dense_and_default_grids_pick_the_same_root(activation: str, method: str) -> None:
    check_grid_independence(activation, method)


def test_selection_rule_smallest_shift_among_certified_roots() -> None:
    """swish DKS has three roots; the selected one has the smallest |input_shift|."""
    sol = solve("swish", "dks", all_solutions=True)
    roots = sol.alternatives["swish"]
    assert len(roots) >= 3
    chosen = next(r for r in roots if r["selected"])
    assert abs(chosen["input_shift"]) == min(abs(r["input_shift"]) for r in roots)
    assert all(r["input_scale"] > 0 for r in roots)
    # every listed root is a genuine solution (independent 30-digit check of two of them)
    from kernelshape.engine.precise import local_summary

    for root in roots[:2]:
        t = ks.Transform(*(root[k] for k in KEYS))
        values = local_summary(ks.activation("swish").transformed(t), dps=20)
        for key, target in sol.local_targets["swish"].items():
            assert abs(float(values[key]) - target) < 1e-12, (root, key)


# --- symmetries -----------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["tanh", "erf", "atan"])
@pytest.mark.parametrize("method", ["dks", "tat"])
def test_odd_activation_roots_are_canonical(activation: str, method: str) -> None:
    sol = solve(activation, method, all_solutions=True)
    for root in sol.alternatives[activation]:
        assert root["input_scale"] > 0 and root["input_shift"] >= 0
    t = sol.transforms[activation]
    assert t.input_scale > 0 and t.input_shift > 0


@pytest.mark.parametrize("method", ["dks", "tat"])
def test_odd_mirror_and_reflection_give_equivalent_maps(method: str) -> None:
    """(a, b, d, g) -> (a, -b, -d, g) gives phi_hat_m(x) = -phi_hat(-x) for odd phi, and
    a -> -a gives phi_hat(-x): both leave every Q and C map unchanged."""
    sol = solve("tanh", method)
    t = sol.transforms["tanh"]
    tanh = ks.activation("tanh")
    mirror = ks.Transform(t.input_scale, -t.input_shift, -t.output_shift, t.output_scale)
    reflect = ks.Transform(-t.input_scale, t.input_shift, t.output_shift, t.output_scale)
    x = np.linspace(-3, 3, 13)
    base, mir, ref = (tanh.transformed(u) for u in (t, mirror, reflect))
    np.testing.assert_allclose(mir(x), -base(-x), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(ref(x), base(-x), rtol=1e-13, atol=1e-13)
    reference = ks.cmap(base, C_GRID)
    for other in (mir, ref):
        np.testing.assert_allclose(ks.cmap(other, C_GRID), reference, atol=1e-12)
        for order in (0, 1, 2):
            assert float(ks.qmap(other, 1.3, order=order)) == pytest.approx(
                float(ks.qmap(base, 1.3, order=order)), rel=1e-11, abs=1e-13)
        summary = ks.local_summary(other)
        for key, target in sol.local_targets["tanh"].items():
            assert summary[key] == pytest.approx(target, abs=1e-12)


def test_reflection_of_a_non_odd_activation_gives_the_same_maps() -> None:
    sol = solve("softplus", "tat")
    t = sol.transforms["softplus"]
    reflect = ks.Transform(-t.input_scale, t.input_shift, t.output_shift, t.output_scale)
    act = ks.activation("softplus")
    np.testing.assert_allclose(ks.cmap(act.transformed(reflect), C_GRID),
                               ks.cmap(act.transformed(t), C_GRID), atol=1e-12)


@pytest.mark.parametrize("method", ["dks", "tat"])
def test_sigmoid_choice_corresponds_to_tanh(method: str) -> None:
    """sigmoid(x) = (1 + tanh(x/2))/2, so sigmoid's (a, b, d, g) is tanh's
    (a/2, b/2, 2d + 1, g/2): kernelshape selects corresponding roots."""
    sig = solve("sigmoid", method).transforms["sigmoid"]
    tanh = solve("tanh", method).transforms["tanh"]
    mapped = {"input_scale": sig.input_scale / 2, "input_shift": sig.input_shift / 2,
              "output_shift": 2 * sig.output_shift + 1, "output_scale": sig.output_scale / 2}
    assert_same_params(mapped, tanh.as_dict(), rel=1e-9)
    # the same function, hence the same (parametrization-invariant) Q''(1)
    s_act = ks.activation("sigmoid").transformed(sig)
    t_act = ks.activation("tanh").transformed(tanh)
    x = np.linspace(-4, 4, 17)
    np.testing.assert_allclose(s_act(x), t_act(x), rtol=1e-8, atol=1e-8)
    assert float(ks.qmap(s_act, 1.0, order=2)) == pytest.approx(
        float(ks.qmap(t_act, 1.0, order=2)), rel=1e-6, abs=1e-12)
    if method == "tat":
        # the official rule input_scale * output_scale < 2 would reject sigmoid's root
        # (the product is 4x tanh's) although it is the same function as tanh's
        assert sig.input_scale * sig.output_scale >= 2.0
        assert tanh.input_scale * tanh.output_scale < 2.0


# --- TAT stability filter ---------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["tanh", "softplus", "gelu_exact"])
def test_tat_stability_filter_rejects_curved_q_maps(activation: str) -> None:
    """Roots with |Q''(1)| > tau_local are flagged unstable and never selected; Q''(1) is
    re-evaluated here at 20 digits (independent of the solver's float route)."""
    depth = 100
    sol = solve(activation, "tat", depth=depth, all_solutions=True)
    tau_local = 0.3 / depth
    assert sol.local_targets[activation]["c_curv_1"] == pytest.approx(tau_local, rel=1e-13)
    roots = sol.alternatives[activation]
    rejected = 0
    act = ks.activation(activation)
    for root in roots:
        t = ks.Transform(*(root[k] for k in KEYS))
        curvature = float(ks.qmap(act.transformed(t), 1.0, order=2, dps=20))
        assert curvature == pytest.approx(root["q_curv_1"], rel=1e-8, abs=1e-14)
        assert root["stable"] == (abs(curvature) <= tau_local)
        rejected += not root["stable"]
        if root["selected"]:
            assert root["stable"]
    assert rejected >= 1
    assert not sol.warnings


def test_tat_without_stable_root_warns_and_keeps_the_least_curved() -> None:
    """elu at depth 100: both roots have |Q''(1)| ~ 0.006 > tau_local = 0.003."""
    sol = solve("elu", "tat", depth=100, all_solutions=True)
    roots = sol.alternatives["elu"]
    assert not any(abs(r["q_curv_1"]) <= 0.003 for r in roots)
    chosen = next(r for r in roots if r["selected"])
    assert abs(chosen["q_curv_1"]) == min(abs(r["q_curv_1"]) for r in roots)
    assert any("no TAT root" in w for w in sol.warnings)
