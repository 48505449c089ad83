"""Reference trainer, JAX backend, DAG topologies: residual sums, concatenation, LayerNorm.

One topology object drives the kernel maps, the solver and the trained model: the forward pass
matches a hand-written computation, the per-node (q, c) of a wide SUO-initialized DKS network
match the topology's `kernel_states`, shaped residual / LayerNorm nets learn (Adam, own K-FAC,
kfac-jax), plans round-trip through JSON, resume is bit-exact, and misuse gets clear errors.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("jax", reason="the JAX backend needs the optional extra kernelshape[jax]")
pytest.importorskip("optax", reason="the JAX backend needs the optional extra kernelshape[jax]")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import kernelshape as ks  # noqa: E402
from kernelshape.constants import network_hash  # noqa: E402
from kernelshape.topology import (  # noqa: E402
    Concat,
    Dense,
    LayerNorm,
    Network,
    Nonlinearity,
    Repeat,
    Residual,
    Serial,
    WeightedSum,
    network,
    parse_spec,
)
from kernelshape.topology.apply import conv_patches, init_params  # noqa: E402
from kernelshape.train import jax_backend as jb  # noqa: E402
from kernelshape.train import resume, train  # noqa: E402
from kernelshape.train.data import teacher  # noqa: E402
from kernelshape.train.jax_optim import kfac_jax_available  # noqa: E402

jb.enable_float64("float64")


def small_dag() -> object:
    """Dense, concat of two Dense branches, LayerNorm, a residual block, readout."""
    body = Serial(
        Dense(6, name="d0"), Nonlinearity("tanh", name="a0"),
        Concat(Dense(3, name="p"), Dense(5, name="q"), name="cat"),
        Dense(6, name="d1"), LayerNorm(name="ln"), Nonlinearity("softplus", name="a1"),
        Residual(Serial(Dense(6, name="r0"), Nonlinearity("tanh", name="a2"),
                        Dense(6, name="r1")), shortcut_weight=0.6, name="res"),
        Nonlinearity("tanh", name="a3"), Dense(3, name="out"))
    return network(body, (4,))


def residual_mlp(depth: int, width: int, act: str = "softplus", w: float = 0.8) -> object:
    """Pre-activation residual MLP: `depth` nonlinear layers in depth/2 blocks."""
    block = Residual(Serial(Nonlinearity(act), Dense(width), Nonlinearity(act), Dense(width)),
                     shortcut_weight=w)
    body = Serial(Dense(width), Repeat(block, depth // 2, name="blk"), Nonlinearity(act),
                  Dense(10, name="readout"))
    return network(body, (32,), name="resmlp")


def layernorm_resnet(blocks: int, width: int) -> object:
    """Pre-LN residual MLP: blocks of LayerNorm -> tanh -> Dense with shortcut weight 0.7."""
    block = Residual(Serial(LayerNorm(), Nonlinearity("tanh"), Dense(width)), shortcut_weight=0.7)
    return network(Serial(Dense(width), Repeat(block, blocks, name="blk"), LayerNorm(),
                          Nonlinearity("tanh"), Dense(10, name="readout")), (32,))


def layernorm_mlp(depth: int, width: int) -> object:
    block = Serial(Dense(width), LayerNorm(), Nonlinearity("tanh"))
    return network(Serial(Repeat(block, depth, name="b"), Dense(10, name="readout")), (32,))


def model_of(net: Network, method: str | None) -> tuple[jb.Model, dict]:
    """The JAX model of ``net`` with the transforms of ``method`` (None: untransformed)."""
    transforms = ks.shape(net, method).transforms if method is not None else {}
    acts = {k: jb.jax_activation(a) for k, a in net.transformed_activations(transforms).items()}
    return jb.Model(net, acts, np.dtype(np.float64)), transforms


# --------------------------------------------------------------------------- (a) forward

def test_dag_forward_matches_hand_written_jax() -> None:
    net = small_dag()
    model, _ = model_of(net, None)
    assert [n.layer.type_name for n in net.nodes[1:]] == [
        "Dense", "Nonlinearity", "Dense", "Dense", "ChannelConcat", "Dense", "LayerNorm",
        "Nonlinearity", "Dense", "Nonlinearity", "Dense", "WeightedSum", "Nonlinearity",
        "Dense"]
    rng = np.random.default_rng(0)
    params = [tuple(jnp.asarray(rng.standard_normal(a.shape)) for a in p)
              for p in init_params(net, rng, "lecun")]  # random: LayerNorm scale/offset not 1/0
    x = jnp.asarray(rng.standard_normal((7, 4)))
    logits, _, _ = jb.forward(model, params, x)

    (w0, b0), (wp, bp), (wq, bq), (w1, b1), (s, o), (wr0, br0), (wr1, br1), (wo, bo) = params
    a0 = jnp.tanh(x @ w0 + b0)
    d1 = jnp.concatenate([a0 @ wp + bp, a0 @ wq + bq], axis=1) @ w1 + b1
    ln = d1 / jnp.sqrt(jnp.mean(d1**2, axis=1, keepdims=True) + 1e-6) * s + o
    a1 = jax.nn.softplus(ln)
    r1 = jnp.tanh(a1 @ wr0 + br0) @ wr1 + br1
    expected = jnp.tanh(math.sqrt(1 - 0.36) * r1 + 0.6 * a1) @ wo + bo
    np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), rtol=1e-10,
                               atol=1e-12)

    # K-FAC's view: one perturbation per Dense layer, and each Dense layer's input
    zeros = [jnp.zeros((7, *n.shape)) for n in model.linear_nodes]
    same, _, inputs = jb.forward(model, params, x, collect=True, perturb=zeros)
    assert np.array_equal(np.asarray(same), np.asarray(logits)) and len(inputs) == 7
    np.testing.assert_allclose(np.asarray(inputs[3]).shape, (7, 8))           # the concat
    np.testing.assert_allclose(np.asarray(inputs[4]), np.asarray(a1), rtol=1e-12)


# --------------------------------------------------------------------------- (b) kernels

REPLICATES, WIDTH, Z_MAX = 16, 512, 4.0


def test_initial_kernels_match_topology_kernel_states() -> None:
    """Per node of a DKS-shaped residual / concat / LayerNorm net (width 512, SUO init): the
    empirical q1 and c of 4 input pairs (c_in = -0.5, 0, 0.5, 0.9, q_in = 1), averaged over 16
    independent initializations, lie within 4 standard errors (+0.01) of the topology's
    `kernel_states` with the solver's transforms. Single-network deviations are ~0.1 here."""
    block = Residual(Serial(Nonlinearity("softplus"), Dense(WIDTH), Nonlinearity("softplus"),
                            Dense(WIDTH)), shortcut_weight=0.8)
    body = Serial(Dense(WIDTH), Repeat(block, 3, name="blk"),
                  Concat(Dense(WIDTH // 2), Dense(WIDTH // 2), name="cat"), Dense(WIDTH),
                  LayerNorm(name="ln"), Nonlinearity("softplus", name="act"), Dense(10))
    net = network(body, (64,))
    model, transforms = model_of(net, "dks")
    cs = np.array([-0.5, 0.0, 0.5, 0.9])
    rng = np.random.default_rng(0)
    x = np.empty((2 * len(cs), 64))
    for p, c in enumerate(cs):
        u, v = np.linalg.qr(rng.standard_normal((64, 2)))[0].T
        x[2 * p], x[2 * p + 1] = 8.0 * u, 8.0 * (c * u + math.sqrt(1 - c * c) * v)
    run = jax.jit(lambda p: jb.forward(model, p, jnp.asarray(x), collect=True)[2])
    names = [n.id for n in net.nodes[1:]]
    samples = []
    for seed in range(REPLICATES):
        outs = run(init_params(net, np.random.default_rng(seed), "suo"))
        rows = []
        for o in outs[:-1]:                       # not the 10-unit readout
            o = np.asarray(o)
            q1, q2 = np.mean(o[0::2]**2, -1), np.mean(o[1::2]**2, -1)
            rows.append((q1, np.mean(o[0::2] * o[1::2], -1) / np.sqrt(q1 * q2)))
        samples.append(rows)
    states = net.kernel_states(cs, transforms=transforms)
    for i, name in enumerate(names[:-1]):
        for k, what in enumerate(("q1", "c")):
            got = np.array([s[i][k] for s in samples])
            mean, se = got.mean(0), got.std(0, ddof=1) / math.sqrt(REPLICATES)
            want = np.broadcast_to(getattr(states[name], what), mean.shape)
            assert np.all(np.abs(mean - want) <= Z_MAX * se + 0.01), (name, what, mean, want)
    assert np.allclose([s[names.index("ln")][0] for s in samples], 1.0, atol=1e-5)


# --------------------------------------------------------------------------- (c) learning

@pytest.mark.parametrize("net_name, optimizer, options, lr", [
    ("residual", "adam", {}, 3e-3),
    ("residual", "kfac", {"implementation": "own"}, None),
    ("layernorm", "adam", {}, 3e-3),
    ("layernorm", "kfac", {"implementation": "own"}, None),
])
def test_shaped_dags_learn(net_name: str, optimizer: str, options: dict, lr: float | None
                           ) -> None:
    """Loss after 40 steps at most 0.6 x the first step's (teacher data, batch 64)."""
    net = residual_mlp(12, 32) if net_name == "residual" else layernorm_resnet(4, 32)
    r = train(net, method="dks", optimizer=optimizer, optimizer_options=options, lr=lr,
              backend="jax", data=teacher(1024, 256), steps=40, batch_size=64, log_every=1,
              progress=False)
    first, last = r.history[0]["loss"], np.mean([h["loss"] for h in r.history[-5:]])
    assert r.status == "completed" and last < 0.6 * first, (first, last)


def test_kfac_jax_registers_dense_and_layernorm_blocks(monkeypatch) -> None:
    ok, why = kfac_jax_available()
    if not ok:
        pytest.skip(f"kfac-jax does not import here ({why})")
    from kernelshape.train import jax_trainer

    made = []
    original = jax_trainer._make_kfac_jax
    monkeypatch.setattr(jax_trainer, "_make_kfac_jax", lambda *a: made.append(original(*a))
                        or made[-1])
    r = train(layernorm_resnet(4, 32), method="dks", optimizer="kfac", backend="jax",
              data=teacher(1024, 64), steps=12, batch_size=64, log_every=1, progress=False,
              optimizer_options={"implementation": "kfac_jax"})
    blocks = [type(b).__name__ for b in made[0]._estimator.blocks]
    assert blocks.count("DenseTwoKroneckerFactored") == 6
    assert blocks.count("ScaleAndShiftDiagonal") == 5
    assert r.status == "completed" and r.history[-1]["loss"] < 0.8 * r.history[0]["loss"]


# --------------------------------------------------------------------------- (d) plans, resume

def test_run_directory_stores_the_network_description(tmp_path) -> None:
    """config.json holds network.to_dict(); it rebuilds the same network (same hash)."""
    net = small_dag()
    r = train(net, method="dks", backend="jax", data=teacher(64, 32, dim=4, n_classes=3),
              steps=1, batch_size=16, progress=False, out=tmp_path)
    assert r.status == "completed"
    record = json.loads((tmp_path / "config.json").read_text())
    assert network_hash(Network.from_dict(record["network"]).to_dict()) == \
        network_hash(net.to_dict())
    assert record["config"]["method"] == "dks" and record["shaping"]["source"] == "solver"


def test_dag_resume_is_bit_identical(tmp_path) -> None:
    net = layernorm_resnet(4, 32)     # the jitted step of test_shaped_dags_learn is reused
    kw = dict(method="dks", optimizer="kfac", backend="jax", data=teacher(256, 64), steps=12,
              batch_size=64, checkpoint_every=4, log_every=1, progress=False,
              optimizer_options={"implementation": "own"})
    full = train(net, out=tmp_path / "full", **kw)

    def interrupt(step: int, record: dict) -> None:
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(net, out=tmp_path / "cut", callback=interrupt, **kw)
    resumed = resume(tmp_path / "cut", data=kw["data"])
    assert len(full.params) == 1 + 2 * 4 + 2      # Dense, (Norm, Dense) x 4, Norm, readout
    for a, b in zip(jax.tree_util.tree_leaves(full.params),
                    jax.tree_util.tree_leaves(resumed.params), strict=True):
        assert np.array_equal(a, b)

    def losses(d: str) -> list[float]:
        lines = (tmp_path / d / "metrics.jsonl").read_text().splitlines()
        return [json.loads(ln)["loss"] for ln in lines if "loss" in json.loads(ln)]

    assert losses("cut") == losses("full") and len(losses("full")) == 12


def test_resnet_spec_trains_with_the_topologys_shortcut_weights() -> None:
    spec = ("resnet:depth=18,width=4,shortcut_weight=0.8,input_shape=16x1,num_classes=4,"
            "activation=softplus")
    sums = [n.layer for n in parse_spec(spec).nodes if isinstance(n.layer, WeightedSum)]
    assert len(sums) == 8 and all(s.weights == pytest.approx((0.6, 0.8)) for s in sums)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((192, 16))
    y = (x[:, :8].sum(1) > 0).astype(int) + 2 * (x[:, 8:].sum(1) > 0)
    from kernelshape.train.data import Dataset

    data = Dataset("halves", x[:128], y[:128], x[128:], y[128:], 4)
    r = train(spec, method="dks", backend="jax", data=data, steps=3, batch_size=32,
              dtype="float32", progress=False)
    assert r.status == "completed" and np.isfinite(r.test_loss)
    assert r.params[0][0].shape == (7, 2, 4)     # stem: kernel 7, 1 channel + PLN coordinate
    from kernelshape.topology import Conv, GlobalAvgPool

    block = Residual(Serial(Nonlinearity("softplus"), Conv(4, 3, 2), Nonlinearity("softplus"),
                            Conv(4, 3)), shortcut=Conv(4, 1, 2), shortcut_weight=0.8)
    small = network(Serial(Conv(4, 3), block, Nonlinearity("softplus"), GlobalAvgPool(),
                           Dense(4)), (16, 1))
    r = train(small, method="dks", backend="jax", data=data, steps=20, batch_size=32,
              progress=False, optimizer="kfac", log_every=1,      # own K-FAC on convs (KFC)
              optimizer_options={"implementation": "own"})
    losses = [h["loss"] for h in r.history]
    assert r.status == "completed" and np.mean(losses[-5:]) < 0.9 * np.mean(losses[:3]), losses


def test_kfac_sees_conv_patches_of_each_conv_input() -> None:
    """The own K-FAC's Conv statistics: `conv_patches` of the collected layer input times
    W.reshape(-1, Cout) is that layer's output (strided 3-tap and 1x1 shortcut convs)."""
    net = parse_spec("resnet:depth=18,width=4,shortcut_weight=0.8,input_shape=16x1,"
                     "num_classes=4,activation=softplus").with_input_shape((16, 2))
    model = jb.Model(net, {k: jnp.tanh for k in net.activation_keys}, np.dtype(np.float64))
    rng = np.random.default_rng(1)
    params = init_params(net, rng, "lecun")
    x = jnp.asarray(rng.standard_normal((3, 16, 2)))
    zeros = [jnp.zeros((3, *n.shape)) for n in model.linear_nodes]
    _, _, inputs = jb.forward(model, params, x, collect=True, perturb=zeros)
    _, _, outputs = jb.forward(model, params, x, collect=True)
    out = dict(zip([n.id for n in net.nodes[1:]], outputs, strict=True))
    for node, a, (w, b) in zip(model.linear_nodes[:-1], inputs, params, strict=False):
        got = conv_patches(a, node.layer, jnp) @ w.reshape(-1, w.shape[-1]) + b
        want = np.asarray(out[node.id]).reshape(3, -1, w.shape[-1])
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- (e) errors

def test_dag_errors_are_clear() -> None:
    net = residual_mlp(2, 8)
    data = teacher(64, 32)
    with pytest.raises(ValueError, match="ResNet-BN baseline is built for chain networks"):
        train(net, method="resnet-bn", backend="jax", data=data, steps=1, batch_size=16)
    shared = Dense(8, name="shared")
    net = network(Serial(Dense(8), Nonlinearity("tanh"), shared, Nonlinearity("tanh"), shared,
                         Nonlinearity("tanh"), Dense(10)), (32,))
    assert net.node("shared.1").share == "shared"
    r = train(net, method="none", backend="jax", data=data, steps=2, batch_size=16,
              progress=False)                           # shared weights train with adam
    assert r.status == "completed" and len(r.params) == 3
    with pytest.raises(ValueError, match="K-FAC .* shares weights"):
        train(net, method="none", optimizer="kfac", backend="jax", data=data, steps=1,
              batch_size=16)
    with pytest.raises(ValueError, match="looks-linear init needs a chain"):
        init_params(residual_mlp(2, 8, "relu"), np.random.default_rng(0), "ll")
