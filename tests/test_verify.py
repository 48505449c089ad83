"""Tests of kernelshape.verify: Theorem 13 / 27 checks, kernel approximation, the CLI.

Expected values are derived here independently (calculus on constructed maps, local maps
composed by hand, full gradient matrices, exact Gram identities), never copied from output.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import kernelshape as ks
from kernelshape.cli import main
from kernelshape.engine.activations import Transform, activation
from kernelshape.engine.maps import cmap, qmap
from kernelshape.solve import eoc_chain_states
from kernelshape.topology import (
    Dense,
    Network,
    Nonlinearity,
    Residual,
    Serial,
    nets,
    network,
    parse_spec,
)
from kernelshape.topology.spec import with_option
from kernelshape.verify import (
    check_cmap,
    kernel_approximation,
    maximize_abs,
    per_layer_ntk,
    polynomial_cmap,
    theorem13,
    theorem13_bounds,
    theorem27,
)
from kernelshape.verify.approximation import empirical_kernel, sample_features
from kernelshape.verify.finite import pair_inputs, suo_on_span
from kernelshape.verify.theorem27 import empirical_per_layer_ntk, gradient_per_layer_ntk


def shape_network(spec: str | Network, method: str, **targets: float
                  ) -> tuple[Network, dict[str, Transform]]:
    """(network, transforms under which its kernel maps describe ``method``'s init)."""
    net = parse_spec(spec) if isinstance(spec, str) else spec
    return net, ks.shape(net, method, **targets).network_transforms()

# activations whose maps take a fast float64 route under any transform (closed form or
# Hermite series); kinked ones are drawn without input shift (closed forms cover that case)
# (exp is left out: its q grows like exp(q) through layers and overflows float64)
SMOOTH = ["tanh", "softplus", "gelu", "erf", "sigmoid", "swish", "sin", "atan", "mish",
          "asinh", "bentid", "gaussian", "cos"]
KINKED = ["relu", "leaky_relu", "abs", "step", "sign"]


# --------------------------------------------------------------------------- maximization

def test_maximize_abs_finds_interior_extremum_analytically():
    # |c^3 - c| peaks at c = +-1/sqrt(3) with value 2/(3 sqrt 3) (calculus)
    best = maximize_abs(lambda c: c**3 - c)
    assert best.value == pytest.approx(2 / (3 * math.sqrt(3)), abs=1e-14)
    assert abs(abs(best.at) - 1 / math.sqrt(3)) < 1e-6


def test_maximize_abs_refines_a_peak_narrower_than_the_grid():
    centre, width = 0.1234567, 4e-4  # narrower than the ~2e-3 grid spacing near 0
    fn = lambda c: np.exp(-(((c - centre) / width) ** 2))  # noqa: E731
    grid = np.linspace(-1, 1, 1025)
    assert fn(grid).max() < 0.9  # the grid alone misses the peak
    best = maximize_abs(fn)
    assert best.value > 1 - 1e-9
    assert best.at == pytest.approx(centre, abs=1e-7)


def test_maximize_abs_endpoint_maximum():
    best = maximize_abs(lambda c: 0.25 * (1 - c) ** 2)
    assert best.value == pytest.approx(1.0, abs=1e-15)
    assert best.at == -1.0


# --------------------------------------------------------------------------- extremal maps

@pytest.mark.parametrize("b", [0.01, 0.2, 0.5, 0.9])
def test_quadratic_extremal_map_attains_every_upper_constant(b):
    """C(c) = (1-b)c + bc^2: C(0) = 0, C'(0) = 1-b, C'(1) = 1+b; at c = -1,
    |C - c| = 2b and |C' - 1| = 3b, which equal 2(1-C'(0)), 2(C'(1)-1), 2(1-C'(0))+(C'(1)-1)
    and 3(C'(1)-1): every upper bound of Theorem 13 is attained."""
    ch = check_cmap(polynomial_cmap([0.0, 1 - b, b]))
    assert ch.holds
    assert ch.max_dev.value == pytest.approx(2 * b, rel=1e-12)
    assert ch.max_slope_dev.value == pytest.approx(3 * b, rel=1e-12)
    assert ch.max_dev.at == -1.0 and ch.max_slope_dev.at == -1.0
    for name in ("upper", "slope", "upper0", "slope0"):
        assert ch.bound(name).ratio == pytest.approx(1.0, abs=1e-12), name
    # the lower bound is far from tight here: (b/4) / (2b) = 1/8
    assert ch.bound("lower").ratio == pytest.approx(1 / 8, rel=1e-12)


@pytest.mark.parametrize("b", [0.05, 0.5, 1.0])
def test_cubic_map_shows_lower_constant_is_not_attained(b):
    """C(c) = (1-b)c + bc^3: max|C - c| = b max|c^3 - c| = 2b/(3 sqrt 3), 1 - C'(0) = b, so the
    lower bound's tightness is (b/4) / (2b/(3 sqrt 3)) = 3 sqrt(3)/8 ~ 0.65 < 1."""
    ch = check_cmap(polynomial_cmap([0.0, 1 - b, 0.0, b]))
    assert ch.holds
    assert ch.max_dev.value == pytest.approx(2 * b / (3 * math.sqrt(3)), rel=1e-10)
    assert ch.bound("lower").ratio == pytest.approx(3 * math.sqrt(3) / 8, rel=1e-10)


def test_random_search_respects_the_lower_constant():
    from kernelshape.verify.theorem13 import lower_ratio_search

    ratio, coef = lower_ratio_search(trials=2000, seed=1)
    assert ratio >= 0.25
    assert np.all(coef >= 0) and coef.sum() == pytest.approx(1.0)


def test_a_map_that_is_not_a_pgf_is_reported_as_violating():
    """1.2c - 0.2c^3 has a negative coefficient: C'(1) = 0.6 < 1 although C(0) = 0, so
    max|C - c| > 0 > 2(C'(1) - 1). The check must say so (it can fail)."""
    ch = check_cmap(polynomial_cmap([0.0, 1.2, 0.0, -0.2]))
    assert not ch.holds
    assert not ch.bound("upper0").holds and not ch.bound("slope0").holds


def test_conditional_bounds_need_c0_zero():
    bounds = theorem13_bounds(0.1, 0.8, 1.05, 0.3, 0.2)
    assert [b.applies for b in bounds] == [True, True, True, False, False]
    assert all(b.holds for b in bounds if not b.applies)


@st.composite
def pgf(draw, zero_constant: bool = False):
    k = draw(st.integers(1, 8))
    w = draw(st.lists(st.floats(0.0, 1.0), min_size=k + 1, max_size=k + 1))
    if zero_constant:
        w[0] = 0.0
    assume(sum(w) > 1e-3)
    return np.array(w) / sum(w)


@given(pgf())
@settings(max_examples=60, deadline=None, derandomize=True)
def test_theorem13_holds_for_random_power_series(coef):
    assert check_cmap(polynomial_cmap(coef), 257).holds


@given(pgf(zero_constant=True))
@settings(max_examples=60, deadline=None, derandomize=True)
def test_theorem13_holds_for_random_power_series_with_zero_constant(coef):
    ch = check_cmap(polynomial_cmap(coef), 257)
    assert ch.bound("upper0").applies and ch.holds


# --------------------------------------------------------------------------- subnetwork maps

@pytest.mark.parametrize("spec,method", [("mlp:depth=6,activation=tanh", "none"),
                                         ("mlp:depth=6,activation=tanh", "dks"),
                                         ("mlp:depth=4,activation=relu", "none")])
def test_whole_network_subnetwork_map_equals_network_cmap(spec, method):
    net, transforms = shape_network(spec, method)
    sub = net.subnetworks()[0]
    assert sub.kind == "network"
    c = np.linspace(-1, 1, 41)
    value, slope = net.subnetwork_cmap(sub, c, transforms=transforms)
    np.testing.assert_allclose(value, net.cmap(c, transforms=transforms), atol=1e-14)
    np.testing.assert_allclose(slope, net.cmap(c, transforms=transforms, order=1), atol=1e-13)


def test_branch_subnetwork_map_is_the_branch_composition():
    """Branch fork -> Dense -> tanh -> Dense of a residual block after a first tanh layer:
    its C map is the local tanh map at the fork's q = Q_tanh(1)."""
    body = Serial(Dense(8), Nonlinearity("tanh"),
                  Residual(Serial(Dense(8), Nonlinearity("tanh"), Dense(8)), shortcut_weight=0.6),
                  Dense(2))
    net = network(body, (8,))
    branches = [s for s in net.subnetworks() if s.kind == "branch"]
    assert len(branches) == 1
    q_fork = qmap("tanh", 1.0)
    assert net.q_values()[branches[0].start] == pytest.approx(q_fork, rel=1e-14)
    c = np.linspace(-1, 1, 17)
    value, slope = net.subnetwork_cmap(branches[0], c)
    np.testing.assert_allclose(value, cmap("tanh", c, q_fork, q_fork), atol=1e-14)
    np.testing.assert_allclose(slope, cmap("tanh", c, q_fork, q_fork, order=1), atol=1e-13)


def test_prefix_subnetworks_are_compositions_of_local_maps():
    net, transforms = shape_network("mlp:depth=3,activation=softplus", "dks", zeta=2.0)
    act = net.transformed_activations(transforms)["softplus"]
    prefixes = [s for s in net.subnetworks(prefixes=True) if s.kind == "prefix"]
    assert len(prefixes) == 3
    c = np.linspace(-1, 1, 9)
    expected = c
    for sub in prefixes:
        expected = cmap(act, expected)  # q = 1 at every layer of a DKS net (Q(1) = 1)
        np.testing.assert_allclose(net.subnetwork_cmap(sub, c, transforms=transforms)[0],
                                   expected, atol=1e-12)


# --------------------------------------------------------------------------- Theorem 13

@pytest.mark.parametrize("spec,method,kw", [
    ("mlp:depth=20,activation=tanh", "dks", {"zeta": 1.5}),
    ("mlp:depth=20,activation=tanh", "tat", {"tau": 0.3}),
    ("mlp:depth=20,activation=leaky_relu", "tat", {"eta": 0.9}),
    ("mlp:depth=30,activation=relu", "none", {}),
    ("resnet:depth=18,shortcut_weight=0.6,activation=softplus", "dks", {"zeta": 1.2}),
])
def test_theorem13_holds_on_shaped_networks(spec, method, kw):
    report = theorem13(spec, method, **kw)
    assert report.holds
    assert report.subnets and all(s.check.max_dev.value >= 0 for s in report.subnets)
    net = report.subnets[0]
    if method == "dks":  # the network condition: C'_f(1) = zeta on the maximizing subnetwork
        assert max(s.check.c_slope_1 for s in report.subnets) == pytest.approx(kw["zeta"],
                                                                               rel=1e-9)
        assert abs(net.check.c_value_0) < 1e-12
        assert net.check.bound("upper0").applies


def test_theorem13_refuses_exploding_q_quickly():
    # 2*softplus without shaping: Q(q) ~ 4 q / 2 for large q, so q doubles per layer from q = 1
    with pytest.raises(ValueError, match="q reaches"):
        theorem13("mlp:depth=20,activation=2*softplus(x)", "none")


def test_theorem13_refuses_eoc_without_a_fixed_point():
    # EOC softplus without biases has no fixed point: q* = 0 fails since softplus(0) != 0
    with pytest.raises(ValueError, match="no edge of chaos"):
        theorem13("mlp:depth=20,activation=softplus", "eoc")


def test_theorem13_dedupes_identical_branches_but_reports_each():
    report = theorem13("resnet:depth=18,shortcut_weight=0.6,activation=softplus", "dks")
    net = nets.resnet(18, shortcut_weight=0.6, activation="softplus")
    assert len(report.subnets) == len(net.subnetworks())


@given(act=st.sampled_from(SMOOTH + KINKED), depth=st.integers(1, 4),
       scale=st.floats(0.25, 1.5), shift=st.floats(-0.5, 0.5), out_shift=st.floats(-0.5, 0.5),
       gain=st.floats(0.9, 1.1))
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
def test_theorem13_property_random_activations_and_transforms(act, depth, scale, shift,
                                                              out_shift, gain):
    """Random transforms gamma (phi(alpha x + beta) + delta), gamma chosen so that
    Q(1) = gain^2 (q stays moderate through the layers; q != 1 for gain != 1)."""
    if act in KINKED:
        shift = 0.0
    t = Transform(scale, shift, out_shift, 1.0)
    t = Transform(scale, shift, out_shift, gain / math.sqrt(qmap(activation(act).transformed(t),
                                                                     1.0)))
    net = nets.mlp(depth, width=8, activation=act, input_dim=8, num_classes=2)
    report = theorem13(net, transforms={act: t}, n=257)
    assert report.holds, [(b.name, b.small, b.large) for s in report.subnets
                          for b in s.check.bounds if not b.holds]


@given(preset=st.sampled_from(["mlp", "convnet", "resnet"]),
       act=st.sampled_from(["tanh", "softplus", "gelu", "swish"]),
       method=st.sampled_from(["none", "dks", "tat"]), depth=st.integers(1, 6),
       zeta=st.floats(1.05, 3.0), tau=st.floats(0.05, 1.0), weight=st.floats(0.0, 0.95))
@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
def test_theorem13_property_presets_and_methods(preset, act, method, depth, zeta, tau,
                                                weight):
    if preset == "mlp":
        net = nets.mlp(depth, width=8, activation=act, input_dim=8, num_classes=2)
    elif preset == "convnet":
        net = nets.convnet(depth, channels=4, activation=act, input_shape=(4, 4, 2))
    else:
        net = nets.resnet(18, shortcut_weight=weight, activation=act, width=2,
                          input_shape=(8, 8, 1))
    report = theorem13(net, method, zeta=zeta, tau=tau, n=257)
    assert report.holds
    if method == "dks":
        assert max(s.check.c_slope_1 for s in report.subnets) == pytest.approx(zeta, rel=1e-8)


# --------------------------------------------------------------------------- Theorem 27

def test_empirical_ntk_factorization_equals_full_gradients():
    net, transforms = shape_network(
        "mlp:depth=3,width=24,input_dim=12,num_classes=3,activation=tanh", "dks")
    cos = [-1.0, -0.2, 0.6, 1.0]
    fast = empirical_per_layer_ntk(net, transforms, cos, seed=3)
    full = gradient_per_layer_ntk(net, transforms, cos, seed=3)
    assert list(fast) == list(full) and len(fast) == 4
    for k in fast:
        np.testing.assert_allclose(fast[k], full[k], rtol=1e-12, atol=1e-13)


def test_infinite_ntk_of_a_linear_network_is_the_input_kernel():
    net = nets.mlp(4, width=8, activation="identity", input_dim=8, num_classes=2)
    c = np.linspace(-1, 1, 11)
    for value in per_layer_ntk(net, None, c).values():
        np.testing.assert_allclose(value, c, atol=1e-14)


def test_infinite_ntk_is_prefix_map_times_suffix_slope():
    """At q = 1: Theta_i = C_g(c) C_h'(C_g(c)), g = first i-1 nonlinear layers, h = the rest."""
    depth = 4
    net, transforms = shape_network(f"mlp:depth={depth},activation=softplus", "dks", zeta=2.0)
    act = net.transformed_activations(transforms)["softplus"]
    c = np.linspace(-1, 1, 7)
    theta = list(per_layer_ntk(net, transforms, c).values())
    assert len(theta) == depth + 1
    for i in range(depth + 1):
        x = c.copy()
        for _ in range(i):
            x = cmap(act, x)
        slope, y = np.ones_like(c), x
        for _ in range(depth - i):
            slope = slope * cmap(act, y, order=1)
            y = cmap(act, y)
        np.testing.assert_allclose(theta[i], x * slope, atol=1e-12)


def test_empirical_ntk_approaches_infinite_width():
    spec = "mlp:depth=3,width=1024,input_dim=64,num_classes=10,activation=tanh"
    net, transforms = shape_network(spec, "dks", zeta=1.5)
    cos = [-0.5, 0.0, 0.5, 1.0]
    inf = per_layer_ntk(net, transforms, cos)
    errors = []
    for seed in range(3):
        emp = empirical_per_layer_ntk(net, transforms, cos, seed)
        errors += [np.abs(emp[k] - inf[k]).max() for k in emp]
    # O(sqrt(depth/width)) fluctuations; 4 sqrt(4/1024) = 0.25
    assert max(errors) < 4 * math.sqrt(4 / 1024)


@pytest.mark.parametrize("depth", [2, 8, 30])
def test_theorem27_bound_holds_at_infinite_width(depth):
    report = theorem27(f"mlp:depth={depth},activation=tanh", zetas=(1.05, 1.5, 2.5), widths=())
    assert report.holds and len(report.checks) == 3
    for ch in report.checks:
        assert 0 < ch.max_dev <= 11 * (ch.zeta - 1)
        # sharper, derived at q = 1: Theta_i - c = C_g(c)(C_h'(C_g(c)) - 1) + (C_g(c) - c), so
        # Theorem 13 on the prefix g and suffix h gives <= 3(C_h'(1)-1) + 2(C_g'(1)-1)
        # <= 3(zeta - 1) because C_g'(1) C_h'(1) = zeta
        assert ch.max_dev <= 3 * (ch.zeta - 1) + 1e-9


def test_theorem27_rejects_branching_networks():
    with pytest.raises(ValueError, match="chains"):
        theorem27("resnet:depth=18,shortcut_weight=0.6", widths=())


# --------------------------------------------------------------------------- approximation

def test_suo_on_span_preserves_the_gram_matrix_exactly():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 50))
    for fan_out in (50, 80):
        y = suo_on_span(rng, x, fan_out)
        assert y.shape == (3, fan_out)
        np.testing.assert_allclose(y @ y.T / fan_out, x @ x.T / 50, atol=1e-12)


def test_suo_on_span_projection_is_unbiased():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 40))
    grams = [suo_on_span(rng, x, 10) for _ in range(4000)]
    mean = np.mean([g @ g.T for g in grams], axis=0)
    np.testing.assert_allclose(mean, x @ x.T * 10 / 40, rtol=0.05, atol=0.3)


def test_pair_inputs_have_the_requested_kernel():
    x = pair_inputs(np.random.default_rng(2), 30, [-1.0, 0.3, 1.0])
    k = x @ x.T / 30
    np.testing.assert_allclose(np.diag(k), 1.0, atol=1e-12)
    np.testing.assert_allclose(k[0, 1:], [-1.0, 0.3, 1.0], atol=1e-12)


def test_frame_and_matrix_samplers_agree_in_distribution():
    net, transforms = shape_network(
        "mlp:depth=3,width=32,input_dim=16,num_classes=2,activation=tanh", "dks")
    cos = [0.0, 0.7]
    stats = {}
    for sampler in ("frame", "matrix"):
        rows = [np.concatenate(empirical_kernel(sample_features(
            net, transforms, cos, s, sampler))) for s in range(300)]
        stats[sampler] = np.array(rows)
    a, b = stats["frame"], stats["matrix"]
    se = np.sqrt(a.var(0) / len(a) + b.var(0) / len(b))
    assert np.all(np.abs(a.mean(0) - b.mean(0)) < 4.5 * se)
    assert np.all(np.abs(a.std(0) / b.std(0) - 1) < 0.25)


def test_kernel_approximation_error_shrinks_like_inverse_sqrt_width():
    report = kernel_approximation("mlp:depth=5,activation=tanh", "dks",
                                  widths=(64, 256, 1024, 4096), seeds=24)
    assert -0.7 < report.c_slope < -0.3
    assert -0.7 < report.q_slope < -0.3
    assert report.q_pred == pytest.approx(1.0, abs=1e-10)  # DKS: Q(1) = 1 at every layer


def test_eoc_chain_without_bias_matches_the_network_map():
    act = activation("tanh")
    c = np.linspace(-1, 1, 9)
    states = eoc_chain_states(act, 5, 1.0, 0.0, c, 1.0)
    net = nets.mlp(5, width=8, activation="tanh", input_dim=8, num_classes=2)
    np.testing.assert_allclose(states[-1][1], net.cmap(c), atol=1e-13)


def test_eoc_chain_with_bias_stays_at_its_fixed_point():
    act = activation("tanh")
    sw2, sb2 = 1.7, 0.05
    q_star = 1.0
    for _ in range(2000):  # the fixed point q* = s_w^2 Q(q*) + s_b^2, by iteration (attracting)
        q_star = sw2 * float(qmap(act, q_star)) + sb2
    states = eoc_chain_states(act, 20, sw2, sb2, np.array([0.3]), q_star)
    q_pre = [sw2 * q + sb2 for q, _ in states]
    np.testing.assert_allclose(q_pre, q_pre[0], rtol=1e-10)


# --------------------------------------------------------------------------- SPEC / CLI

def test_with_option():
    assert with_option("mlp:depth=10,activation=tanh", "depth", 50) == \
        "mlp:depth=50,activation=tanh"
    assert with_option("mlp:activation=max(x,0.1*x)", "width", 64) == \
        "mlp:activation=max(x,0.1*x),width=64"


def run_cli(argv: list[str]) -> int:
    """``kernelshape verify ...`` in-process."""
    return main(["verify", *argv])


def _args(theorem, net, *extra, as_json=False):
    return [theorem, "--net", net, *extra, *(["--json"] if as_json else [])]


def test_cli_theorem13_markdown(capsys):
    code = run_cli(_args("theorem13", "mlp:depth=5,activation=tanh", "--method", "none,dks",
                         "--zeta", "1.2,2", "--grid", "257"))
    out = capsys.readouterr().out
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| mlp")]
    assert len(rows) == 3  # none + dks at two zetas
    assert "zeta=1.2" in out and "zeta=2" in out


def test_cli_theorem13_json(capsys):
    code = run_cli(_args("theorem13", "mlp:depth=3,activation=softplus", "--method", "dks",
                         as_json=True))
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["holds"] is True
    sub = payload["reports"][0]["subnetworks"][0]
    assert {b["name"] for b in sub["bounds"]} == {"lower", "upper", "slope", "upper0", "slope0"}


def test_cli_theorem27_table(capsys):
    code = run_cli(_args("theorem27", "mlp:depth=2,width=32,input_dim=16,activation=tanh",
                         "--zeta", "1.5", "--widths", "32", "--grid", "129"))
    out = capsys.readouterr().out
    assert code == 0
    assert "| inf |" in out and "| 32 |" in out


def test_cli_approximation_json(capsys):
    code = run_cli(_args("approximation", "mlp:depth=2,activation=tanh", "--widths", "64,256",
                         "--seeds", "4", as_json=True))
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and len(payload["reports"][0]["points"]) == 2


@pytest.mark.parametrize("extra", [["--bogus"], ["--method", "xyz"], ["--zeta", "a,b"],
                                   ["--depths", "0"]])
def test_cli_bad_input_exit_code_2(extra, capsys):
    assert run_cli(_args("theorem13", "mlp:depth=2", *extra)) == 2
    assert "error" in capsys.readouterr().err


def test_cli_bad_network_and_infeasible_target(capsys):
    assert run_cli(_args("theorem13", "nosuchpreset:depth=2")) == 2
    assert run_cli(_args("theorem13", "mlp:depth=2", "--method", "dks", "--zeta", "0.5")) == 2
    assert "zeta" in capsys.readouterr().err


def test_kernelshape_verify_command_dispatches(capsys):
    assert main(["verify", "theorem13", "--net", "mlp:depth=2,activation=tanh", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["theorem"] == "theorem13"


@pytest.mark.slow
@pytest.mark.parametrize("act", ["elu", "selu", "softsign"])
def test_theorem13_quadrature_route_activations(act):
    t = Transform(1.2, 0.3, -0.1, 1.1)
    net = nets.mlp(2, width=8, activation=act, input_dim=8, num_classes=2)
    assert theorem13(net, transforms={act: t}).holds


@pytest.mark.slow
def test_theorem13_dks_relu_network():
    assert theorem13("mlp:depth=10,activation=relu", "dks").holds
