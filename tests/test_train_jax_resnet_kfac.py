"""K-FAC for the resnet-bn baseline (JAX backend), own K-FAC and kfac-jax: learning on an MLP
and a 2-D convnet, BatchNorm running statistics threaded through the K-FAC step and used by
evaluation, kfac-jax block registration, bit-exact resume, and the own K-FAC's BN update
(plain momentum with the step size shared with the Kronecker-factored layers)."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest

pytest.importorskip("jax", reason="the JAX backend needs the optional extra kernelshape[jax]")
pytest.importorskip("optax", reason="the JAX backend needs the optional extra kernelshape[jax]")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from kernelshape.topology import BatchNorm, Conv, Dense, nets  # noqa: E402
from kernelshape.topology.apply import init_params, init_state  # noqa: E402
from kernelshape.train import jax_backend as jb  # noqa: E402
from kernelshape.train import jax_trainer, resume, train  # noqa: E402
from kernelshape.train.config import TrainConfig  # noqa: E402
from kernelshape.train.data import Dataset, teacher  # noqa: E402
from kernelshape.train.jax_optim import kfac_init, kfac_jax_available  # noqa: E402
from kernelshape.train.run import build_run  # noqa: E402
from kernelshape.train.shaping import Shaping  # noqa: E402

jb.enable_float64("float64")   # the trainer's default dtype


def gratings(n_train: int = 768, n_test: int = 256, size: int = 6, seed: int = 0) -> Dataset:
    """size x size images (flattened), class k = a grating at angle k*45 degrees, random phase,
    plus noise."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.integers(0, 4, n)
    r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    angle = y[:, None, None] * np.pi / 4
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    x = np.sin(2 * np.pi * (np.cos(angle) * r + np.sin(angle) * c) / 3 + phase)
    x = (x + 0.3 * rng.standard_normal(x.shape)).reshape(n, -1)
    return Dataset("gratings", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 4)


NETS = {"mlp": (lambda: nets.mlp(6, width=32, activation="leaky_relu", input_dim=32),
                lambda: teacher(1024, 256)),
        "convnet": (lambda: nets.convnet(3, channels=8, activation="relu", input_shape=(6, 6, 1),
                                         num_classes=4), gratings)}


def _need_kfac_jax(impl: str) -> None:
    ok, why = kfac_jax_available()
    if impl == "kfac_jax" and not ok:
        pytest.skip(f"kfac-jax does not import here ({why})")


def _final_state(out, data: Dataset) -> tuple[jax_trainer.JaxBackend, tuple, tuple]:
    """An evaluation backend for the run in `out`, the run's final (params, -, BN statistics)
    from its last checkpoint, and the initial state."""
    from kernelshape.topology import Network

    record = json.loads((out / "config.json").read_text())
    config = TrainConfig(**{**record["config"], "optimizer": "sgd", "optimizer_options": {}})
    run = build_run(config, Network.from_dict(record["network"]),
                    Shaping.from_dict(record["shaping"]), data)
    backend = jax_trainer.JaxBackend(run)
    p0, _, m0 = backend.init()
    pointer = json.loads((out / "checkpoint.json").read_text())
    with np.load(out / pointer["file"]) as z:
        arrays = {k: z[k] for k in z.files}

    def load(tree, prefix: str):
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        return jax.tree_util.tree_unflatten(treedef, [arrays[f"{prefix}.{i}"]
                                                      for i in range(len(leaves))])

    return backend, (load(p0, "p"), None, load(m0, "m")), (p0, None, m0)


@pytest.mark.parametrize("impl", ["own", "kfac_jax"])
@pytest.mark.parametrize("net", ["mlp", "convnet"])
def test_resnet_bn_learns_with_kfac_and_threads_bn_statistics(tmp_path, monkeypatch, net: str,
                                                              impl: str) -> None:
    """40 steps (batch 64): the mean loss of the last 5 steps is below 0.6 x the first step's;
    the running statistics moved away from (0, 1) and are what evaluation uses; kfac-jax
    registers every linear layer as a Kronecker-factored block and every BN (scale, offset)
    as a scale-and-shift block."""
    _need_kfac_jax(impl)
    made = []
    original = jax_trainer._make_kfac_jax
    monkeypatch.setattr(jax_trainer, "_make_kfac_jax",
                        lambda *a: made.append(original(*a)) or made[-1])
    make_net, make_data = NETS[net]
    chain, data = make_net(), make_data()
    r = train(chain, method="resnet-bn", optimizer="kfac", backend="jax", data=data, steps=40,
              batch_size=64, log_every=1, progress=False, out=tmp_path,
              optimizer_options={"implementation": impl})
    first, last = r.history[0]["loss"], np.mean([h["loss"] for h in r.history[-5:]])
    assert r.status == "completed" and last < 0.6 * first, (first, last)
    assert json.loads((tmp_path / "config.json").read_text())["kfac_implementation"] == impl
    n_linear = sum(isinstance(n.layer, Dense | Conv) for n in chain.nodes)
    if impl == "kfac_jax":          # (n_linear - 1) hidden Dense / Conv layers and BN units
        blocks = [type(b).__name__ for b in made[0]._estimator.blocks]
        n_conv = n_linear - 1 if net == "convnet" else 0
        assert blocks.count("Conv2DTwoKroneckerFactored") == n_conv, blocks
        assert blocks.count("DenseTwoKroneckerFactored") == n_linear - n_conv, blocks
        assert blocks.count("ScaleAndShiftDiagonal") == n_linear - 1, blocks
        assert len(blocks) == 2 * n_linear - 1, blocks
    else:
        assert not made
    backend, trained, initial = _final_state(tmp_path, data)
    assert len(trained[2]) == n_linear - 1
    for (mean, var), (m0, v0) in zip(trained[2].values(), initial[2].values(), strict=True):
        assert np.abs(mean - m0).max() > 1e-3 and np.abs(var - v0).max() > 1e-3
    loss, acc = backend.evaluate(trained)
    assert loss == pytest.approx(r.test_loss, rel=1e-9) and acc == pytest.approx(r.test_acc)
    stale, _ = backend.evaluate((trained[0], None, initial[2]))     # init statistics instead
    assert abs(stale - loss) > 1e-3 * loss


def test_resnet_bn_own_kfac_resume_is_bit_identical(tmp_path) -> None:
    """(kfac-jax resumes bit for bit too, checked by hand; it compiles its step once per run,
    ~20 s for the three runs here, so it is not part of the suite.)"""
    chain = NETS["mlp"][0]()        # the jitted step of the learning test is reused
    kw = dict(method="resnet-bn", optimizer="kfac", backend="jax", data=teacher(256, 64),
              steps=12, batch_size=64, checkpoint_every=4, log_every=1, progress=False,
              optimizer_options={"implementation": "own"})
    full = train(chain, out=tmp_path / "full", **kw)

    def interrupt(step: int, record: dict) -> None:
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(chain, out=tmp_path / "cut", callback=interrupt, **kw)
    assert json.loads((tmp_path / "cut" / "checkpoint.json").read_text())["step"] == 7
    resumed = resume(tmp_path / "cut", data=kw["data"])
    assert resumed.status == "completed"

    def final(d: str) -> dict[str, np.ndarray]:
        pointer = json.loads((tmp_path / d / "checkpoint.json").read_text())
        assert pointer["step"] == 12
        with np.load(tmp_path / d / pointer["file"]) as z:
            return {k: z[k] for k in z.files}

    a, b = final("full"), final("cut")
    assert a.keys() == b.keys() and any(k.startswith("m.") for k in a)
    assert all(np.array_equal(a[k], b[k]) for k in a)       # params, K-FAC state, BN statistics
    for x, y in zip(jax.tree_util.tree_leaves(full.params),
                    jax.tree_util.tree_leaves(resumed.params), strict=True):
        assert np.array_equal(x, y)

    def losses(d: str) -> list[float]:
        lines = (tmp_path / d / "metrics.jsonl").read_text().splitlines()
        return [json.loads(ln)["loss"] for ln in lines if "loss" in json.loads(ln)]

    assert losses("cut") == losses("full") and len(losses("full")) == 12


def test_own_kfac_bn_update_is_momentum_with_the_shared_step_size() -> None:
    """Two own K-FAC steps on a resnet-bn MLP, checked against a direct computation: gradients
    and new running statistics from `loss_fn`, the stem's A factor from its input, velocity
    v <- 0.9 v + g for the BN pairs, and every pair (BN and Dense) moved by -eta v with
    eta = min(lr, sqrt(norm_constraint / (sum_l v_l^T (A_l kron G_l) v_l + |v_bn|^2)))."""
    net = nets.resnet_bn(3, width=8, activation="tanh", input_shape=(5,), num_classes=3)
    model = jb.Model(net, {k: jb.jax_activation(a) for k, a in
                           net.transformed_activations(None).items()}, np.dtype(np.float64))
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(jnp.asarray, init_params(net, rng, "lecun"))
    mstate = jax.tree_util.tree_map(jnp.asarray, init_state(net))
    lr, nc, mom = 0.5, 1e-3, 0.9
    options = {"lr": lr, "norm_constraint": nc, "momentum": mom}
    opt = kfac_init(params)
    bn = [i for i, n in enumerate(model.owners) if isinstance(n.layer, BatchNorm)]
    dense = [i for i, n in enumerate(model.owners) if isinstance(n.layer, Dense)]
    velocity = [jnp.zeros_like(s) for i in bn for s in params[i]]
    kfac_step = jax.jit(partial(jax_trainer._kfac_step, model, options))
    reference = jax.jit(jax.value_and_grad(partial(jb.loss_fn, model), has_aux=True))
    for step in range(2):
        x = jnp.asarray(rng.standard_normal((32, 5)))
        y = jnp.asarray(rng.integers(0, 3, 32), dtype=jnp.int32)
        key = jax.random.PRNGKey(step)
        new_p, opt, new_m, loss, _, ok = kfac_step(params, opt, mstate, x, y, key)
        (ref_loss, (_, ref_m)), grads = reference(params, mstate, x, y)
        assert bool(ok) and float(loss) == pytest.approx(float(ref_loss), rel=1e-12)
        for got, want in zip(jax.tree_util.tree_leaves(new_m), jax.tree_util.tree_leaves(ref_m),
                             strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12)
        if step == 0:               # decay 0 on the first step: A of the stem is E[x_h x_h^T]
            x_h = np.concatenate([x, np.ones((32, 1))], axis=1)
            np.testing.assert_allclose(opt.a_factors[0], x_h.T @ x_h / 32, rtol=1e-12)
        g_bn = [g for i in bn for g in grads[i]]
        velocity = [mom * v + g for v, g in zip(velocity, g_bn, strict=True)]
        got_v = [v for i in bn for v in opt.velocity[i]]
        for got, want in zip(got_v, velocity, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
        quad = sum(float(jnp.sum(v * v)) for v in velocity)
        for i in dense:
            vw, vb = opt.velocity[i]
            v = np.concatenate([vw, vb[None, :]], axis=0)
            quad += float(np.sum((opt.a_factors[i] @ v @ opt.g_factors[i]) * v))
        eta = min(lr, np.sqrt(nc / quad))
        assert eta < lr                       # the norm constraint sets the shared step size
        moved = [new - old for i in bn for new, old in zip(new_p[i], params[i], strict=True)]
        for got, v in zip(moved, velocity, strict=True):
            np.testing.assert_allclose(got, -eta * v, rtol=1e-9, atol=1e-15)
        for i in dense:
            (w1, b1), (w0, b0), (vw, vb) = new_p[i], params[i], opt.velocity[i]
            np.testing.assert_allclose(w1 - w0, -eta * vw, rtol=1e-9, atol=1e-15)
            np.testing.assert_allclose(b1 - b0, -eta * vb, rtol=1e-9, atol=1e-15)
        params, mstate = new_p, new_m
