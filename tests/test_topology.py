"""Topology DSL: structure, subnetwork functions, validation, JSON and SPEC strings.

The kernel maps of networks (which need the map engine) are tested in test_topology_maps.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kernelshape.topology import (
    INPUT_ID,
    BatchNorm,
    Concat,
    Conv,
    Dense,
    Flatten,
    Gate,
    GlobalAvgPool,
    Heads,
    Identity,
    LayerNorm,
    MaxPool,
    Network,
    Nonlinearity,
    Repeat,
    Residual,
    SelfAttention,
    Serial,
    Sum,
    load_network,
    nets,
    network,
    parse_spec,
)

# --- independent hand-written subnetwork maximizing functions ------------------------------------
# Written from the official dks construction (LITERATURE.md §1.3, §1.7), not from the package.

def leaky_relu_cmap(negative_slope: float):
    """Closed-form C map of Leaky ReLU at q = 1 (arc-cosine family)."""
    k = (1 - negative_slope) ** 2 / (math.pi * (1 + negative_slope**2))

    def r(c):
        c = np.clip(c, -1.0, 1.0)
        return c + k * (np.sqrt(1 - c * c) - c * np.arccos(c))

    return r


def official_resnet_subnet_max(x, r, blocks_per_group, bottleneck, use_projection, v2, w,
                               stem_activation_first=True):
    """max(whole network, one residual branch) for the modified ResNet.

    V2: per block ``x <- w^2 s(x) + (1 - w^2) res(x)`` with ``s = r`` at a projection block
    (the projection branches off after the first activation) and a final ``r``.
    V1: ``r`` after every sum and one ``r`` for the stem activation; the official function
    applies that ``r`` last, the network applies it first (``stem_activation_first``).
    """
    if v2:
        res = (lambda z: r(r(r(z)))) if bottleneck else (lambda z: r(r(z)))
    else:
        res = (lambda z: r(r(z))) if bottleneck else r
    branch = res(x)
    if not v2 and stem_activation_first:
        x = r(x)
    for group, blocks in enumerate(blocks_per_group):
        for j in range(blocks):
            shortcut = r(x) if (v2 and j == 0 and use_projection[group]) else x
            x = w**2 * shortcut + (1 - w**2) * res(x)
            if not v2:
                x = r(x)
    if v2 or not stem_activation_first:
        x = r(x)
    return max(x, branch)


HAND_CONFIGS = {  # depth: blocks per group, bottleneck, projection per group
    18: ((2, 2, 2, 2), False, (False, True, True, True)),
    34: ((3, 4, 6, 3), False, (False, True, True, True)),
    50: ((3, 4, 6, 3), True, (True,) * 4),
    101: ((3, 4, 23, 3), True, (True,) * 4),
    152: ((3, 8, 36, 3), True, (True,) * 4),
    200: ((3, 24, 36, 3), True, (True,) * 4),
}

# The local maps DKS/TAT use (r(y) >= y: slopes >= 1, curvatures >= 0, leaky-ReLU C maps).
R_FUNCTIONS = {
    "slope 1.0027709659": lambda y: 1.0027709659 * y,
    "slope 1.05": lambda y: 1.05 * y,
    "curvature 0.01": lambda y: y + 0.01,
    "curvature 0.3": lambda y: y + 0.3,
    "lrelu 0": leaky_relu_cmap(0.0),
    "lrelu 0.3": leaky_relu_cmap(0.3),
    "lrelu 0.62918": leaky_relu_cmap(0.6291800290346146),
    "lrelu 0.9": leaky_relu_cmap(0.9),
}
X_VALUES = (0.0, 0.1, 0.35, 0.6, 0.9, 1.0)


@pytest.mark.parametrize("version", [2, 1])
def test_resnet101_subnet_max_equals_hand_written_official(version):
    net = nets.resnet(101, version=version, shortcut_weight=0.6)
    blocks, bottleneck, projection = HAND_CONFIGS[101]
    for r_name, r in R_FUNCTIONS.items():
        for x in X_VALUES:
            expected = official_resnet_subnet_max(x, r, blocks, bottleneck, projection,
                                                  version == 2, 0.6)
            assert net.subnet_max(x, r) == pytest.approx(expected, rel=1e-13, abs=1e-15), (
                r_name, x)
        # vectorized over x: same values as the scalar calls
        xs = np.array(X_VALUES)
        expected = [official_resnet_subnet_max(x, r, blocks, bottleneck, projection,
                                               version == 2, 0.6) for x in X_VALUES]
        np.testing.assert_allclose(net.subnet_max(xs, r), expected, rtol=1e-13, atol=1e-15)


def test_projection_block_branch_starts_at_its_fork():
    """In a V2 projection block the residual branch forks after the shared first activation,
    so it has 2 nonlinear layers (the official function counts 3 for every block). The two
    agree whenever r(y) >= y; otherwise the 2-layer branch can be the maximizer."""
    net = nets.resnet(101, version=2, shortcut_weight=0.6)
    blocks, bottleneck, projection = HAND_CONFIGS[101]
    for r in (lambda y: 0.97 * y, lambda y: 1.05 * y, leaky_relu_cmap(0.3)):
        for x in (-0.5, 0.4):
            official = official_resnet_subnet_max(x, r, blocks, bottleneck, projection, True, 0.6)
            assert net.subnet_max(x, r) == pytest.approx(max(official, r(r(x))), rel=1e-13)
    assert net.subnet_max(-0.5, lambda y: 1.05 * y) == pytest.approx(-0.5 * 1.05**2)


@pytest.mark.parametrize("depth", sorted(HAND_CONFIGS))
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("w", [0.0, 0.3, 0.9])
def test_every_resnet_depth_matches_hand_written(depth, version, w):
    net = nets.resnet(depth, version=version, shortcut_weight=w, input_shape=(64, 64, 3))
    blocks, bottleneck, projection = HAND_CONFIGS[depth]
    for r in (R_FUNCTIONS["slope 1.05"], R_FUNCTIONS["lrelu 0.3"]):
        for x in (0.0, 0.5, 1.0):
            expected = official_resnet_subnet_max(x, r, blocks, bottleneck, projection,
                                                  version == 2, w)
            assert net.subnet_max(x, r) == pytest.approx(expected, rel=1e-13, abs=1e-15)


def test_v1_official_function_differs_only_for_nonlinear_r():
    """The official V1 function applies the stem activation last; linear/affine r commute."""
    net = nets.resnet(101, version=1, shortcut_weight=0.6)
    blocks, bottleneck, projection = HAND_CONFIGS[101]
    for r in (lambda y: 1.05 * y, lambda y: 0.97 * y, lambda y: y + 0.3):
        for x in (0.0, 1.0):
            literal = official_resnet_subnet_max(x, r, blocks, bottleneck, projection, False,
                                                 0.6, stem_activation_first=False)
            assert net.subnet_max(x, r) == pytest.approx(literal, rel=1e-13, abs=1e-15)
    r = R_FUNCTIONS["lrelu 0.3"]
    literal = official_resnet_subnet_max(0.0, r, blocks, bottleneck, projection, False, 0.6,
                                         stem_activation_first=False)
    assert abs(net.subnet_max(0.0, r) - literal) > 1e-7


def test_resnet_regression_constants():
    """dks test: TAT leaky-ReLU slope 0.62918... gives eta = 0.75 for ResNet-101 V2, w = 0.6;
    kfac-jax: 0.57043953... gives 0.9 for a vanilla ResNet-101 (100 nonlinear layers)."""
    net = nets.resnet(101, version=2, shortcut_weight=0.6)
    assert net.subnet_max(0.0, leaky_relu_cmap(0.6291800290346146)) == pytest.approx(0.75,
                                                                                     abs=1e-7)
    vanilla = nets.resnet(101, version=2, shortcut_weight=0.0)
    assert len(vanilla.nonlinear_nodes) == 100
    assert vanilla.subnet_max(0.0, leaky_relu_cmap(0.5704395323991776)) == pytest.approx(
        0.9, abs=1e-7)


@pytest.mark.parametrize("depth", [1, 7, 100])
def test_mlp_max_slope_is_power(depth):
    net = nets.mlp(depth, width=16)
    xi = np.array([0.5, 1.0, 1.0027, 1.2, 3.0])
    np.testing.assert_allclose(net.max_slope(xi), xi**depth, rtol=1e-14)
    assert net.max_slope(1.1) == pytest.approx(1.1**depth, rel=1e-14)
    np.testing.assert_allclose(net.max_curvature(np.array([0.0, 0.3])), [0.0, 0.3 * depth],
                               rtol=1e-14)
    assert len(net.nonlinear_nodes) == depth


@pytest.mark.parametrize("depth,version", [(50, 2), (101, 1), (200, 2)])
def test_fast_paths_equal_program(depth, version):
    net = nets.resnet(depth, version=version, shortcut_weight=0.7)
    xis = np.linspace(0.9, 1.1, 9)
    np.testing.assert_allclose(net.max_slope(xis),
                               [net.subnet_max(1.0, lambda y, v=v: v * y) for v in xis],
                               rtol=1e-12)
    taus = np.array([-0.2, 0.0, 0.05, 0.3])
    np.testing.assert_allclose(net.max_curvature(taus),
                               [net.subnet_max(0.0, lambda y, t=t: y + t) for t in taus],
                               rtol=1e-12, atol=1e-15)
    assert net.max_slope(1e9) == math.inf


def test_subnet_max_override():
    net = nets.mlp(3, width=8)
    custom = net.with_subnet_max(lambda x, r: r(r(x)))
    assert custom.has_subnet_max_override and not net.has_subnet_max_override
    assert custom.max_slope(1.5) == pytest.approx(2.25)
    np.testing.assert_allclose(custom.max_slope(np.array([1.0, 2.0])), [1.0, 4.0])
    assert custom.max_curvature(0.1) == pytest.approx(0.2)
    assert custom.subnet_max(0.5, lambda y: y + 1) == pytest.approx(2.5)
    with pytest.warns(UserWarning, match="not saved"):
        custom.to_dict()
    assert net.max_slope(1.5) == pytest.approx(1.5**3)


def _toy_dag() -> Network:
    """Dense, act, concat(residual(Dense, act, Dense) -> Dense, Dense), Dense, act, Dense."""
    inner = Residual(Serial(Dense(8), Nonlinearity("tanh"), Dense(8)), shortcut_weight=0.8,
                     name="res")
    body = Serial(
        Dense(8), Nonlinearity("tanh", name="a0"),
        Concat(Serial(inner, Dense(6)), Dense(2, name="side"), name="cat"),
        Dense(8, name="mix"), Nonlinearity("tanh", name="a1"), Dense(3, name="out"),
    )
    return network(body, (5,))


def test_subnetwork_definition_on_a_dag():
    net = _toy_dag()
    subs = {(s.kind, s.start, s.end, s.merge) for s in net.subnetworks()}
    assert subs == {
        ("network", "input", "out", None),
        ("branch", "a0", "cat/res/dense1", "cat/res/sum"),  # the residual branch
        ("branch", "a0", "cat/dense0", "cat/concat"),  # concat branch through the residual
    }  # the identity shortcut (a0 -> a0) and the linear "side" branch are not subnetworks
    r = R_FUNCTIONS["lrelu 0.3"]
    x = 0.2
    residual = 0.64 * x + 0.36 * r(x)  # from a0's output: shortcut weight 0.8^2, branch 0.6^2
    y = r(x)  # the whole network starts at the input: a0 first
    whole = r(0.75 * (0.64 * y + 0.36 * r(y)) + 0.25 * y)  # channel fractions 6/8 and 2/8
    values = net.subnet_values(x, r)
    assert values["network input -> out"] == pytest.approx(whole, rel=1e-14)
    assert values["branch of cat/res/sum: a0 -> cat/res/dense1"] == pytest.approx(r(x))
    assert values["branch of cat/concat: a0 -> cat/dense0"] == pytest.approx(residual)
    assert net.subnet_max(x, r) == pytest.approx(max(whole, r(x), residual))
    assert net.max_slope(2.0) == pytest.approx(2 * (0.75 * (0.64 * 2 + 0.36 * 4) + 0.25 * 2))


def test_multiple_heads():
    body = Serial(Dense(16), Nonlinearity("tanh"),
                  Heads(Dense(10, name="logits"),
                        Serial(Dense(16), Nonlinearity("tanh"), Dense(1, name="value"))))
    net = network(body, (4,))
    assert net.outputs == ("head0/logits", "head1/value")
    assert [s.end for s in net.subnetworks()] == ["head0/logits", "head1/value"]
    assert net.max_slope(1.5) == pytest.approx(1.5**2)
    with pytest.raises(ValueError, match="several outputs"):
        net.cmap(0.5)
    with pytest.raises(ValueError, match="Heads must be the last"):
        network(Serial(Heads(Dense(2), Dense(3)), Dense(4)), (4,))


# --- structure -------------------------------------------------------------------------------

def test_nodes_are_a_clean_traversal():
    net = nets.resnet(50, version=2, shortcut_weight=0.5)
    seen = set()
    assert net.nodes[0].id == INPUT_ID and net.nodes[0].shape == (224, 224, 3)
    for node in net.nodes:
        assert all(p in seen for p in node.parents)
        seen.add(node.id)
    shapes = {n.id: n.shape for n in net.nodes}
    assert shapes["stem/conv"] == (112, 112, 64)
    assert shapes["group0/block0/conv0"] == (112, 112, 64)
    assert shapes["group0/block0/sum0"] == (112, 112, 256)
    assert shapes["group1/block0/conv1"] == (56, 56, 128)
    assert shapes["group3/block2/sum0"] == (14, 14, 2048)
    assert shapes["head/logits"] == (1000,)
    assert net.children("group0/block0/act0") == ("group0/block0/conv0",
                                                  "group0/block0/shortcut")
    assert len(net.nonlinear_nodes) == 49 and net.activation_keys == ("softplus",)
    assert "group0/block0/shortcut" in net.summary()


@pytest.mark.parametrize("depth,layers", [(18, 17), (34, 33), (50, 49), (152, 151),
                                          (200, 199)])
def test_resnet_nonlinear_layer_counts(depth, layers):
    for version in (1, 2):
        assert len(nets.resnet(depth, version=version).nonlinear_nodes) == layers


def test_wide_resnet_and_convnet():
    wrn = nets.wide_resnet(28, widen_factor=10, shortcut_weight=0.6)
    assert len(wrn.nonlinear_nodes) == 3 * 4 * 2 + 1
    shapes = {n.id: n.shape for n in wrn.nodes}
    assert shapes["group0/block0/sum0"] == (32, 32, 160)
    assert shapes["group2/block3/sum0"] == (8, 8, 640)
    assert "group0/block0/shortcut" in shapes and "group0/block1/shortcut" not in shapes
    narrow = nets.wide_resnet(16, widen_factor=1, shortcut_weight=0.6)
    assert "group0/block0/shortcut" not in {n.id for n in narrow.nodes}
    conv = nets.convnet(4, channels=32, input_shape=(9, 9, 3))
    assert {n.shape for n in conv.nodes if isinstance(n.layer, Conv)} == {(9, 9, 32)}
    assert conv.max_slope(1.2) == pytest.approx(1.2**4)


def test_conv_is_n_dimensional():
    net = network(Serial(Conv(8, 3, 2), Nonlinearity("relu"), Conv(4, (1, 3, 5)), Flatten(),
                         Dense(2)), (7, 9, 11, 3))
    assert [n.shape for n in net.nodes] == [(7, 9, 11, 3), (4, 5, 6, 8), (4, 5, 6, 8),
                                            (4, 5, 6, 4), (480,), (2,)]
    one_d = network(Serial(Conv(8, 5), Nonlinearity("relu"), GlobalAvgPool(), Dense(2)), (20, 3))
    assert one_d.nodes[-2].shape == (8,)


def test_weight_sharing_and_repeat():
    shared = Dense(8, name="shared")
    act = Nonlinearity("tanh")
    net = network(Serial(Dense(8), act, shared, act, shared, act), (8,))
    assert [(n.id, n.share) for n in net.nodes if n.share or n.id.startswith("shared")] == [
        ("shared", None), ("shared.1", "shared")]
    assert [n.id for n in net.nodes if n.layer is act] == ["act0", "act1", "act2"]
    rep = network(Repeat(Serial(Dense(8), Nonlinearity("tanh")), 3), (8,))
    assert all(n.share is None for n in rep.nodes)
    assert [n.id for n in rep.nodes][1:3] == ["repeat0/0/dense0", "repeat0/0/act0"]
    # every Repeat copy has its own weights; reuse inside one copy shares within that copy
    twice = network(Repeat(Serial(shared, act, shared, act), 2, name="r"), (8,))
    assert {n.id: n.share for n in twice.nodes if n.share} == {
        "r/0/shared.1": "r/0/shared", "r/1/shared.1": "r/1/shared"}
    assert twice.to_dict()["nodes"][3]["share"] == "r/0/shared"


# --- validation errors -----------------------------------------------------------------------

def _raises(match: str):
    return pytest.raises(ValueError, match=match)


def test_unnormalized_sum():
    body = Serial(Dense(4), Sum(Dense(4), Dense(4), weights=(1.0, 1.0), name="s"))
    with _raises(r"layer 's/sum' .*sum of squares 2.*normalize=True"):
        network(body, (4,))
    with pytest.warns(UserWarning, match="rescaled"):
        ok = Serial(Dense(4), Sum(Dense(4), Dense(4), weights=(1.0, 1.0), normalize=True))
    net = network(ok, (4,))
    assert net.nodes[-1].layer.weights == pytest.approx((2**-0.5, 2**-0.5))


def test_batchnorm_networks_are_trainer_only():
    """BatchNorm is described (the trainer's baseline) but has no kernel map: every kernel
    method and the solver refuse, naming the layer and what to use instead."""
    net = network(Serial(Conv(4, 3), BatchNorm(name="bn"), Nonlinearity("relu"), Conv(4, 3)),
                  (8, 8, 3))
    assert net.kernel_refusal is not None
    for call in (lambda: net.cmap(0.5), lambda: net.max_slope(1.1),
                 lambda: net.kernel_states(0.5), lambda: net.subnet_max(0.0, lambda y: y)):
        with _raises(r"layer 'bn' .*BatchNorm .*use LayerNorm.*cannot be shaped"):
            call()
    from kernelshape.solve import shape

    with _raises(r"layer 'bn' .*BatchNorm"):
        shape(net, "none")
    # plain sums are allowed in a trainer-only network (the BN ResNet's x + f(x))
    plain = network(Serial(Dense(4), BatchNorm(), Nonlinearity("relu"),
                           Sum(Dense(4), Identity(), weights=(1.0, 1.0))), (4,))
    assert plain.nodes[-1].layer.weights == (1.0, 1.0)


@pytest.mark.parametrize("layer,match", [
    (MaxPool(name="pool"), r"layer 'pool' .*max-pooling .*strided Conv"),
    (Gate(name="glu"), r"layer 'glu' .*multiplicative .*normalized Sum"),
    (SelfAttention(name="attn"), r"layer 'attn' .*attention"),
])
def test_unsupported_layers(layer, match):
    with _raises(match):
        network(Serial(Conv(4, 3), layer, Nonlinearity("relu"), Conv(4, 3)), (8, 8, 3))


def test_adjacent_nonlinearities():
    with _raises(r"layer 'b' .*output of nonlinear layer 'a' .*Insert a Dense/Conv"):
        network(Serial(Dense(4), Nonlinearity("relu", name="a"), Nonlinearity("tanh", name="b")),
                (4,))
    with _raises(r"layer 'b' .*nonlinear layer 'a'"):  # through LayerNorm
        network(Serial(Dense(4), Nonlinearity("relu", name="a"), LayerNorm(),
                       Nonlinearity("tanh", name="b")), (4,))
    with _raises(r"layer 'b' .*nonlinear layer 'a'"):  # through a one-operand concat
        network(Serial(Dense(4), Nonlinearity("relu", name="a"), Concat(Serial()),
                       Nonlinearity("tanh", name="b")), (4,))
    with _raises(r"layer 'b' .*applied to the concatenation 'concat0', whose parts can have "
                 r"different q values.*Dense/Conv layer after the concatenation"):
        network(Serial(Dense(4), Nonlinearity("relu"), Concat(Dense(3), Dense(5)),
                       Nonlinearity("tanh", name="b")), (4,))
    with _raises(r"layer 'b' .*applied to the flatten 'flatten0'"):  # also through a sum
        network(Serial(Conv(4, 3), Flatten(), Sum(Serial(), Dense(16), weights=(0.6, 0.8)),
                       Nonlinearity("tanh", name="b")), (2, 2, 3))
    with _raises(r"layer 'act0' .*network input .*Dense or Conv layer first"):
        network(Serial(Nonlinearity("tanh"), Dense(3)), (4,))
    network(Serial(Dense(4), Nonlinearity("relu"), LayerNorm(), Dense(4), Nonlinearity("tanh"),
                   Dense(2)), (4,))


def test_sum_operands_must_be_independent():
    with _raises(r"layer 'sum0' .*operands 'act0', 'dense0' do not end in their own"):
        network(Serial(Dense(4), Sum(Nonlinearity("tanh"), Serial(), weights=(0.6, 0.8))), (4,))
    with _raises(r"operands 'dense1', 'act1' do not end in their own"):  # dense1 feeds both
        network(Serial(Dense(4), Nonlinearity("tanh"), Dense(4),
                       Sum(Serial(), Nonlinearity("tanh"), weights=(0.6, 0.8))), (4,))
    with _raises(r"adds the same operand more than once"):
        network(Serial(Dense(4), Sum(Serial(), Serial(), weights=(0.6, 0.8))), (4,))
    shared = Dense(4)
    with _raises(r"operands 'dense1', 'dense3' .*weights not reused by another operand"):
        network(Serial(Dense(4), Nonlinearity("tanh"),
                       Sum(shared, Serial(Dense(4), Nonlinearity("tanh"), shared),
                           weights=(0.6, 0.8))), (4,))


def test_shape_errors():
    with _raises(r"layer 'sum0' .*operand shapes differ: \(8,\), \(16,\)"):
        network(Sum(Dense(8), Dense(16), weights=(0.6, 0.8)), (4,))
    with _raises(r"layer 'conv0' .*Conv needs spatial axes .*use Dense"):
        network(Conv(8, 3), (784,))
    with _raises(r"layer 'conv0' .*kernel_size \(3, 3\) has 2 entries but the input has 1"):
        network(Conv(8, (3, 3)), (10, 3))
    with _raises(r"layer 'concat0' .*differ outside the channel axis"):
        network(Concat(Conv(8, 3, 2), Conv(8, 3)), (8, 8, 3))
    with _raises(r"layer 'pool0' .*GlobalAvgPool needs spatial axes"):
        network(Serial(Dense(3), GlobalAvgPool()), (4,))
    shared = Dense(8)
    with _raises(r"reuses the weights of 'dense0' on an input of shape \(8,\)"):
        network(Serial(shared, Nonlinearity("tanh"), shared), (4,))
    with pytest.raises(ValueError, match="must be odd"):
        Conv(8, 4)
    with pytest.raises(ValueError, match="positive integer"):
        Dense(-3)


def test_activation_errors():
    with _raises(r"layer 'act0' .*unknown activation 'tanhh'"):
        network(Serial(Dense(4), Nonlinearity("tanhh"), Dense(2)), (4,))
    with _raises(r"layer 'act1' .*key 'shared' .*different keys"):
        network(Serial(Dense(4), Nonlinearity("tanh", key="shared"), Dense(4),
                       Nonlinearity("relu", key="shared"), Dense(2)), (4,))
    net = network(Serial(Dense(4), Nonlinearity("tanh", key="first"), Dense(4),
                         Nonlinearity("tanh", key="second"), Dense(2)), (4,))
    assert net.activation_keys == ("first", "second")


def test_duplicate_names():
    with _raises(r"two layers get the id 'x'"):
        network(Serial(Dense(4, name="x"), Dense(4, name="x")), (4,))


# --- JSON --------------------------------------------------------------------------------------

def _graph(nodes, outputs=("out",)):
    return {"format": "kernelshape.network", "format_version": "1.0", "nodes": nodes,
            "outputs": list(outputs)}


def _dense(node_id, parents, width=4):
    return {"id": node_id, "type": "Dense", "parents": parents, "width": width}


INPUT_NODE = {"id": "input", "type": "Input", "parents": [], "shape": [4]}


def test_json_cycle_and_graph_errors():
    cyclic = _graph([INPUT_NODE, _dense("a", ["input", "c"]), _dense("b", ["a"]),
                     _dense("c", ["b"]), _dense("out", ["c"])])
    cyclic["nodes"][1] = {"id": "a", "type": "WeightedSum", "parents": ["input", "c"],
                          "weights": [0.6, 0.8]}
    with _raises(r"cycle: .*a -> b -> c -> a|cycle: .*"):
        Network.from_dict(cyclic)
    with _raises(r"unknown parent 'nowhere'"):
        Network.from_dict(_graph([INPUT_NODE, _dense("out", ["nowhere"])]))
    with _raises(r"two nodes have the id 'out'"):
        Network.from_dict(_graph([INPUT_NODE, _dense("out", ["input"]), _dense("out", ["input"])]))
    with _raises(r"node\(s\) 'dead' feed no output"):
        Network.from_dict(_graph([INPUT_NODE, _dense("dead", ["input"]),
                                  _dense("out", ["input"])]))
    with _raises(r"unknown type 'Dropout'; known types: Input, Dense"):
        Network.from_dict(_graph([INPUT_NODE, {"id": "out", "type": "Dropout",
                                               "parents": ["input"]}]))
    with _raises(r"node 'out' \(Dense\) has unknown fields \['units'\]; allowed: \['width'\]"):
        Network.from_dict(_graph([INPUT_NODE, {"id": "out", "type": "Dense", "units": 3,
                                               "parents": ["input"]}]))
    bn = Network.from_dict(_graph([INPUT_NODE, {"id": "bn", "type": "BatchNorm",
                                                "parents": ["input"]}, _dense("out", ["bn"])]))
    assert "layer 'bn'" in bn.kernel_refusal
    with _raises(r"sum of squares"):
        Network.from_dict(_graph([INPUT_NODE, _dense("a", ["input"]), _dense("b", ["input"]),
                                  {"id": "out", "type": "WeightedSum", "parents": ["a", "b"],
                                   "weights": [1, 1]}]))
    with _raises(r"format_version '2.0' is not supported"):
        Network.from_dict({**_graph([INPUT_NODE, _dense("out", ["input"])]),
                           "format_version": "2.0"})
    with _raises(r"not a network description"):
        Network.from_dict({"nodes": []})


def _round_trip_networks():
    from kernelshape.engine.activations import activation

    shared = Dense(8)
    custom = network(Serial(
        Dense(8), Nonlinearity(activation("leaky_relu", negative_slope=0.2), key="lrelu"),
        shared, LayerNorm(), Nonlinearity("x*tanh(log(1+exp(x)))"), shared,
        Concat(Dense(3), Serial(Dense(5), Nonlinearity("relu"), Dense(5))),
        Heads(Dense(2, name="a"), Serial(Dense(4), Nonlinearity("tanh"), Dense(1, name="b"))),
    ), (8,), name="custom")
    return [nets.mlp(3, width=16), nets.convnet(2, channels=8, input_shape=(8, 8, 3)),
            nets.resnet(18, version=1, shortcut_weight=0.6), nets.resnet(50, shortcut_weight=0.6),
            nets.wide_resnet(16, widen_factor=2, shortcut_weight=0.4), custom]


def test_json_round_trip(tmp_path):
    for net in _round_trip_networks():
        data = net.to_dict()
        assert data["format_version"] == "1.0"
        again = Network.from_dict(json.loads(json.dumps(data)))
        assert again.to_dict() == data
        assert [(n.id, n.shape, n.share, n.parents) for n in again.nodes] == [
            (n.id, n.shape, n.share, n.parents) for n in net.nodes]
        assert again.max_slope(1.1) == net.max_slope(1.1)
        assert again.activations == net.activations
        path = tmp_path / f"{net.name}.json"
        net.save(str(path))
        assert load_network(path).to_dict() == data
        assert parse_spec(str(path)).to_dict() == data


# --- SPEC strings ------------------------------------------------------------------------------

def test_spec_strings():
    net = parse_spec("resnet:depth=101,shortcut_weight=0.6,version=2,activation=softplus")
    assert net.name == "resnet-101-v2" and len(net.nonlinear_nodes) == 100
    assert parse_spec(net.spec).to_dict() == net.to_dict()
    mlp = parse_spec("mlp:depth=100,activation=tanh")
    assert mlp.max_slope(1.01) == pytest.approx(1.01**100)
    assert mlp.activation_keys == ("tanh",)
    conv = parse_spec("convnet: depth=3, channels=16, input_shape=16x16x3")
    assert conv.input_shape == (16, 16, 3)
    expr = parse_spec("mlp:depth=2,activation=max(x,0.1*x),width=8")
    assert expr.activation_keys == ("max(x,0.1*x)",)
    wrn = parse_spec("wide_resnet:depth=16,widen_factor=2,shortcut_weight=0.5")
    assert parse_spec(wrn.spec).to_dict() == wrn.to_dict()


@pytest.mark.parametrize("spec,match", [
    ("", r"nonempty string"),
    ("transformer:depth=3", r"unknown network preset 'transformer'.*presets: mlp, convnet"),
    ("mlp:depth=3,heigth=2", r"'mlp' has no option 'heigth'; options: depth \(integer\), "
                             r"width \(integer, default 1024\)"),
    ("mlp:depth=-3", r"mlp depth must be a positive integer"),
    ("mlp:depth=3.5", r"option depth='3.5': expected integer"),
    ("mlp:width=3", r"'mlp' needs option\(s\) depth"),
    ("mlp:depth=3,depth=4", r"given twice"),
    ("mlp:depth", r"not key=value"),
    ("resnet:depth=42", r"resnet depth must be one of \[18, 34, 50, 101, 152, 200\]"),
    ("resnet:depth=50,shortcut_weight=1.5", r"shortcut_weight must be in \[0, 1\]"),
    ("resnet:depth=50,version=3", r"version must be 1 .* or 2"),
    ("wide_resnet:depth=27", r"6n \+ 4"),
    ("convnet:depth=2,input_shape=32xx3", r"expected e.g. 32x32x3"),
    ("mlp:depth=2,activation=tanhh", r"unknown activation 'tanhh'"),
    ("missing/net.json", r"does not exist"),
])
def test_bad_specs(spec, match):
    with _raises(match):
        parse_spec(spec)
