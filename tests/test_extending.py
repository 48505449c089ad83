"""The two recipes of docs/architecture.md, followed literally by a test.

* A layer type: the topology layer (shapes, kernel map) plus one rule per backend (the NumPy
  ``topology.apply.RULES`` and the JAX ``train.jax_backend.RULES``): three places.
* An activation: one ``BUILTINS`` entry: one place.

The toy layer and activation are then solved, exported, trained (both backends) and checked
against independent references, and the registries are restored afterwards.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import mpmath as mp
import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss

from kernelshape.engine.activations import activation
from kernelshape.engine.builtins import BUILTINS, Builtin
from kernelshape.engine.maps import cmap, qmap
from kernelshape.export import export
from kernelshape.solve import shape
from kernelshape.topology import Dense, Layer, Nonlinearity, Serial, network
from kernelshape.topology.apply import RULES, backward, forward, init_params
from kernelshape.topology.layers import LAYER_TYPES, Shape, Unsupported
from kernelshape.train import train
from kernelshape.train.data import teacher

ALPHA = 0.5  # the toy activation's parameter


def isru(u: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Inverse square root unit, written here independently of the engine."""
    return u / np.sqrt(1.0 + alpha * u * u)


@pytest.fixture
def toy_activation(monkeypatch: pytest.MonkeyPatch) -> str:
    """Recipe 2: one BUILTINS entry."""
    monkeypatch.setitem(BUILTINS, "isru", Builtin("x / sqrt(1 + alpha * x**2)",
                                                  "x / sqrt(1 + alpha x^2)", {"alpha": ALPHA}))
    return "isru"


@pytest.fixture
def toy_layer(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Layer]]:
    """Recipe 1: the layer (it registers itself by name) and one rule per backend."""

    @dataclass(frozen=True, eq=False)
    class HalfSplitSum(Layer):
        """``y = (x[:, :n/2] + x[:, n/2:]) / sqrt(2)``: halves the channels. Kernel map: q and c
        unchanged (the two halves are independent with equal q and c in a wide network)."""

        auto_name: ClassVar[str] = "halfsum"

        def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
            *lead, n = input_shapes[0]
            if n % 2:
                raise ValueError(f"HalfSplitSum needs an even number of channels, got {n}")
            return (*lead, n // 2)

    def numpy_rule(node, inputs, params, ctx):
        x = inputs[0]
        n = x.shape[-1] // 2
        return (x[..., :n] + x[..., n:]) / np.sqrt(2.0), \
            lambda g: ([np.concatenate([g, g], axis=-1) / np.sqrt(2.0)], None)

    from kernelshape.train import jax_backend

    def jax_rule(s: jax_backend.Step):
        n = s.inputs[0].shape[-1] // 2
        return (s.inputs[0][..., :n] + s.inputs[0][..., n:]) / np.sqrt(2.0)

    monkeypatch.setitem(RULES, HalfSplitSum, numpy_rule)
    monkeypatch.setitem(jax_backend.RULES, HalfSplitSum, jax_backend.Rule(jax_rule))
    try:
        yield HalfSplitSum
    finally:
        del LAYER_TYPES[HalfSplitSum.__name__]


def toy_net(layer_cls: type[Layer], act: str, depth: int = 6, width: int = 32):
    blocks = []
    for i in range(depth):
        blocks += [Dense(2 * width, name=f"dense{i}"), layer_cls(name=f"half{i}"),
                   Nonlinearity(act, name=f"act{i}")]
    return network(Serial(*blocks, Dense(3, name="readout")), (10,), name="toy")


def test_toy_activation_maps_match_quadrature(toy_activation: str) -> None:
    """Q by mpmath quadrature at 30 digits; C by a 160-point Gauss-Hermite product rule (its
    error, ~1e-9 here, comes from the poles at x = +-i/sqrt(alpha))."""
    act = activation(toy_activation)

    def q_exact(q: float) -> mp.mpf:
        s, a = mp.sqrt(q), mp.mpf(ALPHA)
        return mp.quad(lambda z: (s * z) ** 2 / (1 + a * (s * z) ** 2)
                       * mp.exp(-z * z / 2) / mp.sqrt(2 * mp.pi), [-mp.inf, -2, 0, 2, mp.inf])

    with mp.workdps(30):
        for q in (0.5, 1.0, 2.0):
            exact = q_exact(q)
            assert float(qmap(act, q)) == pytest.approx(float(exact), rel=1e-13)
    z, w = hermegauss(160)
    w = w / w.sum()
    c = 0.6  # C(c) = E[phi(u) phi(v)] / Q(1), u = z1, v = c z1 + sqrt(1 - c^2) z2
    u, v = z[:, None], c * z[:, None] + np.sqrt(1 - c * c) * z[None, :]
    expected = (w[:, None] * w[None, :] * isru(u) * isru(v)).sum() / (w @ isru(z) ** 2)
    assert float(cmap(act, c)) == pytest.approx(float(expected), rel=1e-8)
    u = np.linspace(-4, 4, 17)
    assert np.allclose(act(u), isru(u), rtol=1e-14, atol=0)


def test_toy_layer_and_activation_solve_export_train(toy_layer: type[Layer], toy_activation: str,
                                                     tmp_path) -> None:
    net = toy_net(toy_layer, toy_activation)
    assert net.max_slope(1.2) == pytest.approx(1.2**6)   # kernel map: the layer is transparent
    sol = shape(net, "dks", zeta=1.5)
    t = sol.transforms[toy_activation]
    phi = lambda u: t.output_scale * (isru(t.input_scale * u + t.input_shift)  # noqa: E731
                                      + t.output_shift)
    z, w = hermegauss(120)
    w = w / w.sum()
    assert float(w @ phi(z) ** 2) == pytest.approx(1.0, abs=1e-9)   # Q(1) = 1
    assert float(w @ phi(z)) == pytest.approx(0.0, abs=1e-9)        # C(0) = 0

    # export: the generated NumPy module applies the same transformed activation
    path = tmp_path / "toy_constants.py"
    path.write_text(export(sol.to_document(), "numpy"))
    spec = importlib.util.spec_from_file_location("toy_constants", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    u = np.linspace(-3, 3, 13)
    assert np.allclose(module.activation_fn(toy_activation)(u), phi(u), rtol=1e-13, atol=1e-15)

    # finite width: the NumPy rule's pullback agrees with finite differences
    rng = np.random.default_rng(0)
    params = init_params(net, rng, "lecun")
    acts = net.transformed_activations(sol.transforms)
    x = rng.standard_normal((4, 10))
    g = rng.standard_normal((4, 3))
    fwd = forward(net, params, x, acts)
    grads, _ = backward(fwd, g, params)
    eps = 1e-6
    w0 = params[1][0]
    i, j = 3, 5
    w0[i, j] += eps
    up = float(np.sum(g * forward(net, params, x, acts).result))
    w0[i, j] -= 2 * eps
    down = float(np.sum(g * forward(net, params, x, acts).result))
    w0[i, j] += eps
    assert grads[1][0][i, j] == pytest.approx((up - down) / (2 * eps), rel=1e-6)

    # training: both backends learn, and agree on the first loss
    data = teacher(n_train=256, n_test=64, dim=10, n_classes=3)
    runs = {}
    for backend in ["numpy"] + (["jax"] if importlib.util.find_spec("jax") else []):
        runs[backend] = train(net, solution=sol, data=data, steps=40, batch_size=32,
                              log_every=10, backend=backend, progress=False)
        first, last = runs[backend].history[0]["loss"], runs[backend].history[-1]["loss"]
        assert runs[backend].status == "completed" and last < first, (backend, first, last)
    if "jax" in runs:
        assert runs["jax"].history[0]["loss"] == pytest.approx(runs["numpy"].history[0]["loss"],
                                                               rel=1e-9)


def test_every_layer_type_has_a_rule_in_every_backend() -> None:
    """What recipe 1 asks for holds for the built-in layers (refused layers need none)."""
    layers = {cls for cls in LAYER_TYPES.values()
              if not issubclass(cls, Unsupported) and cls.role != "input"}
    assert layers - set(RULES) == set()
    jax_backend = pytest.importorskip("kernelshape.train.jax_backend")
    assert layers - set(jax_backend.RULES) == set()
