"""Feasibility checks, several activations in one network, persisted constants."""

from __future__ import annotations

import json
import math

import pytest

import kernelshape as ks
from kernelshape.engine.precise import local_summary as precise_summary
from kernelshape.solve import InfeasibleError
from kernelshape.solve.solver import RELU_SLOPE_THRESHOLD
from kernelshape.topology import Dense, Nonlinearity, Repeat, Serial, nets, network

# --- targets outside their ranges ----------------------------------------------------------------


@pytest.mark.parametrize("zeta", [1.0, 0.5, -2.0, math.inf, math.nan])
def test_zeta_must_exceed_one(zeta: float) -> None:
    with pytest.raises(InfeasibleError, match="zeta = .* is unattainable.*choose zeta > 1"):
        ks.shape(nets.mlp(10), "dks", zeta=zeta)


@pytest.mark.parametrize("tau", [0.0, -0.3, math.inf])
def test_tau_must_be_positive(tau: float) -> None:
    with pytest.raises(InfeasibleError, match="tau = .* is unattainable.*choose tau > 0"):
        ks.shape(nets.mlp(10), "tat", tau=tau)


@pytest.mark.parametrize("eta", [0.0, 1.0, -0.1, 1.5])
def test_eta_must_lie_in_the_open_unit_interval(eta: float) -> None:
    with pytest.raises(InfeasibleError, match="eta = .* is unattainable.*choose 0 < eta < 1"):
        ks.shape(nets.mlp(20, activation="leaky_relu"), "tat", eta=eta)


def test_eta_unreachable_for_a_shallow_leaky_relu_mlp() -> None:
    """C_f(0) of 12 ReLU layers is 0.897 < 0.9: the message names the nearest feasible
    eta; 13 layers reach it."""
    with pytest.raises(InfeasibleError) as info:
        ks.shape(nets.mlp(12, activation="leaky_relu"), "tat", eta=0.9)
    text = str(info.value)
    assert "unreachable" in text and "eta <= 0.897148" in text and "deeper" in text
    feasible = float(text.split("eta <= ")[1].split()[0])
    sol = ks.shape(nets.mlp(12, activation="leaky_relu"), "tat", eta=feasible - 1e-6)
    assert sol.params["leaky_relu"]["negative_slope"] < 1e-3
    sol = ks.shape(nets.mlp(13, activation="leaky_relu"), "tat", eta=0.9)
    slope = sol.params["leaky_relu"]["negative_slope"]
    assert 0.0 < slope < 0.05 and sol.max_residual < 1e-12


def test_square_dks_explains_why() -> None:
    with pytest.raises(InfeasibleError) as info:
        ks.shape(nets.mlp(10, activation="square"), "dks")
    text = str(info.value)
    assert "Closest point found" in text
    assert "Q'(1) = 1 is impossible" in text


def test_selu_tat_refused_because_of_its_kink() -> None:
    with pytest.raises(ValueError, match="kink"):
        ks.shape(nets.mlp(10, activation="selu"), "tat")


def test_relu_tat_refused() -> None:
    with pytest.raises(ValueError, match="leaky_relu"):
        ks.shape(nets.mlp(10, activation="relu"), "tat")


def test_mixed_leaky_and_smooth_tat_refused() -> None:
    body = Serial(Dense(32), Nonlinearity("leaky_relu"), Dense(32), Nonlinearity("tanh"),
                  Dense(4))
    net = network(Repeat(body, 8), (16,))
    with pytest.raises(ValueError, match="every activation of the network to be leaky_relu"):
        ks.shape(net, "tat")


def test_leaky_relu_slope_range_in_dks() -> None:
    """With Q'(1) = 1 Leaky-ReLU reaches C'(1) < 1/(1 - 1/pi) only."""
    with pytest.raises(InfeasibleError, match="leaky_relu reaches local slopes"):
        ks.shape(nets.mlp(2, activation="leaky_relu"), "dks", zeta=2.5)


@pytest.mark.parametrize("zeta", [1.4, 1.4669, 1.467, 1.6, 5.0, 7.7])
def test_relu_slopes_on_both_sides_of_the_centred_slope(zeta: float) -> None:
    """Regression: above 1/(1-1/pi) (input_shift -1) the bracket used to start at
    input_scale e^-6, where the closed-form variance is 0 (ZeroDivisionError)."""
    sol = ks.shape(nets.mlp(1, activation="relu"), "dks", zeta=zeta)
    t = sol.transforms["relu"]
    assert t.input_shift == (1.0 if zeta < RELU_SLOPE_THRESHOLD else -1.0)
    assert sol.max_residual < 1e-12
    values = precise_summary(sol.transformed("relu"), dps=30)
    assert float(values["c_slope_1"]) == pytest.approx(zeta, rel=1e-13)


def test_relu_slope_beyond_the_accurate_range() -> None:
    with pytest.raises(InfeasibleError, match="relu reaches local slopes C'\\(1\\) up to 7.737"):
        ks.shape(nets.mlp(1, activation="relu"), "dks", zeta=8.0)


def test_no_nonlinear_layer() -> None:
    net = network(Serial(Dense(8), Dense(4)), (8,))
    with pytest.raises(ValueError, match="no nonlinear layer"):
        ks.shape(net, "dks")


def test_bad_method_and_certify() -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        ks.shape(nets.mlp(3), "kfac")
    with pytest.raises(ValueError, match="certify"):
        ks.shape(nets.mlp(3), "dks", certify="quad")


# --- Leaky-ReLU with a local Q-slope target other than 1 ---------------------------------------

def test_leaky_relu_dks_honours_local_q_slope() -> None:
    """Regression: the Leaky-ReLU DKS path used to ignore ``local_q_slope`` (it fixed
    input_shift = 0, where Q'(1) = 1) and recorded the target as 1."""
    sol = ks.shape(nets.mlp(20, activation="leaky_relu"), "dks", zeta=2.0, local_q_slope=0.97)
    assert sol.local_targets["leaky_relu"]["q_slope"] == 0.97
    t = sol.transforms["leaky_relu"]
    assert t.input_shift != 0.0 and 0.0 < t.negative_slope < 1.0
    values = precise_summary(sol.transformed("leaky_relu"), dps=30)
    for key, target in sol.local_targets["leaky_relu"].items():
        assert abs(float(values[key]) - target) < 1e-13, key
    unit = ks.shape(nets.mlp(20, activation="leaky_relu"), "dks", zeta=2.0)
    assert unit.transforms["leaky_relu"].input_shift == 0.0


def test_leaky_relu_dks_infeasible_q_slope_explained() -> None:
    with pytest.raises(InfeasibleError, match="no negative_slope"):
        ks.shape(nets.mlp(20, activation="leaky_relu"), "dks", zeta=1.5, local_q_slope=3.0)


# --- several activations in one network ----------------------------------------------------------

def mixed_net(first: str, second: str, keys: tuple[str | None, str | None] = (None, None),
              blocks: int = 10):
    block = Serial(Dense(64), Nonlinearity(first, key=keys[0]),
                   Dense(64), Nonlinearity(second, key=keys[1]))
    return network(Serial(Repeat(block, blocks, name="block"), Dense(10, name="readout")), (32,))


@pytest.mark.parametrize("method", ["dks", "tat"])
def test_two_activations_solved_together(method: str) -> None:
    """Every layer gets its own activation's constants; with 20 nonlinear layers each must
    equal the constants of a 20-layer MLP of that activation alone."""
    net = mixed_net("tanh", "softplus")
    assert set(net.activations) == {"tanh", "softplus"}
    sol = ks.shape(net, method, zeta=1.5, tau=0.3)
    assert set(sol.transforms) == {"tanh", "softplus"}
    for act in ("tanh", "softplus"):
        alone = ks.shape(nets.mlp(20, activation=act), method, zeta=1.5, tau=0.3)
        for key, value in alone.params[act].items():
            assert sol.params[act][key] == pytest.approx(value, rel=1e-12, abs=1e-14)
    if method == "dks":
        assert net.cmap(1.0, order=1, transforms=sol.transforms) == pytest.approx(1.5, rel=1e-10)
    else:
        assert net.cmap(1.0, order=2, transforms=sol.transforms) == pytest.approx(0.3, rel=1e-8)
    assert sol.max_residual < 1e-12


def test_same_activation_under_two_keys() -> None:
    net = mixed_net("gelu", "gelu", keys=("early", "late"))
    sol = ks.shape(net, "dks")
    assert set(sol.transforms) == {"early", "late"}
    assert sol.params["early"] == sol.params["late"]


# --- persisted constants ---------------------------------------------------------------------

@pytest.mark.parametrize("method", ["dks", "tat", "eoc"])
def test_save_and_load_round_trip(tmp_path, method: str) -> None:
    activation = "softplus" if method != "eoc" else "tanh"
    net = nets.mlp(12, activation=activation)
    sol = ks.shape(net, method, bias_variance=0.05 if method == "eoc" else 0.0)
    path = sol.save(tmp_path / "constants.json")
    doc = ks.load_constants(path)
    assert doc["method"] == method and doc["targets"] == sol.targets
    entry = doc["activations"][activation]
    for key, value in sol.params[activation].items():
        assert entry[key] == value  # full precision
    assert entry["activation"] == activation
    assert doc["network"]["spec"] == net.spec
    assert doc == json.loads(path.read_text())
    assert doc["local_targets"] == sol.local_targets
    if method == "eoc":
        assert doc["eoc"] == sol.eoc
    # a tampered constant fails verification on load
    text = path.read_text()
    if method != "eoc":
        bad = json.loads(text)
        bad["activations"][activation]["input_scale"] *= 1.001
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="do not satisfy"):
            ks.load_constants(tmp_path / "bad.json")


def test_leaky_tat_document_round_trip(tmp_path) -> None:
    sol = ks.shape(nets.mlp(30, activation="leaky_relu"), "tat", eta=0.9)
    doc = ks.load_constants(sol.save(tmp_path / "c.json"))
    entry = doc["activations"]["leaky_relu"]
    assert entry["negative_slope"] == sol.params["leaky_relu"]["negative_slope"]
    assert "negative_slope" not in entry["params"]
    assert sol.summary().count("leaky_relu") >= 2
