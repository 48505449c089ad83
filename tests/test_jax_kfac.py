"""Own jit-compatible K-FAC for mixed parameter lists: conv patches, KFC factors for convolutions
(against NumPy and the exact Fisher where KFC is exact), learning on a small convnet, 1-D pairs
(identity preconditioner), static state shapes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("jax", reason="the own K-FAC needs the optional extra kernelshape[jax]")
pytest.importorskip("optax", reason="the own K-FAC needs the optional extra kernelshape[jax]")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from kernelshape.topology import Conv  # noqa: E402
from kernelshape.topology.apply import conv_patches as layer_patches  # noqa: E402
from kernelshape.train.jax_optim import kfac_init, kfac_update  # noqa: E402

jax.config.update("jax_enable_x64", True)   # exactness checks in float64 (as test_train_jax)
DAMPING = 1e-2


def conv_patches(x: jnp.ndarray, kernel: tuple[int, ...], stride: tuple[int, ...] | int
                 ) -> jnp.ndarray:
    """The Conv layer's 'SAME' patches of x (jax.numpy), for a kernel and stride."""
    return layer_patches(x, Conv(1, tuple(kernel), stride), jnp)


def _conv(x: jnp.ndarray, w: jnp.ndarray, stride: tuple[int, ...]) -> jnp.ndarray:
    spatial = "DHW"[-(w.ndim - 2):]
    lhs = "N" + spatial + "C"
    return jax.lax.conv_general_dilated(x, w, stride, "SAME",
                                        dimension_numbers=(lhs, spatial + "IO", lhs))


@pytest.mark.parametrize("size, kernel, stride", [
    ((7,), (3,), (1,)), ((7,), (3,), (2,)), ((8,), (5,), (2,)), ((6,), (1,), (2,)),
    ((5, 6), (3, 3), (1, 1)), ((5, 6), (3, 5), (2, 1)), ((7, 4), (3, 1), (2, 2)),
    ((3, 4, 5), (3, 1, 3), (1, 2, 2)),
])
def test_patches_match_convolution(size: tuple[int, ...], kernel: tuple[int, ...],
                                   stride: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((3, *size, 2)))
    w = jnp.asarray(rng.standard_normal((*kernel, 2, 4)))
    y = _conv(x, w, stride)
    p = conv_patches(x, kernel, stride)
    t = int(np.prod([-(-n // s) for n, s in zip(size, stride, strict=True)]))
    assert p.shape == (3, t, int(np.prod(kernel)) * 2)
    np.testing.assert_allclose(p @ w.reshape(-1, 4), y.reshape(3, t, 4), rtol=1e-12, atol=1e-12)


def _numpy_patches(x: np.ndarray, k: int) -> np.ndarray:
    """1-D, stride 1, 'SAME' (odd k): patches[n, t] = x[n, t - k//2 : t + k//2 + 1] (zeros
    outside), flattened (tap, channel)."""
    b, length, c = x.shape
    xp = np.zeros((b, length + k - 1, c))
    xp[:, k // 2:k // 2 + length] = x
    return np.stack([xp[:, t:t + k].reshape(b, -1) for t in range(length)], axis=1)


def _one_conv_gap(x: np.ndarray, w: np.ndarray, b: np.ndarray, seed: int
                  ) -> tuple[list, list, np.ndarray, np.ndarray]:
    """One 1-D conv whose global-average-pooled output is the logits. Returns JAX grads (true
    labels y = 0) and curvature (patches, s) as the trainer gathers them (VJP through a zero
    perturbation of the conv output with model-sampled labels), and the probabilities and
    sampled labels for the NumPy reference."""
    x, w, b = jnp.asarray(x), jnp.asarray(w), jnp.asarray(b)
    n = x.shape[0]

    def logits(p: tuple, e: jnp.ndarray) -> jnp.ndarray:
        return jnp.mean(_conv(x, p[0], (1,)) + p[1] + e, axis=1)

    e0 = jnp.zeros((*x.shape[:2], w.shape[-1]), x.dtype)
    out, vjp = jax.vjp(logits, (w, b), e0)
    probs = jax.nn.softmax(out)
    k = out.shape[1]
    (gw, gb), _ = vjp((probs - jax.nn.one_hot(jnp.zeros(n, int), k)) / n)
    sampled = jax.random.categorical(jax.random.PRNGKey(seed), out)
    _, s = vjp((probs - jax.nn.one_hot(sampled, k)) / n)
    curvature = [(conv_patches(x, w.shape[:-2], 1), s.reshape(n, -1, k))]
    return [(gw, gb)], curvature, np.asarray(probs), np.asarray(sampled)


def test_kfc_factors_match_numpy() -> None:
    rng = np.random.default_rng(1)
    n, length, kernel, cin, cout = 4, 5, 3, 2, 3
    x = rng.standard_normal((n, length, cin))
    w, b = rng.standard_normal((kernel, cin, cout)), rng.standard_normal(cout)
    grads, curvature, probs, sampled = _one_conv_gap(x, w, b, seed=0)

    a = _numpy_patches(x, kernel)                                  # (n, T, k cin)
    np.testing.assert_allclose(curvature[0][0], a, rtol=0, atol=0)
    s = (probs - np.eye(cout)[sampled])[:, None, :] / (n * length) * np.ones((1, length, 1))
    np.testing.assert_allclose(curvature[0][1], s, rtol=1e-12, atol=1e-15)
    a_h = np.concatenate([a, np.ones((n, length, 1))], axis=2).reshape(-1, kernel * cin + 1)
    big_a = a_h.T @ a_h / (n * length)
    big_g = n * np.einsum("nti,ntj->ij", s, s)
    # the weight gradient is sum_{n,t} patch s^T (true labels): patches are ordered like W
    g_true = (probs - np.eye(cout)[0])[:, None, :] / (n * length) * np.ones((1, length, 1))
    np.testing.assert_allclose(grads[0][0].reshape(-1, cout),
                               np.einsum("nti,ntj->ij", a, g_true), rtol=1e-10, atol=1e-14)

    upd, state = kfac_update(grads, kfac_init([(w, b)]), curvature, lr=1.0, damping=DAMPING,
                             momentum=0.0, norm_constraint=None)
    np.testing.assert_allclose(state.a_factors[0], big_a, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(state.g_factors[0], big_g, rtol=1e-12, atol=1e-18)
    # direction = ((A + pi r I) kron (G + r / pi I))^-1 vec([gW; gb]) (row-major vec)
    pi = np.sqrt(np.trace(big_a) / big_a.shape[0] / (np.trace(big_g) / cout))
    r = np.sqrt(DAMPING)
    kron = np.kron(big_a + pi * r * np.eye(len(big_a)), big_g + r / pi * np.eye(cout))
    rhs = np.concatenate([np.asarray(grads[0][0]).reshape(-1, cout), grads[0][1][None]])
    p = np.linalg.solve(kron, rhs.ravel()).reshape(rhs.shape)
    np.testing.assert_allclose(-upd[0][0].reshape(-1, cout), p[:-1], rtol=1e-8)
    np.testing.assert_allclose(-upd[0][1], p[-1], rtol=1e-8)


def test_kfc_is_exact_fisher_at_one_location() -> None:
    """T = 1 (spatial size 1) and one input shared by the batch: no spatial sum and
    independence of activations and derivatives hold exactly, so A kron G must be the (sampled
    label) Fisher of the [W; b] block, (1/B) sum_n vec(g_n) vec(g_n)^T, from per-example
    gradients. Checks the B and T scalings and the homogeneous coordinate."""
    rng = np.random.default_rng(2)
    n, kernel, cin, cout = 6, 3, 2, 3
    x = np.repeat(rng.standard_normal((1, 1, cin)), n, axis=0)
    w, b = rng.standard_normal((kernel, cin, cout)), rng.standard_normal(cout)
    grads, curvature, _, sampled = _one_conv_gap(x, w, b, seed=3)
    _, state = kfac_update(grads, kfac_init([(w, b)]), curvature, lr=1.0)

    def nll(wb: tuple, xi: jnp.ndarray, yi: jnp.ndarray) -> jnp.ndarray:
        z = jnp.mean(_conv(xi[None], wb[0], (1,)) + wb[1], axis=1)[0]
        return -jax.nn.log_softmax(z)[yi]

    gw, gb = jax.vmap(jax.grad(nll), (None, 0, 0))((jnp.asarray(w), jnp.asarray(b)),
                                                   jnp.asarray(x), jnp.asarray(sampled))
    g = np.concatenate([np.asarray(gw).reshape(n, -1, cout), np.asarray(gb)[:, None]], axis=1)
    g = g.reshape(n, -1)
    fisher = g.T @ g / n
    np.testing.assert_allclose(np.kron(state.a_factors[0], state.g_factors[0]), fisher,
                               rtol=1e-10, atol=1e-14)


def test_conv_at_one_location_is_dense_kfac() -> None:
    """A conv on spatial size 1 is a Dense layer on its patches: same factors, same update."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 1, 2))
    w, b = rng.standard_normal((3, 2, 4)), rng.standard_normal(4)
    grads, curvature, _, _ = _one_conv_gap(x, w, b, seed=5)
    upd_c, st_c = kfac_update(grads, kfac_init([(w, b)]), curvature, lr=0.5)
    dense = [(grads[0][0].reshape(6, 4), grads[0][1])]
    dense_curv = [(curvature[0][0][:, 0], curvature[0][1][:, 0])]
    upd_d, st_d = kfac_update(dense, kfac_init([(w.reshape(6, 4), b)]), dense_curv, lr=0.5)
    for c, d in zip(jax.tree_util.tree_leaves((upd_c, st_c)),
                    jax.tree_util.tree_leaves((upd_d, st_d)), strict=True):
        np.testing.assert_allclose(np.asarray(c).reshape(np.shape(d)), d, rtol=1e-12)


# --------------------------------------------------------------------------- a small convnet

CONVS = ((3, 1, 8, 1), (3, 8, 8, 2))     # (kernel, cin, cout, stride)


def _waves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Length-16 signals, class = frequency (1, 2 or 4 cycles), random phase, noise."""
    y = rng.integers(0, 3, n)
    t = np.arange(16) / 16
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    x = np.sin(2 * np.pi * np.array([1, 2, 4])[y][:, None] * t + phase)
    return (x + 0.3 * rng.standard_normal(x.shape))[..., None], y


def _net_params(rng: np.random.Generator, layernorm: bool) -> list:
    params = [(rng.standard_normal((k, ci, co)) / np.sqrt(k * ci), np.zeros(co))
              for k, ci, co, _ in CONVS]
    if layernorm:
        params.append((np.ones(8), np.zeros(8)))
    params.append((rng.standard_normal((8, 3)) / np.sqrt(8), np.zeros(3)))
    return [(jnp.asarray(w), jnp.asarray(b)) for w, b in params]


def _forward(params: list, x: jnp.ndarray, perturb: list) -> tuple[jnp.ndarray, list]:
    """conv-tanh, conv(stride 2)-tanh, global average pool, [LayerNorm,] dense. Returns logits
    and the curvature inputs: patches per conv, the pooled features for the dense layer, None
    for the LayerNorm pair."""
    h, inputs = x, []
    for (w, b), e, (k, _, _, stride) in zip(params, perturb, CONVS, strict=False):
        inputs.append(conv_patches(h, (k,), stride))
        h = jnp.tanh(_conv(h, w, (stride,)) + b + e)
    h = jnp.mean(h, axis=1)
    if len(params) == len(CONVS) + 2:
        scale, offset = params[len(CONVS)]
        mu, var = jnp.mean(h, -1, keepdims=True), jnp.var(h, -1, keepdims=True)
        h = (h - mu) / jnp.sqrt(var + 1e-5) * scale + offset
        inputs.append(None)
    inputs.append(h)
    w, b = params[-1]
    return h @ w + b + perturb[-1], inputs


def _step(params: list, state: object, x: jnp.ndarray, y: jnp.ndarray, key: jnp.ndarray,
          **options: float) -> tuple:
    n = x.shape[0]
    zeros, length = [], x.shape[1]
    for _, _, cout, stride in CONVS:
        length = -(-length // stride)
        zeros.append(jnp.zeros((n, length, cout), x.dtype))
    zeros.append(jnp.zeros((n, 3), x.dtype))
    logits, vjp, inputs = jax.vjp(lambda p, e: _forward(p, x, e), params, zeros, has_aux=True)
    probs = jax.nn.softmax(logits)
    loss = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(n), y])
    grads, _ = vjp((probs - jax.nn.one_hot(y, 3)) / n)
    _, s = vjp((probs - jax.nn.one_hot(jax.random.categorical(key, logits), 3)) / n)
    out_grads = iter(s)                        # one per linear layer; LayerNorm gets None
    curvature = [None if a is None else (a, next(out_grads).reshape(*a.shape[:-1], -1))
                 for a in inputs]
    upd, state = kfac_update(grads, state, curvature, **options)
    new = [(w + uw, b + ub) for (w, b), (uw, ub) in zip(params, upd, strict=True)]
    return new, state, loss, grads, upd


OPTIONS = dict(lr=0.1, damping=1e-2, ema=0.95, inverse_every=5, momentum=0.9,
               norm_constraint=1e-3, curvature_every=1)          # optim.kfac's defaults


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_conv_kfac_learns(momentum: float, seed: int = 6) -> None:
    """The default norm constraint bounds v^T F v of the momentum velocity, so momentum 0.9 is
    steady (a rule on <v, g>, unconstrained when <v, g> <= 0, let 6 of 10 seeds jump out of
    their basin after ~25 steps here)."""
    rng = np.random.default_rng(seed)
    x_all, y_all = _waves(512, rng)
    params = _net_params(rng, layernorm=False)
    state = kfac_init(params)
    options = dict(OPTIONS, lr=1.0, momentum=momentum)
    step = jax.jit(lambda p, st, x, y, k: _step(p, st, x, y, k, **options)[:3])
    losses = []
    for i in range(30):
        idx = rng.choice(512, 64, replace=False)
        params, state, loss = step(params, state, jnp.asarray(x_all[idx]),
                                   jnp.asarray(y_all[idx]), jax.random.PRNGKey(i))
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses


def test_mixed_params_with_layernorm_pair() -> None:
    """Conv, LayerNorm (scale, offset) and Dense pairs in one jitted step: fixed state shapes
    (one compilation), the 1-D pair gets plain momentum on its gradient with the shared eta."""
    rng = np.random.default_rng(7)
    x_all, y_all = _waves(128, rng)
    params = _net_params(rng, layernorm=True)
    state = kfac_init(params)
    ln = len(CONVS)
    assert state.a_factors[ln].shape == (0, 0) and state.g_inverses[ln].shape == (0, 0)
    assert state.a_factors[0].shape == (3 * 1 + 1, 3 * 1 + 1)
    shapes = [(a.shape, a.dtype) for a in jax.tree_util.tree_leaves(state)]
    treedef = jax.tree_util.tree_structure(state)
    step = jax.jit(lambda p, st, x, y, k: _step(p, st, x, y, k, **OPTIONS))
    for i in range(7):                                   # crosses an inverse_every boundary
        idx = rng.choice(128, 32, replace=False)
        params, new_state, loss, grads, upd = step(params, state, jnp.asarray(x_all[idx]),
                                                   jnp.asarray(y_all[idx]),
                                                   jax.random.PRNGKey(i))
        assert np.isfinite(float(loss))
        assert [(a.shape, a.dtype) for a in jax.tree_util.tree_leaves(new_state)] == shapes
        assert jax.tree_util.tree_structure(new_state) == treedef
        old_v = state.velocity[ln]
        for j in range(2):
            expect = OPTIONS["momentum"] * old_v[j] + grads[ln][j]
            np.testing.assert_allclose(new_state.velocity[ln][j], expect, rtol=1e-12)
        eta = -upd[0][1][0] / new_state.velocity[0][1][0]
        for u, v in zip(jax.tree_util.tree_leaves(upd),
                        jax.tree_util.tree_leaves(new_state.velocity), strict=True):
            np.testing.assert_allclose(u, -eta * v, rtol=1e-10, atol=1e-15)
        state = new_state
    assert int(state.count) == 7
    assert step._cache_size() == 1


def test_patch_order_is_row_major_over_taps() -> None:
    """Feature index = tap index * Cin + channel, taps row-major over the kernel axes."""
    x = jnp.arange(1 * 3 * 3 * 2, dtype=jnp.float64).reshape(1, 3, 3, 2)
    p = np.asarray(conv_patches(x, (3, 3), 1))[0, 4]        # centre location sees all of x
    expected = [float(x[0, i, j, c]) for i, j in itertools.product(range(3), range(3))
                for c in range(2)]
    assert list(p) == expected


def test_dense_matches_numpy_kfac() -> None:
    """Dense pairs: the same steps as the NumPy K-FAC (`optim.kfac`), across inverse updates."""
    from kernelshape.train.optim import kfac

    rng = np.random.default_rng(8)
    shapes = [(5, 7), (7, 3)]
    params = [(rng.standard_normal(s), rng.standard_normal(s[1])) for s in shapes]
    opt = kfac(0.1, inverse_every=3)
    np_state, state = opt.init(params), kfac_init([tuple(map(jnp.asarray, p)) for p in params])
    for _ in range(7):
        grads = [(rng.standard_normal(s), rng.standard_normal(s[1])) for s in shapes]
        curv = [(rng.standard_normal((16, s[0])), rng.standard_normal((16, s[1])) / 16)
                for s in shapes]
        np_upd, np_state = opt.update(grads, np_state, params, curv)
        upd, state = kfac_update(grads, state, curv, lr=0.1, inverse_every=3)
        for a, b in zip(jax.tree_util.tree_leaves(upd), jax.tree_util.tree_leaves(np_upd),
                        strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-15)
