"""Reference trainer, JAX backend: NumPy parity, learning, convnets, resnet-bn, K-FAC, resume,
divergence, data parallelism (2 forced CPU devices, in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("jax", reason="the JAX backend needs the optional extra kernelshape[jax]")
pytest.importorskip("optax", reason="the JAX backend needs the optional extra kernelshape[jax]")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from kernelshape.constants import build_document  # noqa: E402
from kernelshape.engine.activations import Transform, activation  # noqa: E402
from kernelshape.topology import Dense, Network, Nonlinearity, Serial, nets, network  # noqa: E402
from kernelshape.topology.apply import backward, forward, init_params  # noqa: E402
from kernelshape.train import jax_backend as jb  # noqa: E402
from kernelshape.train import resume, train  # noqa: E402
from kernelshape.train.data import Dataset, teacher  # noqa: E402
from kernelshape.train.jax_optim import kfac_jax_available  # noqa: E402
from kernelshape.train.numpy_backend import softmax_xent  # noqa: E402

jb.enable_float64("float64")   # parity checks run in float64; float32 runs stay float32
SLOPE = 0.5


def mlp(depth: int, width: int, act: str, input_dim: int = 32) -> Network:
    return nets.mlp(depth, width=width, activation=act, input_dim=input_dim)


def convnet(depth: int, channels: int, act: str, input_shape: tuple[int, ...],
            num_classes: int = 4) -> Network:
    return nets.convnet(depth, channels=channels, activation=act, input_shape=input_shape,
                        num_classes=num_classes)


def tat_doc(net: Network, slope: float = SLOPE) -> dict:
    t = {"input_scale": 1.0, "input_shift": 0.0, "output_shift": 0.0,
         "output_scale": float(np.sqrt(2 / (1 + slope**2))), "negative_slope": slope}
    return build_document("tat", {"eta": 0.9}, {"leaky_relu": t}, {"leaky_relu": {}},
                          {"leaky_relu": {}}, network=net)


def waves(n_train: int = 768, n_test: int = 256, length: int = 16, seed: int = 0) -> Dataset:
    """1-D signals, class k = a sinusoid of frequency (k+1)/length with random phase + noise."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.integers(0, 4, n)
    t = np.arange(length)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    x = np.sin(2 * np.pi * (y[:, None] + 1) * t / length + phase)
    x = x + 0.3 * rng.standard_normal(x.shape)
    return Dataset("waves", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 4)


def test_activations_match_the_library() -> None:
    x = np.linspace(-4, 4, 101)
    for name, params in [("tanh", {}), ("softplus", {}), ("gelu", {}), ("leaky_relu", {}),
                         ("elu", {}), ("selu", {}), ("swish", {}), ("erf", {}), ("sin", {}),
                         ("x*tanh(log(1+exp(x)))", {})]:
        t = {"input_scale": 1.3, "input_shift": 0.2, "output_shift": -0.1,
             "output_scale": 1.1}
        ref = activation(name, **params).transformed(Transform(**t))
        got = jb.jax_activation(ref)(jnp.asarray(x))
        np.testing.assert_allclose(np.asarray(got), ref(x), rtol=1e-12, atol=1e-12,
                                   err_msg=name)


def test_jax_gradients_match_numpy_backend() -> None:
    """The JAX rules and the NumPy rules (topology.apply) of the same network: same loss and
    gradients (float64) with the same initial weights."""
    t = {"tanh": Transform(1.3, 0.2, -0.1, 1.1), "softplus": Transform(0.7, -0.4, 0.3, 1.5),
         "leaky_relu": Transform(negative_slope=0.3, output_scale=1.2)}
    layers = []
    for i, name in enumerate(["tanh", "softplus", "gelu", "leaky_relu"]):
        layers += [Dense(7, name=f"dense{i}"), Nonlinearity(name, name=f"act{i}")]
    net = network(Serial(*layers, Dense(3, name="readout")), (5,))
    acts = net.transformed_activations(t)
    params = init_params(net, np.random.default_rng(1), "eoc", 1.5, 0.1)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((11, 5)), rng.integers(0, 3, 11)
    fwd = forward(net, params, x, acts)
    loss, _, d, _ = softmax_xent(fwd.result, y)
    grads, _ = backward(fwd, d, params)

    model = jb.Model(net, {k: jb.jax_activation(a) for k, a in acts.items()},
                     np.dtype(np.float64))
    jparams = jax.tree_util.tree_map(jnp.asarray, params)
    (jloss, _), jgrads = jax.value_and_grad(jb.loss_fn, argnums=1, has_aux=True)(
        model, jparams, {}, jnp.asarray(x), jnp.asarray(y))
    assert float(jloss) == pytest.approx(loss, rel=1e-12)
    for (gw, gb), (jw, jbias) in zip(grads, jgrads, strict=True):
        np.testing.assert_allclose(np.asarray(jw), gw, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(np.asarray(jbias), gb, rtol=1e-10, atol=1e-13)


def test_every_layer_rule_agrees_with_the_numpy_rule() -> None:
    """Forward outputs of every node of a DAG with every layer class (Dense, Conv, strided
    Conv, LayerNorm, BatchNorm, sums, concatenation, pooling, flatten): JAX == NumPy."""
    from kernelshape.topology import (
        BatchNorm,
        Concat,
        Conv,
        Flatten,
        GlobalAvgPool,
        Identity,
        LayerNorm,
        Sum,
    )
    from kernelshape.topology.apply import init_state

    body = Serial(Conv(6, 3, name="c0"), BatchNorm(name="bn"), Nonlinearity("tanh"),
                  Concat(Conv(3, 3, 2, name="p"), Conv(5, 1, 2, name="q"), name="cat"),
                  LayerNorm(name="ln"), Nonlinearity("softplus"),
                  Sum(Conv(8, 3), Identity(), weights=(1.0, 1.0), name="plain"),
                  Flatten(name="flat"), Dense(6), Nonlinearity("tanh"), Dense(3))
    net = network(body, (8, 2))
    pooled = network(Serial(Conv(4, 3), Nonlinearity("tanh"), GlobalAvgPool(), Dense(3)),
                     (5, 5, 2))
    rng = np.random.default_rng(0)
    for n in (net, pooled):
        acts = n.transformed_activations(None)
        params = [tuple(rng.standard_normal(a.shape) for a in p)
                  for p in init_params(n, rng, "lecun")]
        x = rng.standard_normal((4, *n.input_shape))
        ref = forward(n, params, x, acts, state=init_state(n)).outputs
        model = jb.Model(n, {k: jb.jax_activation(a) for k, a in acts.items()},
                         np.dtype(np.float64))
        _, _, outs = jb.forward(model, jax.tree_util.tree_map(jnp.asarray, params),
                                jnp.asarray(x), jb.init_model_state(model), collect=True)
        for node, o in zip(n.nodes[1:], outs, strict=True):
            np.testing.assert_allclose(np.asarray(o), ref[node.id], rtol=1e-10, atol=1e-12,
                                       err_msg=node.id)


def test_shaped_mlp_learns_and_matches_numpy_run() -> None:
    net = mlp(16, 32, "leaky_relu")
    kw = dict(method="tat", constants=tat_doc(net),
              verify_constants=False, data=teacher(1024, 256), steps=80,
              batch_size=64, log_every=10, progress=False, optimizer="adam")
    rj = train(net, backend="jax", **kw)
    first, last = rj.history[0]["loss"], rj.history[-1]["loss"]
    assert rj.status == "completed" and last < first / 2, (first, last)
    rn = train(net, backend="numpy", **kw)      # same init, data order and update rule
    np.testing.assert_allclose([h["loss"] for h in rj.history],
                               [h["loss"] for h in rn.history], rtol=1e-8)
    r32 = train(net, backend="jax", dtype="float32", **{**kw, "steps": 5})
    assert all(w.dtype == np.float32 for w, _ in r32.params)


def test_shaped_convnet_learns_and_resnet_bn_baseline_runs() -> None:
    net = convnet(8, 16, "leaky_relu", input_shape=(16, 1))
    kw = dict(data=waves(), steps=60, batch_size=64, log_every=10, progress=False,
              optimizer="adam", lr=3e-3, backend="jax", dtype="float32")
    r = train(net, method="tat", constants=tat_doc(net), verify_constants=False, **kw)
    first, last = r.history[0]["loss"], r.history[-1]["loss"]
    assert r.status == "completed" and last < first / 2, (first, last)
    w0 = r.params[0][0]
    assert w0.shape == (3, 2, 16)      # (kernel, in = 1 channel + PLN coordinate, out)
    bn = train(net, method="resnet-bn", **kw)
    assert bn.status == "completed" and bn.history[-1]["loss"] < bn.history[0]["loss"]
    assert len(bn.params) == 9 + 8 and np.isfinite(bn.test_loss)   # 9 linear, 8 BatchNorm


def test_delta_init_is_suo_on_the_centre_tap() -> None:
    net = convnet(2, 6, "tanh", input_shape=(5, 5, 4), num_classes=10)
    params = init_params(net, np.random.default_rng(0), "suo")
    w = params[0][0]
    assert w.shape == (3, 3, 4, 6) and np.count_nonzero(w[[0, 2]]) == 0
    centre = w[1, 1]
    np.testing.assert_allclose(centre @ centre.T, (6 / 4) * np.eye(4), atol=1e-12)


@pytest.mark.parametrize("optimizer, options", [
    ("adam", {"schedule": "warmup_cosine", "warmup_steps": 5}),
    ("kfac", {"implementation": "own"}),
])
def test_resume_is_bit_identical(tmp_path, optimizer: str, options: dict) -> None:
    net = mlp(6, 16, "leaky_relu")
    kw = dict(method="tat", constants=tat_doc(net),
              verify_constants=False, optimizer=optimizer, backend="jax",
              optimizer_options=options, data=teacher(256, 64), steps=16, batch_size=32,
              checkpoint_every=4, log_every=1, progress=False)
    full = train(net, out=tmp_path / "full", **kw)

    def interrupt(step: int, record: dict) -> None:
        if step == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(net, out=tmp_path / "cut", callback=interrupt, **kw)
    assert json.loads((tmp_path / "cut" / "checkpoint.json").read_text())["step"] == 9
    resumed = resume(tmp_path / "cut", data=kw["data"])
    for (w1, b1), (w2, b2) in zip(full.params, resumed.params, strict=True):
        assert np.array_equal(w1, w2) and np.array_equal(b1, b2)

    def losses(d: str) -> list[float]:
        lines = (tmp_path / d / "metrics.jsonl").read_text().splitlines()
        return [json.loads(ln)["loss"] for ln in lines if "loss" in json.loads(ln)]

    assert losses("cut") == losses("full") and len(losses("full")) == 16


def test_own_kfac_learns() -> None:
    net = mlp(10, 32, "leaky_relu")
    r = train(net, method="tat", constants=tat_doc(net),
              verify_constants=False, optimizer="kfac", backend="jax",
              optimizer_options={"implementation": "own"}, data=teacher(1024, 256), steps=60,
              batch_size=64, log_every=10, progress=False)
    assert r.status == "completed" and r.history[-1]["loss"] < r.history[0]["loss"] / 2


def test_kfac_jax_takes_real_steps(tmp_path) -> None:
    ok, why = kfac_jax_available()
    if not ok:
        pytest.skip(f"kfac-jax does not import here ({why}); the own K-FAC is used instead")
    net = mlp(4, 16, "leaky_relu")
    r = train(net, method="tat", constants=tat_doc(net),
              verify_constants=False, optimizer="kfac", backend="jax",
              data=teacher(512, 128), steps=30, batch_size=64, log_every=5, progress=False,
              out=tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["kfac_implementation"] == "kfac_jax"
    assert r.status == "completed" and r.history[-1]["loss"] < 0.8 * r.history[0]["loss"]


def test_kfac_auto_falls_back_to_own_kfac(tmp_path, monkeypatch) -> None:
    from kernelshape.train import jax_trainer

    monkeypatch.setattr(jax_trainer, "kfac_jax_available", lambda: (False, "simulated"))
    net = mlp(3, 8, "leaky_relu")
    r = train(net, method="tat", constants=tat_doc(net),
              verify_constants=False, optimizer="kfac", backend="jax",
              data=teacher(256, 64), steps=3, batch_size=32, progress=False, out=tmp_path)
    assert r.status == "completed"
    assert json.loads((tmp_path / "config.json").read_text())["kfac_implementation"] == "own"


def test_divergence_names_step_and_layer(tmp_path) -> None:
    net = mlp(10, 24, "relu")
    r = train(net, method="none", optimizer="sgd", lr=1e6, data=teacher(256, 64), steps=50,
              batch_size=32, checkpoint_every=1, progress=False, out=tmp_path, dtype="float32",
              backend="jax")
    assert r.status == "diverged" and f"step {r.step}" in r.message and "layer '" in r.message
    pointer = json.loads((tmp_path / "checkpoint.json").read_text())
    assert pointer["step"] == r.step
    with np.load(tmp_path / pointer["file"]) as z:
        assert all(np.isfinite(z[k]).all() for k in z.files)


DP_SCRIPT = textwrap.dedent("""
    import json, numpy as np, jax
    from kernelshape.topology import nets
    from kernelshape.train import train
    from kernelshape.train.data import teacher
    assert len(jax.devices()) == 2, jax.devices()
    net = nets.mlp(4, width=16, activation="tanh", input_dim=32)
    kw = dict(method="none", optimizer="sgd", lr=0.05, data=teacher(256, 64), steps=6,
              batch_size=32, log_every=1, progress=False, backend="jax")
    seen = []
    from kernelshape.train import jax_trainer
    orig = jax_trainer.JaxBackend._batch
    def spy(self, idx):
        x, y = orig(self, idx)
        seen.append(len(x.sharding.device_set))
        return x, y
    jax_trainer.JaxBackend._batch = spy
    one = train(net, **kw)
    two = train(net, data_parallel=2, **kw)
    print(json.dumps({"one": [h["loss"] for h in one.history],
                      "two": [h["loss"] for h in two.history], "devices": seen}))
""")


def test_data_parallel_on_two_cpu_devices() -> None:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", DP_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(res["devices"][:6]) == {1} and set(res["devices"][6:]) == {2}
    np.testing.assert_allclose(res["two"], res["one"], rtol=1e-5)
