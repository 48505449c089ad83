"""Network kernel maps: Monte Carlo finite-width networks, chain-rule derivatives, DKS checks.

The Monte Carlo networks are built here from the same descriptions, independently of the map
code: scaled uniform orthogonal (SUO) weights, zero biases, Delta-initialized convolutions (only
the centre tap is nonzero, so a conv applies one SUO matrix at every strided location).
A Haar-orthogonal matrix is only ever applied to a few input rows, so it is sampled exactly on
their span: for ``X = U R`` (thin QR), ``W^T X = (W^T U) R`` where ``W^T U`` is a uniformly
random orthonormal frame. That keeps width >= 2048 cheap.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernelshape.engine.activations import Transform, activation
from kernelshape.engine.maps import cmap, local_summary, qmap
from kernelshape.topology import (
    Concat,
    Conv,
    Dense,
    LayerNorm,
    Nonlinearity,
    Residual,
    Serial,
    nets,
    network,
)
from kernelshape.topology.layers import (
    ChannelConcat,
    Flatten,
    GlobalAvgPool,
    Input,
    WeightedSum,
)

WIDTH = 2048
REPLICATES = 16
Z_MAX = 4.0


# --- finite-width random networks ---------------------------------------------------------------

def haar_frame(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Uniformly random n x k matrix with orthonormal columns (sign-fixed QR of a Gaussian)."""
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))


def suo_layer(rng: np.random.Generator, x: np.ndarray, n_out: int) -> np.ndarray:
    """``x @ W`` for rows x (m, n_in) and W an (n_in, n_out) SUO matrix (zero bias)."""
    n_in = x.shape[1]
    u, r = np.linalg.qr(x.T)  # x.T = u r, u: (n_in, k) orthonormal
    k = u.shape[1]
    if n_out >= n_in:  # W^T = sqrt(n_out / n_in) * (orthonormal columns)
        frame = math.sqrt(n_out / n_in) * haar_frame(rng, n_out, k)
    else:  # W^T = first n_out rows of a Haar orthogonal matrix
        frame = haar_frame(rng, n_in, k)[:n_out]
    return (frame @ r).T


def forward(net, x: np.ndarray, rng: np.random.Generator, transforms=None) -> dict:
    """Features of every node for inputs x (points, *spatial, channels)."""
    acts = net.transformed_activations(transforms)
    out = {}
    for node in net.nodes:
        layer = node.layer
        inputs = [out[p] for p in node.parents]
        assert node.share is None, "shared weights are not simulated here"
        if isinstance(layer, Input):
            value = x
        elif isinstance(layer, Dense | Conv):
            h = inputs[0]
            if isinstance(layer, Conv):  # Delta init: centre tap at every strided location
                _, stride = layer.spatial_params(h.ndim - 2)
                h = h[(slice(None),) + tuple(slice(None, None, s) for s in stride)]
            rows = h.reshape(-1, h.shape[-1])
            value = suo_layer(rng, rows, node.shape[-1]).reshape(h.shape[:-1] + (-1,))
        elif isinstance(layer, Nonlinearity):
            value = acts[layer.activation_key](inputs[0])
        elif isinstance(layer, LayerNorm):
            value = inputs[0] / np.sqrt(np.mean(inputs[0] ** 2, axis=-1, keepdims=True))
        elif isinstance(layer, WeightedSum):
            value = sum(w * h for w, h in zip(layer.weights, inputs, strict=True))
        elif isinstance(layer, ChannelConcat):
            value = np.concatenate(inputs, axis=-1)
        elif isinstance(layer, GlobalAvgPool):
            value = inputs[0].mean(axis=tuple(range(1, inputs[0].ndim - 1)))
        elif isinstance(layer, Flatten):
            value = inputs[0].reshape(len(inputs[0]), -1)
        else:
            raise AssertionError(f"no simulation for {layer}")
        out[node.id] = value
    return out


def pair_inputs(rng, cs, dim, spatial=(), q1=1.0, q2=1.0):
    """Points (2P, *spatial, dim): pair p = (x_p, x'_p) with per-location q1, q2 and c."""
    cs = np.broadcast_to(np.asarray(cs, dtype=float), (len(cs),) + spatial) if spatial else cs
    n_loc = math.prod(spatial)
    x = np.empty((2 * len(cs), n_loc, dim))
    for p, c_row in enumerate(np.reshape(cs, (len(cs), n_loc))):
        for loc, c in enumerate(c_row):
            u, v = np.linalg.qr(rng.standard_normal((dim, 2)))[0].T
            x[2 * p, loc] = math.sqrt(q1 * dim) * u
            x[2 * p + 1, loc] = math.sqrt(q2 * dim) * (c * u + math.sqrt(1 - c * c) * v)
    return x.reshape((2 * len(cs),) + spatial + (dim,))


def monte_carlo(net, node, x, transforms=None, replicates=REPLICATES, seed=0):
    """Per replicate network: (c, q1, q2) of each pair (at each location of ``node``)."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(replicates):
        f = forward(net, x, rng, transforms)[node]
        if f.ndim > 2:
            f = f.reshape(f.shape[0], -1, f.shape[-1])
        k11 = np.mean(f[0::2] ** 2, axis=-1)
        k22 = np.mean(f[1::2] ** 2, axis=-1)
        k12 = np.mean(f[0::2] * f[1::2], axis=-1)
        samples.append((k12 / np.sqrt(k11 * k22), k11, k22))
    return [np.array(s) for s in zip(*samples, strict=True)]


def assert_within_standard_errors(samples, predicted, what):
    mean = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / math.sqrt(len(samples))
    z = np.abs(mean - predicted) / np.maximum(se, 1e-12)
    assert np.all(z <= Z_MAX), f"{what}: z = {np.round(z, 2)}, mean {mean}, predicted {predicted}"
    return z


DKS_SOFTPLUS_50 = Transform(input_scale=0.326625173, input_shift=0.409373968,
                            output_shift=-0.9312843021, output_scale=5.0948428935)
CS = np.array([-0.9, -0.4, 0.0, 0.3, 0.6, 0.85, 0.97])


@pytest.mark.parametrize("act,transform", [
    ("tanh", None), ("relu", None), ("softplus", DKS_SOFTPLUS_50), ("gelu", None),
])
def test_mlp_matches_monte_carlo(act, transform):
    net = nets.mlp(4, width=WIDTH, activation=act, input_dim=32, num_classes=WIDTH)
    transforms = {act: transform} if transform else None
    rng = np.random.default_rng(1)
    x = pair_inputs(rng, CS, 32)
    c_mc, q1_mc, _ = monte_carlo(net, "readout", x, transforms)
    assert_within_standard_errors(c_mc, net.cmap(CS, transforms=transforms), f"C map {act}")
    assert_within_standard_errors(q1_mc, np.full(len(CS), net.qmap(1.0, transforms=transforms)),
                                  f"Q map {act}")
    # unequal input q values
    cs = np.array([-0.6, 0.3, 0.8])
    x = pair_inputs(rng, cs, 32, q1=0.5, q2=2.0)
    c_mc, q1_mc, q2_mc = monte_carlo(net, "readout", x, transforms, seed=1)
    assert_within_standard_errors(c_mc, net.cmap(cs, 0.5, 2.0, transforms=transforms),
                                  f"C map {act}, q1=0.5, q2=2")
    assert_within_standard_errors(q2_mc, np.full(3, net.qmap(2.0, transforms=transforms)),
                                  f"Q map {act} at q=2")


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_convnet_matches_monte_carlo_per_location(act):
    net = nets.convnet(3, channels=WIDTH, activation=act, input_shape=(3, 3, 16))
    rng = np.random.default_rng(2)
    cs = np.linspace(-0.8, 0.95, 9).reshape(1, 3, 3)  # one pair, a different c per location
    x = pair_inputs(rng, cs, 16, spatial=(3, 3))
    c_mc, _, _ = monte_carlo(net, "block/2/act", x)
    assert_within_standard_errors(c_mc, net.cmap(cs.reshape(1, -1), node="block/2/act"),
                                  f"convnet {act}")


@pytest.mark.parametrize("version,act,transform", [
    (2, "relu", Transform(output_scale=math.sqrt(2.0))), (1, "tanh", None),
])
def test_resnet_matches_monte_carlo(version, act, transform):
    net = nets.resnet(18, version=version, shortcut_weight=0.6, activation=act, width=WIDTH,
                      input_shape=(4, 4, 8), num_classes=10)
    transforms = {act: transform} if transform else None
    before_head = net.node("head/pool").parents[0]
    rng = np.random.default_rng(3)
    cs = np.array([-0.7, -0.2, 0.2, 0.5, 0.8, 0.95])
    x = pair_inputs(rng, cs[:, None, None] * np.ones((1, 4, 4)), 8, spatial=(4, 4))
    c_mc, _, _ = monte_carlo(net, before_head, x, transforms)
    # strides 2, 2 keep input location (0, 0) only
    assert c_mc.shape[1:] == (len(cs), 1)
    predicted = net.cmap(cs, transforms=transforms, node=before_head)
    assert_within_standard_errors(c_mc[:, :, 0], predicted, f"resnet-18 v{version} {act}")


def test_dag_with_concat_layernorm_and_sum_matches_monte_carlo():
    body = Serial(
        Dense(WIDTH), Nonlinearity("tanh"),
        Concat(Serial(Dense(WIDTH // 2), Nonlinearity("relu"), Dense(WIDTH // 2)),
               Dense(WIDTH)),
        Dense(WIDTH), LayerNorm(), Nonlinearity("erf"),
        Residual(Serial(Dense(WIDTH), Nonlinearity("tanh"), Dense(WIDTH)), shortcut_weight=0.6,
                 shortcut=Dense(WIDTH)),
        Nonlinearity("softplus"), Dense(WIDTH),
    )
    net = network(body, (32,))
    rng = np.random.default_rng(4)
    x = pair_inputs(rng, CS, 32, q1=2.0, q2=0.7)
    c_mc, q1_mc, q2_mc = monte_carlo(net, net.outputs[0], x)
    assert_within_standard_errors(c_mc, net.cmap(CS, 2.0, 0.7), "DAG C map")
    assert_within_standard_errors(q1_mc, np.full(len(CS), net.qmap(2.0)), "DAG Q map")
    states = net.kernel_states(CS, 2.0, 0.7)
    assert float(states["layernorm0"].q1) == 1.0 and float(states["layernorm0"].q2) == 1.0


# --- maps, derivatives and per-node states --------------------------------------------------

def test_chain_rule_derivatives():
    net = nets.resnet(18, version=2, shortcut_weight=0.6, activation="softplus")
    c = np.array([-0.5, 0.0, 0.4, 0.8])
    h = 1e-5
    slope = (net.cmap(c + h) - net.cmap(c - h)) / (2 * h)
    np.testing.assert_allclose(net.cmap(c, order=1), slope, rtol=1e-6)
    curvature = (net.cmap(c, order=1) - net.cmap(c - h, order=1)) / h
    np.testing.assert_allclose(net.cmap(c - h / 2, order=2), curvature, rtol=1e-4)
    q = np.array([0.5, 1.0, 2.0])
    q_slope = (net.qmap(q + h) - net.qmap(q - h)) / (2 * h)
    np.testing.assert_allclose(net.qmap(q, order=1), q_slope, rtol=1e-6)
    q_curv = (net.qmap(q + h, order=1) - net.qmap(q - h, order=1)) / (2 * h)
    np.testing.assert_allclose(net.qmap(q, order=2), q_curv, rtol=1e-4)


def test_mlp_maps_compose_local_maps():
    act = activation("tanh")
    net = nets.mlp(3, width=8, activation=act)
    c = np.linspace(-1, 1, 7)
    q = qmap(act, 1.0)
    expected = cmap(act, cmap(act, cmap(act, c), q, q), qmap(act, q), qmap(act, q))
    np.testing.assert_allclose(net.cmap(c), expected, rtol=1e-13)
    np.testing.assert_allclose(net.qmap(1.0), qmap(act, qmap(act, q)), rtol=1e-13)
    slopes = [cmap(act, 1.0, v, v, order=1) for v in (1.0, q, qmap(act, q))]
    assert net.cmap(1.0, order=1) == pytest.approx(math.prod(slopes), rel=1e-12)
    states = net.kernel_states(c)
    assert set(states) == {n.id for n in net.nodes}
    np.testing.assert_allclose(states["block/0/act"].c, cmap(act, c), rtol=1e-13)
    assert net.cmap(c, node="block/1/dense") == pytest.approx(states["block/0/act"].c)


def test_dks_constants_give_the_target_slope():
    """dks regression constants (ResNet-101 V2, w = 0.6, zeta = 1.2): the network's C'(1),
    from the chain rule through the maps engine, equals max_slope(local C'(1)) = 1.2."""
    t = Transform(input_scale=0.18761008168267976, input_shift=0.40688063442262007,
                  output_shift=-0.9213466151411376, output_scale=8.878672543665223)
    net = nets.resnet(101, version=2, shortcut_weight=0.6, activation="softplus")
    local = local_summary(activation("softplus").transformed(t))
    assert local["q_value"] == pytest.approx(1.0, abs=1e-8)
    assert local["c_value_0"] == pytest.approx(0.0, abs=1e-8)
    assert net.max_slope(local["c_slope_1"]) == pytest.approx(1.2, abs=1e-7)
    assert net.cmap(1.0, order=1, transforms={"softplus": t}) == pytest.approx(1.2, abs=1e-6)
    assert net.cmap(0.0, transforms={"softplus": t}) == pytest.approx(0.0, abs=1e-6)


def test_transforms_errors_and_orders():
    net = nets.mlp(2, width=8, activation="tanh")
    with pytest.raises(ValueError, match=r"transforms has key 'relu'.*\['tanh'\]"):
        net.cmap(0.5, transforms={"relu": Transform()})
    with pytest.raises(ValueError, match="order must be 0, 1 or 2"):
        net.cmap(0.5, order=3)
    as_dict = net.cmap(0.5, transforms={"tanh": {"input_scale": 0.5, "output_scale": 2.0}})
    assert as_dict == pytest.approx(net.cmap(0.5, transforms={
        "tanh": Transform(input_scale=0.5, output_scale=2.0)}))
