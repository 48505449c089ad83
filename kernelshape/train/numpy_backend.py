"""NumPy backend: initializers, forward pass, manual backprop and softmax cross-entropy.

Parameters are a list of `(W, b)` pairs, one per Dense layer, `W` of shape (fan_in, fan_out),
so a Dense layer computes `y = x W + b` on a batch `x` of shape (B, fan_in).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kernelshape.runtime.numpy import scaled_uniform_orthogonal as suo
from kernelshape.train.plan import Dense, Plan

Params = list[tuple[np.ndarray, np.ndarray]]

RELU_LIKE = ("relu", "leaky_relu")


class Elementwise(Protocol):
    """What the backend needs from an activation: value and first derivative, vectorized."""

    def __call__(self, x: np.ndarray) -> np.ndarray: ...

    def derivative(self, x: np.ndarray, order: int = 1) -> np.ndarray: ...


@dataclass
class Model:
    """A plan bound to sizes and resolved activations: `acts[name]` for every Act layer."""

    plan: Plan
    in_dim: int
    n_classes: int
    acts: dict[str, Elementwise]
    dtype: np.dtype

    def dense_shapes(self) -> list[tuple[int, int]]:
        """(fan_in, fan_out) of every Dense layer, in order."""
        shapes, fan_in = [], self.in_dim
        for layer in self.plan.layers:
            if isinstance(layer, Dense):
                fan_out = self.n_classes if layer.units is None else layer.units
                shapes.append((fan_in, fan_out))
                fan_in = fan_out
        if fan_in != self.n_classes:
            raise ValueError(f"the network ends with {fan_in} outputs, the data has "
                             f"{self.n_classes} classes (give the readout units=None)")
        return shapes

    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.plan.layers]


# --------------------------------------------------------------------------- initializers

def scaled_uniform_orthogonal(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """SUO init (the numpy runtime's): Haar orthogonal times max(sqrt(fan_out / fan_in), 1)."""
    return suo(rng, (fan_in, fan_out))


def looks_linear(rng: np.random.Generator, shapes: Sequence[tuple[int, int]]) -> Params:
    """Looks-Linear init for ReLU nets (Balduzzi et al. 2017): the net is linear at init.

    Hidden units come in mirrored pairs [z, -z]; first layer W = [U, -U], middle layers
    W = [[U, -U], [-U, U]] (so relu(z) U - relu(-z) U = z U), readout W = [U; -U],
    each U Haar orthogonal scaled as SUO.
    """
    params: Params = []
    last = len(shapes) - 1
    for i, (fan_in, fan_out) in enumerate(shapes):
        if (i > 0 and fan_in % 2) or (i < last and fan_out % 2):
            raise ValueError(f"looks-linear init needs even hidden widths, got {fan_in}x{fan_out}")
        k_in = fan_in if i == 0 else fan_in // 2
        k_out = fan_out if i == last else fan_out // 2
        u = scaled_uniform_orthogonal(rng, k_in, k_out)
        w = u if i == last else np.concatenate([u, -u], axis=1)
        if i > 0:
            w = np.concatenate([w, -w], axis=0)
        params.append((w, np.zeros(fan_out)))
    return params


def init_params(model: Model, rng: np.random.Generator, scheme: str,
                weight_variance: float = 1.0, bias_variance: float = 0.0) -> Params:
    """Initial (W, b) for every Dense layer.

    scheme: "suo" (zero bias), "lecun" (W ~ N(0, 1/fan_in)), "he" (N(0, 2/fan_in)),
    "eoc" (W ~ N(0, weight_variance/fan_in), b ~ N(0, bias_variance)), "ll" (looks-linear).
    """
    shapes = model.dense_shapes()
    if scheme == "ll":
        params = looks_linear(rng, shapes)
    else:
        params = []
        for fan_in, fan_out in shapes:
            if scheme == "suo":
                w, b = scaled_uniform_orthogonal(rng, fan_in, fan_out), np.zeros(fan_out)
            elif scheme in ("lecun", "he", "eoc"):
                var = {"lecun": 1.0, "he": 2.0, "eoc": weight_variance}[scheme]
                w = rng.standard_normal((fan_in, fan_out)) * np.sqrt(var / fan_in)
                b_var = bias_variance if scheme == "eoc" else 0.0
                b = rng.standard_normal(fan_out) * np.sqrt(b_var)
            else:
                raise ValueError(f"unknown init scheme {scheme!r}; use suo, lecun, he, eoc or ll")
            params.append((w, b))
    return [(w.astype(model.dtype), b.astype(model.dtype)) for w, b in params]


# --------------------------------------------------------------------------- forward / backward

def forward(model: Model, params: Params, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits and the list of every layer's input (the cache for `backward`)."""
    cache: list[np.ndarray] = []
    h, k = x, 0
    for layer in model.plan.layers:
        cache.append(h)
        if isinstance(layer, Dense):
            w, b = params[k]
            h = h @ w + b
            k += 1
        else:
            h = np.asarray(model.acts[layer.name](h), dtype=model.dtype)
    return h, cache


def softmax_xent(logits: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Mean cross-entropy, accuracy, d(loss)/d(logits) = (softmax - onehot)/B, softmax."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = len(y)
    loss = float(-logp[np.arange(n), y].mean())
    acc = float((logits.argmax(axis=1) == y).mean())
    p = np.exp(logp)
    d = p.copy()
    d[np.arange(n), y] -= 1.0
    return loss, acc, d / n, p


def backward(model: Model, params: Params, cache: list[np.ndarray], dlogits: np.ndarray,
             keep_outputs: bool = False) -> tuple[Params, list[np.ndarray]]:
    """Gradients (dW = a^T g, db = sum_batch g) and, if asked, each Dense layer's output grad g.

    Activations pass g -> g * phi'(z) with z the cached activation input.
    """
    grads: Params = []
    outs: list[np.ndarray] = []
    g, k = dlogits, len(params)
    for layer, a in zip(reversed(model.plan.layers), reversed(cache), strict=True):
        if isinstance(layer, Dense):
            k -= 1
            w = params[k][0]
            grads.append((a.T @ g, g.sum(axis=0)))
            if keep_outputs:
                outs.append(g)
            if k > 0:
                g = g @ w.T
        else:
            g = g * np.asarray(model.acts[layer.name].derivative(a, order=1), dtype=model.dtype)
    return grads[::-1], outs[::-1]


def first_nonfinite(names: Sequence[str],
                    arrays: Sequence[np.ndarray | tuple[np.ndarray, ...]]) -> str | None:
    """Name of the first entry (in order) with a NaN or inf in any of its arrays, else None."""
    for name, arr in zip(names, arrays, strict=True):
        parts = arr if isinstance(arr, tuple) else (arr,)
        if not all(np.isfinite(a).all() for a in parts):
            return name
    return None


def nonfinite_report(model: Model, params: Params, cache: list[np.ndarray],
                     logits: np.ndarray, grads: Params | None) -> str:
    """Where values first went non-finite: forward outputs, parameters, then gradients."""
    names = model.layer_names()
    outputs = [*cache[1:], logits]
    bad = first_nonfinite(names, outputs)
    if bad is not None:
        return f"the output of layer {bad!r} is not finite"
    dense = [l.name for l in model.plan.layers if isinstance(l, Dense)]
    bad_p = first_nonfinite(dense, params)
    if bad_p is not None:
        return f"the parameters of layer {bad_p!r} are not finite"
    if grads is not None:
        bad = first_nonfinite(dense, grads)
        if bad is not None:
            return f"the gradient of layer {bad!r} is not finite"
    return "the loss is not finite (softmax cross-entropy overflow)"
