"""JAX optimizers: optax SGD / Adam with schedules, and K-FAC (kfac-jax, or our own dense K-FAC).

`kfac` uses the `kfac-jax` package when it imports (kfac-jax 0.0.8 needs jax <= 0.9.1). Where it
does not (e.g. Python 3.12 with jax 0.11, where kfac-jax 0.0.8 fails on `jax.core.Effects`),
`kfac_implementation="auto"` falls back to `kfac_update` below: the NumPy backend's K-FAC for
Dense layers (Kronecker factors with sampled labels, factored Tikhonov damping, periodic
inverses, momentum, norm constraint) written in jax.numpy and jit-compiled.
"""

from __future__ import annotations

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


# --------------------------------------------------------------------------- own dense K-FAC

class KFACState(NamedTuple):
    a_factors: list[Array]
    g_factors: list[Array]
    a_inverses: list[Array]
    g_inverses: list[Array]
    velocity: list[tuple[Array, Array]]
    count: Array


def kfac_init(params: list[tuple[Array, Array]]) -> KFACState:
    """Identity factors and inverses, zero velocity (as `optim.kfac`)."""
    dt = params[0][0].dtype
    a = [jnp.eye(w.shape[0] + 1, dtype=dt) for w, _ in params]
    g = [jnp.eye(w.shape[1], dtype=dt) for w, _ in params]
    vel = [(jnp.zeros_like(w), jnp.zeros_like(b)) for w, b in params]
    return KFACState(a, g, list(a), list(g), vel, jnp.zeros((), jnp.int32))


def kfac_update(grads: list[tuple[Array, Array]], state: KFACState,
                curvature: list[tuple[Array, Array]], *, lr: float, damping: float = 1e-2,
                ema: float = 0.95, inverse_every: int = 5, momentum: float = 0.9,
                norm_constraint: float | None = 1e-3, curvature_every: int = 1
                ) -> tuple[list[tuple[Array, Array]], KFACState]:
    """One K-FAC step for Dense layers, the same algorithm as `kernelshape.train.optim.kfac`.

    curvature: per layer (input a (B, fan_in), s (B, fan_out)) with s the gradient of the mean
    loss under labels sampled from the model. Jit-compatible (inverses under `lax.cond`).
    """
    t = state.count
    decay = jnp.where(t > 0, ema, 0.0)
    take = (t % curvature_every) == 0
    a_f, g_f = [], []
    for (a, s), a_old, g_old in zip(curvature, state.a_factors, state.g_factors, strict=True):
        n = a.shape[0]
        a_h = jnp.concatenate([a, jnp.ones((n, 1), a.dtype)], axis=1)
        a_new = decay * a_old + (1 - decay) * (a_h.T @ a_h) / n
        g_new = decay * g_old + (1 - decay) * (s.T @ s) * n
        a_f.append(jnp.where(take, a_new, a_old))
        g_f.append(jnp.where(take, g_new, g_old))

    def invert(factors: tuple[list[Array], list[Array]]) -> tuple[list[Array], list[Array]]:
        a_inv, g_inv = [], []
        root = jnp.sqrt(damping)
        for a, g in zip(*factors, strict=True):
            pi = jnp.sqrt((jnp.trace(a) / a.shape[0])
                          / jnp.maximum(jnp.trace(g) / g.shape[0], 1e-30))
            a_inv.append(jnp.linalg.inv(a + pi * root * jnp.eye(a.shape[0], dtype=a.dtype)))
            g_inv.append(jnp.linalg.inv(g + root / pi * jnp.eye(g.shape[0], dtype=g.dtype)))
        return a_inv, g_inv

    a_inv, g_inv = jax.lax.cond(t % inverse_every == 0, invert,
                                lambda _: (list(state.a_inverses), list(state.g_inverses)),
                                (a_f, g_f))
    vel, inner = [], 0.0
    for i, ((gw, gb), (vw, vb)) in enumerate(zip(grads, state.velocity, strict=True)):
        p = a_inv[i] @ jnp.concatenate([gw, gb[None, :]], axis=0) @ g_inv[i]
        nw, nb = momentum * vw + p[:-1], momentum * vb + p[-1]
        vel.append((nw, nb))
        inner = inner + jnp.sum(nw * gw) + jnp.sum(nb * gb)
    eta = jnp.asarray(lr, grads[0][0].dtype)
    if norm_constraint is not None:
        safe = jnp.where(inner > 0, inner, 1.0)
        eta = jnp.where(inner > 0, jnp.minimum(lr, jnp.sqrt(norm_constraint / safe)), lr)
    upd = [(-eta * vw, -eta * vb) for vw, vb in vel]
    return upd, KFACState(a_f, g_f, list(a_inv), list(g_inv), vel, t + 1)
