"""JAX optimizers: optax SGD / Adam with schedules, and K-FAC (kfac-jax, or our own K-FAC).

`kfac` uses the `kfac-jax` package when it imports (kfac-jax 0.0.8 needs jax <= 0.9.1). Where it
does not (e.g. Python 3.12 with jax 0.11, where kfac-jax 0.0.8 fails on `jax.core.Effects`),
`kfac_implementation="auto"` falls back to `kfac_update` below: the NumPy backend's K-FAC
(Kronecker factors with sampled labels, factored Tikhonov damping, periodic inverses, momentum,
norm constraint) written in jax.numpy and jit-compiled, for mixed parameter lists: Dense
layers (K-FAC, Martens & Grosse 2015), convolutions (KFC, Grosse & Martens 2016, on
`kernelshape.topology.apply.conv_patches`) and 1-D pairs such as LayerNorm (scale, offset),
which are not preconditioned.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

Array = Any
SCHEDULES = ("constant", "cosine", "warmup_cosine", "linear")


def schedule(lr: float, name: str = "constant", decay_steps: int = 1000,
             warmup_steps: int = 0, end_factor: float = 0.0) -> optax.Schedule:
    """Learning-rate schedule: constant, cosine (to end_factor*lr over decay_steps),
    warmup_cosine (linear warmup from 0 over warmup_steps, then cosine), linear (to end)."""
    if name == "constant":
        return optax.constant_schedule(lr)
    if name == "cosine":
        return optax.cosine_decay_schedule(lr, max(decay_steps, 1), alpha=end_factor)
    if name == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, max(decay_steps, 1),
                                                  end_value=end_factor * lr)
    if name == "linear":
        return optax.linear_schedule(lr, end_factor * lr, max(decay_steps, 1))
    raise ValueError(f"unknown schedule {name!r}; choose one of {list(SCHEDULES)}")


def make_optax(name: str, lr: float, *, schedule_name: str = "constant", decay_steps: int = 1000,
               warmup_steps: int = 0, end_factor: float = 0.0, momentum: float = 0.0,
               nesterov: bool = False, b1: float = 0.9, b2: float = 0.999,
               eps: float = 1e-8) -> optax.GradientTransformation:
    """optax SGD (momentum / Nesterov, same update as `optim.sgd`) or Adam (as `optim.adam`)."""
    sched = schedule(lr, schedule_name, decay_steps, warmup_steps, end_factor)
    if name == "sgd":
        return optax.sgd(sched, momentum=momentum or None, nesterov=nesterov)
    if name == "adam":
        return optax.adam(sched, b1=b1, b2=b2, eps=eps)
    raise ValueError(f"unknown optax optimizer {name!r}; use sgd or adam")


KFAC_JAX_MAX_JAX = (0, 9, 1)   # kfac-jax 0.0.8's first step fails on newer jax


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:3] if p.isdigit())


def kfac_jax_available() -> tuple[bool, str]:
    """(whether kfac-jax imports here *and* this jax is one it is known to run on, why not).

    kfac-jax 0.0.8 imports on jax 0.10 but its first step fails (`too many values to
    unpack`); on jax 0.11 it does not import (`jax.core.Effects`).
    """
    if _version(jax.__version__) > KFAC_JAX_MAX_JAX:
        return False, (f"jax {jax.__version__} is newer than "
                       f"{'.'.join(map(str, KFAC_JAX_MAX_JAX))}, the newest jax kfac-jax 0.0.8 "
                       "runs on")
    try:
        import kfac_jax  # noqa: F401
    except Exception as e:  # ImportError, or AttributeError on jax versions it does not support
        return False, f"{type(e).__name__}: {e}"
    return True, ""


# --------------------------------------------------------------------------- own K-FAC / KFC

Pair = tuple[Array, Array]


class KFACState(NamedTuple):
    """Per parameter pair: Kronecker factors and their damped inverses ((0, 0) placeholders for
    1-D pairs, which are not preconditioned), momentum velocity, and the step count."""

    a_factors: list[Array]
    g_factors: list[Array]
    a_inverses: list[Array]
    g_inverses: list[Array]
    velocity: list[Pair]
    count: Array


def _preconditioned(w: Array) -> bool:
    """Dense (fan_in, fan_out) and Conv (*kernel, Cin, Cout) weights get Kronecker factors."""
    return w.ndim >= 2


def kfac_init(params: list[Pair]) -> KFACState:
    """Identity factors and inverses, zero velocity (as `optim.kfac`). A Dense / Conv weight W
    with fan_in = prod(W.shape[:-1]) gets A of size fan_in + 1 (bias row) and G of size
    W.shape[-1]; a 1-D pair (e.g. LayerNorm scale, offset) gets (0, 0) placeholders."""
    dt = params[0][0].dtype
    a, g = [], []
    for w, _ in params:
        fan_in, fan_out = (math.prod(w.shape[:-1]) + 1, w.shape[-1]) if _preconditioned(w) \
            else (0, 0)
        a.append(jnp.eye(fan_in, dtype=dt))
        g.append(jnp.eye(fan_out, dtype=dt))
    vel = [(jnp.zeros_like(w), jnp.zeros_like(b)) for w, b in params]
    return KFACState(a, g, list(a), list(g), vel, jnp.zeros((), jnp.int32))


def _ema_factors(a: Array, s: Array, a_old: Array, g_old: Array, decay: Array
                 ) -> tuple[Array, Array]:
    """EMA of the statistics of inputs a (B, [T,] d_in) and output gradients of the mean loss
    s (B, [T,] d_out): with a_h = [a, 1] over the B*T rows, A = sum a_h a_h^T / (B T) and
    G = B sum s s^T (per-example gradients are B s; KFC's spatially uncorrelated derivatives;
    Dense is T = 1)."""
    batch = a.shape[0]
    a, s = a.reshape(-1, a.shape[-1]), s.reshape(-1, s.shape[-1])
    a_h = jnp.concatenate([a, jnp.ones((a.shape[0], 1), a.dtype)], axis=1)
    return (decay * a_old + (1 - decay) * (a_h.T @ a_h) / a.shape[0],
            decay * g_old + (1 - decay) * (s.T @ s) * batch)


def kfac_update(grads: list[Pair], state: KFACState, curvature: list[Pair | None], *,
                lr: float, damping: float = 1e-2, ema: float = 0.95, inverse_every: int = 5,
                momentum: float = 0.9, norm_constraint: float | None = 1e-3,
                curvature_every: int = 1) -> tuple[list[Pair], KFACState]:
    """One K-FAC step (`kernelshape.train.optim.kfac`), with KFC for convolutions.

    curvature[i] for params[i]: Dense (a (B, fan_in), s (B, fan_out)); Conv
    (`conv_patches` (B, T, k Cin), s (B, T, Cout)); s the output gradients of the mean loss under
    labels sampled from the model; None for 1-D pairs. Factors: `_ema_factors`, inverted
    every `inverse_every` steps with factored Tikhonov damping
    pi = sqrt((tr A / dim A) / (tr G / dim G)): (A + pi sqrt(damping) I)^-1,
    (G + sqrt(damping) / pi I)^-1. Direction P = A^-1 [gW; gb] G^-1 (gW as (fan_in, fan_out));
    1-D pairs: P = gradient. v <- momentum v + P; update -eta v,
    eta = min(lr, sqrt(norm_constraint / sum_l v_l^T (A_l kron G_l) v_l)) with the undamped
    factors (identity for 1-D pairs), as `optim.kfac`.
    Layer kinds come from the static gradient shapes (W.ndim >= 2: Kronecker factors), so the
    step jit-compiles once.
    """
    t = state.count
    decay = jnp.where(t > 0, ema, 0.0)
    take = (t % curvature_every) == 0
    kron = [_preconditioned(gw) for gw, _ in grads]
    a_f, g_f = list(state.a_factors), list(state.g_factors)
    for i, stats in enumerate(curvature):
        if kron[i]:
            a_new, g_new = _ema_factors(*stats, a_f[i], g_f[i], decay)
            a_f[i], g_f[i] = jnp.where(take, a_new, a_f[i]), jnp.where(take, g_new, g_f[i])

    def invert(factors: tuple[list[Array], list[Array]]) -> tuple[list[Array], list[Array]]:
        a_inv, g_inv = [], []
        root = jnp.sqrt(damping)
        for a, g, k in zip(*factors, kron, strict=True):
            if k:
                pi = jnp.sqrt((jnp.trace(a) / a.shape[0])
                              / jnp.maximum(jnp.trace(g) / g.shape[0], 1e-30))
                a = jnp.linalg.inv(a + pi * root * jnp.eye(a.shape[0], dtype=a.dtype))
                g = jnp.linalg.inv(g + root / pi * jnp.eye(g.shape[0], dtype=g.dtype))
            a_inv.append(a)          # 1-D pairs keep their (0, 0) placeholders
            g_inv.append(g)
        return a_inv, g_inv

    a_inv, g_inv = jax.lax.cond(t % inverse_every == 0, invert,
                                lambda _: (list(state.a_inverses), list(state.g_inverses)),
                                (a_f, g_f))
    vel, quad = [], 0.0
    for i, ((gw, gb), (vw, vb)) in enumerate(zip(grads, state.velocity, strict=True)):
        pw, pb = gw, gb
        if kron[i]:
            p = a_inv[i] @ jnp.concatenate([gw.reshape(-1, gw.shape[-1]), gb[None, :]],
                                           axis=0) @ g_inv[i]
            pw, pb = p[:-1].reshape(gw.shape), p[-1]
        nw, nb = momentum * vw + pw, momentum * vb + pb
        vel.append((nw, nb))
        if kron[i]:
            v = jnp.concatenate([nw.reshape(-1, nw.shape[-1]), nb[None, :]], axis=0)
            quad = quad + jnp.sum((a_f[i] @ v @ g_f[i]) * v)
        else:                        # identity preconditioner: Fisher taken as the identity
            quad = quad + jnp.sum(nw * nw) + jnp.sum(nb * nb)
    eta = jnp.asarray(lr, grads[0][0].dtype)
    if norm_constraint is not None:
        safe = jnp.where(quad > 0, quad, 1.0)
        eta = jnp.where(quad > 0, jnp.minimum(lr, jnp.sqrt(norm_constraint / safe)), lr)
    upd = [(-eta * vw, -eta * vb) for vw, vb in vel]
    return upd, KFACState(a_f, g_f, list(a_inv), list(g_inv), vel, t + 1)
