"""``kernelshape.compat.dks``: the official ``dks`` call patterns, answered by kernelshape.

The call patterns and expected numbers are those of the official package's own test
(``tests/test_activation_transform.py``): the hand-written ResNet-101-like
``subnet_max_func`` below, parameter computation at zeta = 1.2 / tau = 0.2 / eta = 0.75, and
transformed-activation values at extreme targets (zeta = 12 with local Q slope 0.97,
tau = 4.5, eta = 0.95).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

import kernelshape as ks
from kernelshape.compat import dks as activation_transform
from kernelshape.compat.dks import DksRequest
from kernelshape.engine.precise import local_summary as precise_summary
from kernelshape.topology import nets

OFFICIAL_DKS = {"c_slope_1_target": 1.2}
OFFICIAL_TAT = {"c_val_0_target": 0.75, "c_curve_target": 0.2}
EXTREME_DKS = {"c_slope_1_target": 12.0, "local_q_slope_target": 0.97}
EXTREME_TAT = {"c_val_0_target": 0.95, "c_curve_target": 4.5}


def subnet_max_func(x: float, r_fn: Callable[[float], float],
                    shortcut_weight: float = 0.6) -> float:
    """The official test's subnetwork maximizing function of its modified ResNet-101."""
    blocks_per_group = (3, 4, 23, 3)
    res_branch_subnetwork_x = r_fn(r_fn(r_fn(x)))
    for i in range(4):
        for j in range(blocks_per_group[i]):
            res_x = r_fn(r_fn(r_fn(x)))
            shortcut_x = r_fn(x) if j == 0 else x
            x = shortcut_weight**2 * shortcut_x + (1.0 - shortcut_weight**2) * res_x
    x = r_fn(x)
    return max(x, res_branch_subnetwork_x)


# (names, method) -> expected parameters (the official test)
PARAMS = [
    (("softplus",), "DKS",
     {"softplus": {"input_scale": 0.18761008168267976, "input_shift": 0.40688063442262007,
                   "output_shift": -0.9213466151411376, "output_scale": 8.878672543665223}}),
    (("tanh", "softplus"), "DKS",
     {"tanh": {"input_scale": 0.07461073057540868, "input_shift": 0.5566915199964182,
               "output_shift": -0.5034378768692127, "output_scale": 18.002635964442558},
      "softplus": {"input_scale": 0.18761008168267976, "input_shift": 0.40688063442262007,
                   "output_shift": -0.9213466151411376, "output_scale": 8.878672543665223}}),
    (("leaky_relu",), "DKS",
     {"leaky_relu": {"negative_slope": 0.8761257073473065, "input_shift": -6.372924855154692e-13,
                     "output_shift": -0.049418692997275034,
                     "output_scale": 1.0651832705682147}}),
    (("softplus",), "TAT",
     {"softplus": {"input_scale": 0.15011489794748328, "input_shift": 0.5374599901127068,
                   "output_shift": -0.996481014465811, "output_scale": 10.54880187880574}}),
    (("tanh", "softplus"), "TAT",
     {"tanh": {"input_scale": 0.0580205218578313, "input_shift": 0.5218639804099805,
               "output_shift": -0.4796430704354356, "output_scale": 22.36066261763117},
      "softplus": {"input_scale": 0.15011489794748328, "input_shift": 0.5374599901127068,
                   "output_shift": -0.996481014465811, "output_scale": 10.54880187880574}}),
    (("leaky_relu",), "TAT",
     {"leaky_relu": {"output_scale": 1.196996549778802, "negative_slope": 0.6291800290346146}}),
    (("gelu", "gelu_exact"), "DKS",
     {"gelu": {"input_scale": 0.07036271496383567, "input_shift": 0.2586837248593587,
               "output_shift": -0.15758328114374964, "output_scale": 20.249573305194307},
      "gelu_exact": {"input_scale": 0.07043253126531114, "input_shift": 0.259489297927707,
                     "output_shift": -0.15815378961903598, "output_scale": 20.21158902315857}}),
]
RELU_PARAMS = {"input_shift": 1.0, "input_scale": 0.3685360046708044,
               "output_shift": -1.000373858553784, "output_scale": 2.721729988761473}

# (names, method) -> values at x = 0.6 and -0.6 (extreme targets; official test, 8 places)
VALUES = [
    (("softplus",), "DKS", {"softplus": [0.5205088334781294, -0.6970897398761904]}),
    (("tanh", "softplus"), "DKS", {"tanh": [0.6910746968773931, -0.5122335409369118],
                                   "softplus": [0.5205088334781294, -0.6970897398761904]}),
    (("softplus",), "TAT", {"softplus": [0.6923574763139374, -0.4935166367766701]}),
    (("leaky_relu",), "TAT", {"leaky_relu": [0.7954047194402861, -0.2955187511683813]}),
    (("gelu", "gelu_exact"), "TAT", {"gelu": [0.6922557817568101, -0.491992384704867],
                                     "gelu_exact": [0.6922429517529013,
                                                    -0.49198103131465193]}),
    (("tanh", "softplus", "relu", "leaky_relu"), "untransformed",
     {"tanh": [0.5370495669980353, -0.5370495669980353],
      "softplus": [1.0374879504858856, 0.4374879504858857],
      "relu": [0.6, 0.0], "leaky_relu": [0.6, -0.006]}),
]


def get(names, method, dks=None, tat=None, **kw):
    return activation_transform.get_transformed_activations(
        names, method=method, dks_params=dict(dks or OFFICIAL_DKS),
        tat_params=dict(tat or OFFICIAL_TAT), subnet_max_func=subnet_max_func, **kw)


# --- the official parameter test ---------------------------------------------------------------

@pytest.mark.parametrize("names, method, expected", PARAMS,
                         ids=[f"{'+'.join(n)}-{m}" for n, m, _ in PARAMS])
def test_official_parameter_computation(names, method, expected) -> None:
    got = activation_transform.get_activations_params(
        names, method=method, dks_params=dict(OFFICIAL_DKS), tat_params=dict(OFFICIAL_TAT),
        subnet_max_func=subnet_max_func)
    assert set(got) == set(expected)
    for name, params in expected.items():
        assert set(got[name]) == set(params)  # the official key layout
        for key, value in params.items():
            assert math.isclose(got[name][key], value, rel_tol=1e-7, abs_tol=1e-9), (name, key)


def test_official_relu_parameters_differ_by_their_quadrature_error() -> None:
    got = activation_transform.get_activations_params(
        ("relu",), "DKS", dks_params=dict(OFFICIAL_DKS), subnet_max_func=subnet_max_func)
    assert got["relu"]["input_shift"] == 1.0
    assert math.isclose(got["relu"]["input_scale"], RELU_PARAMS["input_scale"], rel_tol=1e-4)
    # exactness of kernelshape's relu constants: tests/test_solve.py


@pytest.mark.parametrize("names, method, expected", PARAMS[:2] + PARAMS[3:5],
                         ids=["softplus-DKS", "tanh+softplus-DKS", "softplus-TAT",
                              "tanh+softplus-TAT"])
def test_compat_and_derived_network_agree(names, method, expected) -> None:
    """The hand-written subnet_max_func and kernelshape's derived one (resnet-101, V2,
    shortcut 0.6) give the same constants."""
    got = activation_transform.get_activations_params(
        names, method=method, dks_params=dict(OFFICIAL_DKS), tat_params=dict(OFFICIAL_TAT),
        subnet_max_func=subnet_max_func)
    for name in names:
        sol = ks.shape(nets.resnet(101, version=2, shortcut_weight=0.6, activation=name),
                       method.lower(), zeta=1.2, tau=0.2)
        for key, value in got[name].items():
            assert value == pytest.approx(sol.params[name][key], rel=1e-11, abs=1e-13)


# --- the official value test (extreme targets) -------------------------------------------------

@pytest.mark.parametrize("names, method, expected", VALUES,
                         ids=[f"{'+'.join(n)}-{m}" for n, m, _ in VALUES])
def test_official_values(names, method, expected) -> None:
    acts = get(names, method, EXTREME_DKS, EXTREME_TAT)
    assert set(acts) == set(names)
    for name, (at_plus, at_minus) in expected.items():
        assert acts[name](0.6) == pytest.approx(at_plus, abs=1e-8)
        assert acts[name](-0.6) == pytest.approx(at_minus, abs=1e-8)
        assert callable(acts[name])
        out = acts[name](np.array([0.6, -0.6]))
        assert isinstance(out, np.ndarray) and out.shape == (2,)


def test_tanh_tat_extreme_returns_the_canonical_mirror() -> None:
    """At tau = 4.5 the official package returns tanh's mirrored root (input_shift < 0);
    kernelshape returns the canonical one, phi_hat(x) = -official(-x): same kernel maps."""
    acts = get(("tanh", "softplus"), "TAT", EXTREME_DKS, EXTREME_TAT)
    official = {0.6: 0.6860178437500071, -0.6: -0.49030275427738146}
    assert acts["tanh"](0.6) == pytest.approx(-official[-0.6], abs=1e-8)
    assert acts["tanh"](-0.6) == pytest.approx(-official[0.6], abs=1e-8)


@pytest.mark.parametrize("name, official", [
    ("relu", [0.6053339463256114, -0.6486764456443863]),
    ("leaky_relu", [0.5628988987673328, -0.6649764416535503]),
])
def test_kinked_extreme_values_are_exact_where_official_are_not(name, official) -> None:
    """relu and leaky_relu (Q'(1) = 0.97, which needs a nonzero input shift) at zeta = 12:
    the official values are off by 1e-6..1e-5 (no split at the kink); kernelshape's
    constants meet the conditions to 1e-13 at 30 digits."""
    solution = activation_transform.get_solution(
        (name,), "DKS", dks_params=dict(EXTREME_DKS), subnet_max_func=subnet_max_func)
    act = solution.transformed(name)
    assert abs(act(0.6) - official[0]) < 1e-4 and abs(act(-0.6) - official[1]) < 1e-4
    values = precise_summary(act, dps=30)
    for key, target in solution.local_targets[name].items():
        assert abs(float(values[key]) - target) < 1e-13, key
    if name == "leaky_relu":
        assert solution.local_targets[name]["q_slope"] == 0.97


# --- API surface ----------------------------------------------------------------------------

def test_defaults_match_the_official_ones() -> None:
    net_fn = lambda x, r: r(r(r(x)))  # noqa: E731  (three nonlinear layers)
    default = activation_transform.get_activations_params(("tanh",), subnet_max_func=net_fn)
    explicit = activation_transform.get_activations_params(
        ("tanh",), "DKS", dks_params={"c_slope_1_target": 1.5, "local_q_slope_target": 1.0},
        subnet_max_func=net_fn)
    assert default == explicit
    sol = ks.shape(nets.mlp(3, activation="tanh"), "dks")
    assert default["tanh"]["input_scale"] == pytest.approx(sol.params["tanh"]["input_scale"],
                                                           rel=1e-12)


def test_max_slope_and_curvature_functions_without_subnet_max() -> None:
    depth = 40
    dks = activation_transform.get_activations_params(
        ("softplus",), "DKS", max_slope_func=lambda xi: xi**depth)
    tat = activation_transform.get_activations_params(
        ("softplus",), "TAT", max_curv_func=lambda t: depth * t)
    for method, got in (("dks", dks), ("tat", tat)):
        sol = ks.shape(nets.mlp(depth, activation="softplus"), method)
        for key, value in got["softplus"].items():
            assert value == pytest.approx(sol.params["softplus"][key], rel=1e-12)


def test_adapter_derives_max_functions_from_subnet_max() -> None:
    request = DksRequest(("softplus",), subnet_max_func=subnet_max_func)
    net = nets.resnet(101, version=2, shortcut_weight=0.6, activation="softplus")
    for xi in (1.0, 1.001, 1.01, 1.1):
        assert request.max_slope(xi) == pytest.approx(
            subnet_max_func(1.0, lambda y, xi=xi: xi * y))
        assert request.max_slope(xi) == pytest.approx(float(net.max_slope(xi)), rel=1e-13)
    for tau in (0.0, 0.001, 0.01):
        assert request.max_curvature(tau) == pytest.approx(float(net.max_curvature(tau)),
                                                           rel=1e-13, abs=1e-15)
    assert set(request.activations) == {"softplus"}
    sol = ks.shape(request, "dks", zeta=1.2)  # the adapter is a network description
    assert sol.network is None and sol.max_residual < 1e-12
    assert "softplus" in repr(request)


def test_activation_getter_wraps_framework_functions() -> None:
    """A user getter (here plain numpy, with Leaky-ReLU's negative_slope keyword) gives the
    same values as the default kernelshape callables."""
    def getter(name: str):
        table = {"tanh": np.tanh,
                 "softplus": lambda x: np.logaddexp(0.0, x),
                 "leaky_relu": lambda x, negative_slope=0.01: np.where(x >= 0, x,
                                                                       negative_slope * x)}
        return table[name]

    x = np.linspace(-3, 3, 11)
    for names, method in ((("tanh", "softplus"), "DKS"), (("leaky_relu",), "DKS"),
                          (("leaky_relu",), "TAT"), (("tanh",), "untransformed")):
        mine = get(names, method, activation_getter=getter)
        reference = get(names, method)
        for name in names:
            np.testing.assert_allclose(mine[name](x), reference[name](x), rtol=1e-12,
                                       atol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    ({"activation_names": "tanh"}, "list or tuple"),
    ({"dks_params": {"zeta": 1.5}}, "unrecognized keys"),
    ({"tat_params": {"tau": 0.3}, "method": "TAT"}, "unrecognized keys"),
    ({"dks_params": {"c_slope_1_target": 1.0}}, "greater than 1.0"),
    ({"method": "TAT", "tat_params": {"c_curve_target": 0.0}}, "greater than 0.0"),
    ({"method": "KFAC"}, "Unrecognized value for argument 'method'"),
    ({"subnet_max_func": None}, "Must supply 'subnet_max_func' if using DKS"),
    ({"method": "TAT", "subnet_max_func": None}, "Must supply 'subnet_max_func' if using TAT"),
    ({"method": "TAT", "activation_names": ("relu",)}, "Standard ReLU is not supported"),
    ({"method": "TAT", "activation_names": ("leaky_relu", "tanh")}, "must be the only"),
    ({"method": "TAT", "activation_names": ("leaky_relu",), "subnet_max_func": None},
     "Must supply 'subnet_max_func' if using TAT with Leaky ReLU"),
    ({"method": "TAT", "activation_names": ("leaky_relu",),
      "tat_params": {"c_val_0_target": 1.5}}, "between 0.0 and 1.0"),
    ({"method": "TAT", "activation_names": ("selu",)}, "kink"),
    ({"activation_names": ("square",)}, "Q'\\(1\\) = 1 is impossible"),
])
def test_errors(kwargs, message) -> None:
    call = {"activation_names": ("tanh",), "method": "DKS", "subnet_max_func": subnet_max_func}
    call.update(kwargs)
    with pytest.raises(ValueError, match=message):
        activation_transform.get_transformed_activations(**call)


def test_unreachable_eta_through_compat() -> None:
    """A 12-layer Leaky-ReLU chain cannot reach C_f(0) = 0.9 (official: bisection runs out of
    evaluations); kernelshape names the largest feasible value."""
    chain = lambda x, r: _compose(r, 12)(x)  # noqa: E731
    with pytest.raises(ks.solve.InfeasibleError, match="eta <= 0.897148"):
        activation_transform.get_transformed_activations(
            ("leaky_relu",), "TAT", tat_params={"c_val_0_target": 0.9}, subnet_max_func=chain)
    chain13 = lambda x, r: _compose(r, 13)(x)  # noqa: E731
    acts = activation_transform.get_transformed_activations(
        ("leaky_relu",), "TAT", subnet_max_func=chain13)
    assert acts["leaky_relu"](1.0) > 0


def _compose(r: Callable[[float], float], n: int) -> Callable[[float], float]:
    def run(x: float) -> float:
        for _ in range(n):
            x = r(x)
        return x
    return run


def test_relu_dks_warning_is_logged(caplog) -> None:
    with caplog.at_level("WARNING", logger="kernelshape.compat.dks"):
        get(("relu",), "DKS")
    assert any("leaky_relu is the better choice" in r.message for r in caplog.records)


def test_official_root_choice_returns_the_official_mirror() -> None:
    """root_choice="official" replays the official search (its starting points, hybr) on
    kernelshape's maps and returns the root the official package returns at tau = 4.5."""
    acts = get(("tanh", "softplus"), "TAT", EXTREME_DKS, EXTREME_TAT, root_choice="official")
    assert acts["tanh"](0.6) == pytest.approx(0.6860178437500071, abs=1e-8)
    assert acts["tanh"](-0.6) == pytest.approx(-0.49030275427738146, abs=1e-8)


@pytest.mark.parametrize("names, method, expected", VALUES[:3],
                         ids=[f"{'+'.join(n)}-{m}" for n, m, _ in VALUES[:3]])
def test_official_root_choice_agrees_where_the_choices_coincide(names, method,
                                                                expected) -> None:
    acts = get(names, method, EXTREME_DKS, EXTREME_TAT, root_choice="official")
    for name, (at_plus, at_minus) in expected.items():
        assert acts[name](0.6) == pytest.approx(at_plus, abs=1e-8)
        assert acts[name](-0.6) == pytest.approx(at_minus, abs=1e-8)


def test_unknown_root_choice_is_refused() -> None:
    with pytest.raises(ValueError, match="root_choice must be one of canonical, official"):
        get(("tanh",), "DKS", root_choice="first")
