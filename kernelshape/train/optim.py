"""Optimizers as pure (init, update) pairs on lists of (W, b) pairs, optax style.

`update(grads, state, params, curvature)` returns `(updates, new_state)`; the caller applies
`params + updates`. Nothing is mutated, so a state is a plain value that checkpoints exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

Pairs = list[tuple[np.ndarray, np.ndarray]]
# per Dense layer: (layer input a of shape (B, fan_in), output grad s of shape (B, fan_out)) with
# s the gradient of the *mean* loss under labels sampled from the model (K-FAC's true Fisher).
Curvature = list[tuple[np.ndarray, np.ndarray]]


class Optimizer(NamedTuple):
    """`curvature_every > 0` asks the trainer for `Curvature` statistics every that many steps."""

    name: str
    init: Callable[[Pairs], Any]
    update: Callable[[Pairs, Any, Pairs, Curvature | None], tuple[Pairs, Any]]
    curvature_every: int = 0


def _zeros(params: Pairs) -> Pairs:
    return _map(np.zeros_like, params)


def _map(f: Callable[..., np.ndarray], *trees: Pairs) -> Pairs:
    """Apply f leafwise across lists of (W, b) pairs."""
    return [tuple(f(*leaves) for leaves in zip(*pairs, strict=True))  # type: ignore[misc]
            for pairs in zip(*trees, strict=True)]


def apply_updates(params: Pairs, updates: Pairs) -> Pairs:
    return _map(lambda p, u: p + u, params, updates)


# --------------------------------------------------------------------------- SGD

class SGDState(NamedTuple):
    velocity: Pairs


def sgd(lr: float, momentum: float = 0.0, nesterov: bool = False) -> Optimizer:
    """v <- mu v + g;  update = -lr (g + mu v) with Nesterov, else -lr v."""

    def init(params: Pairs) -> SGDState:
        return SGDState(_zeros(params))

    def update(grads: Pairs, state: SGDState, params: Pairs,
               curvature: Curvature | None = None) -> tuple[Pairs, SGDState]:
        vel = _map(lambda v, g: momentum * v + g, state.velocity, grads)
        if nesterov:
            upd = _map(lambda v, g: -lr * (g + momentum * v), vel, grads)
        else:
            upd = _map(lambda v: -lr * v, vel)
        return upd, SGDState(vel)

    return Optimizer("sgd", init, update)


# --------------------------------------------------------------------------- Adam

class AdamState(NamedTuple):
    mu: Pairs
    nu: Pairs
    count: np.ndarray


def adam(lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  update = -lr m_hat / (sqrt(v_hat) + eps)."""

    def init(params: Pairs) -> AdamState:
        return AdamState(_zeros(params), _zeros(params), np.zeros((), np.int64))

    def update(grads: Pairs, state: AdamState, params: Pairs,
               curvature: Curvature | None = None) -> tuple[Pairs, AdamState]:
        t = int(state.count) + 1
        c1, c2 = 1.0 - b1**t, 1.0 - b2**t
        mu = _map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = _map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        upd = _map(lambda m, v: -lr * (m / c1) / (np.sqrt(v / c2) + eps), mu, nu)
        return upd, AdamState(mu, nu, np.asarray(t, np.int64))

    return Optimizer("adam", init, update)


# --------------------------------------------------------------------------- K-FAC

class KFACState(NamedTuple):
    a_factors: list[np.ndarray]
    g_factors: list[np.ndarray]
    a_inverses: list[np.ndarray]
    g_inverses: list[np.ndarray]
    velocity: Pairs
    count: np.ndarray


def kfac(lr: float, damping: float = 1e-2, ema: float = 0.95, inverse_every: int = 5,
         momentum: float = 0.9, norm_constraint: float | None = 1e-3,
         curvature_every: int = 1) -> Optimizer:
    """K-FAC for Dense layers (Martens & Grosse 2015), block-diagonal over layers.

    With a_h = [a, 1] and s the per-example output gradient under sampled labels:
    A = E[a_h a_h^T], G = E[s s^T] (EMAs with decay `ema`), inverted every `inverse_every`
    steps with factored Tikhonov damping pi = sqrt((tr A / dim A) / (tr G / dim G)):
    A_inv = (A + pi sqrt(damping) I)^-1, G_inv = (G + sqrt(damping) / pi I)^-1.
    Direction P = A_inv [dW; db] G_inv; v <- momentum v + P; update = -eta v with
    eta = min(lr, sqrt(norm_constraint / sum_l v_l^T (A_l kron G_l) v_l)): the KL-style norm
    constraint on the step's quadratic model under the (undamped) K-FAC Fisher. Without
    momentum this is sum <P, grad> up to damping; with momentum it stays positive where
    <v, grad> may not (a rule on <v, grad> let occasional ~10x steps through).
    """

    def init(params: Pairs) -> KFACState:
        dt = params[0][0].dtype
        a = [np.eye(w.shape[0] + 1, dtype=dt) for w, _ in params]
        g = [np.eye(w.shape[1], dtype=dt) for w, _ in params]
        return KFACState(a, g, [x.copy() for x in a], [x.copy() for x in g], _zeros(params),
                         np.zeros((), np.int64))

    def update(grads: Pairs, state: KFACState, params: Pairs,
               curvature: Curvature | None = None) -> tuple[Pairs, KFACState]:
        t = int(state.count)
        a_f, g_f = list(state.a_factors), list(state.g_factors)
        if curvature is not None:
            decay = ema if t > 0 else 0.0       # the first statistics replace the identity
            for i, (a, s) in enumerate(curvature):
                n = a.shape[0]
                a_h = np.concatenate([a, np.ones((n, 1), a.dtype)], axis=1)
                a_f[i] = decay * a_f[i] + (1 - decay) * (a_h.T @ a_h) / n
                g_f[i] = decay * g_f[i] + (1 - decay) * (s.T @ s) * n   # s = per-example grad / n
        elif t == 0:
            raise ValueError("kfac needs curvature statistics on its first step")
        a_inv, g_inv = list(state.a_inverses), list(state.g_inverses)
        if t % inverse_every == 0:
            for i, (a, g) in enumerate(zip(a_f, g_f, strict=True)):
                pi = np.sqrt((np.trace(a) / a.shape[0]) / max(np.trace(g) / g.shape[0], 1e-30))
                root = np.sqrt(damping)
                a_inv[i] = np.linalg.inv(a + pi * root * np.eye(a.shape[0], dtype=a.dtype))
                g_inv[i] = np.linalg.inv(g + root / pi * np.eye(g.shape[0], dtype=g.dtype))
        vel, quad = [], 0.0
        for i, ((gw, gb), (vw, vb)) in enumerate(zip(grads, state.velocity, strict=True)):
            p = a_inv[i] @ np.concatenate([gw, gb[None, :]], axis=0) @ g_inv[i]
            nw, nb = momentum * vw + p[:-1], momentum * vb + p[-1]
            vel.append((nw, nb))
            v = np.concatenate([nw, nb[None, :]], axis=0)
            quad += float(np.sum((a_f[i] @ v @ g_f[i]) * v))     # v^T (A kron G) v >= 0
        eta = lr
        if norm_constraint is not None and quad > 0:
            eta = min(lr, float(np.sqrt(norm_constraint / quad)))
        upd = [(-eta * vw, -eta * vb) for vw, vb in vel]
        return upd, KFACState(a_f, g_f, a_inv, g_inv, vel, np.asarray(t + 1, np.int64))

    return Optimizer("kfac", init, update, curvature_every)


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {"sgd": sgd, "adam": adam, "kfac": kfac}
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "kfac": 0.1}


def make_optimizer(name: str, lr: float | None = None, **options: Any) -> Optimizer:
    """Optimizer by name ("sgd", "adam", "kfac"); lr defaults to DEFAULT_LR[name]."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](DEFAULT_LR[name] if lr is None else lr, **options)


# --------------------------------------------------------------------------- state <-> arrays

def flatten_state(tree: Any, prefix: str = "s") -> dict[str, np.ndarray]:
    """Leaves of nested tuples/lists/NamedTuples of arrays as {path: array} (for npz)."""
    if isinstance(tree, tuple | list):
        out: dict[str, np.ndarray] = {}
        for i, sub in enumerate(tree):
            out.update(flatten_state(sub, f"{prefix}.{i}"))
        return out
    return {prefix: np.asarray(tree)}


def unflatten_state(template: Any, arrays: dict[str, np.ndarray], prefix: str = "s") -> Any:
    """Inverse of `flatten_state`, shaped like `template` (shapes and dtypes are checked)."""
    if isinstance(template, tuple | list):
        items = [unflatten_state(sub, arrays, f"{prefix}.{i}") for i, sub in enumerate(template)]
        if hasattr(template, "_fields"):
            return type(template)(*items)
        return type(template)(items)
    arr = arrays[prefix]
    ref = np.asarray(template)
    if arr.shape != ref.shape or arr.dtype != ref.dtype:
        raise ValueError(f"checkpoint entry {prefix} has shape {arr.shape} {arr.dtype}, "
                         f"expected {ref.shape} {ref.dtype}")
    return arr
