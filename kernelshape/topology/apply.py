"""Finite-width networks in NumPy: initialization, forward pass and backward pass of a Network.

Beside every layer's kernel map (``Layer.kernel_fn``, infinite width) this module says what the
layer computes on arrays (neural-tangents' ``apply_fn``): one rule per layer class in
:data:`RULES`, each returning the layer's output and its pullback (vector-Jacobian product).
The NumPy trainer, the theorem checks, the kernel-approximation study and the tests all run
networks through :func:`forward` / :func:`backward`; the JAX trainer has its own table of rules
for the same layer classes and initializes through :func:`init_params` (same random draws).

Arrays are batch-first and channels-last: ``x`` has shape ``(batch, *node.shape)``.
Parameters are a list with one tuple of arrays per node that owns weights (nodes sharing
weights use their owner's entry), in node order: Dense / Conv ``(W, b)`` with ``W`` of shape
``(fan_in, width)`` / ``(*kernel, c_in, c_out)``; LayerNorm and BatchNorm ``(scale, offset)``.
BatchNorm also has a state ``(running_mean, running_var)`` per node.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from kernelshape.runtime.numpy import scaled_uniform_orthogonal
from kernelshape.topology.graph import INPUT_ID, Node
from kernelshape.topology.layers import (
    BatchNorm,
    ChannelConcat,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    Layer,
    LayerNorm,
    Nonlinearity,
    WeightedSum,
)
from kernelshape.topology.network import Network

Params = list[tuple[np.ndarray, ...]]
State = dict[str, tuple[np.ndarray, np.ndarray]]  # BatchNorm node id -> (mean, var)
Pullback = Callable[[np.ndarray], tuple[list[np.ndarray | None], tuple[np.ndarray, ...] | None]]
INIT_SCHEMES = ("suo", "lecun", "he", "eoc", "ll")


class Elementwise(Protocol):
    """What a Nonlinearity rule needs: values and first derivative, vectorized."""

    def __call__(self, x: np.ndarray) -> np.ndarray: ...

    def derivative(self, x: np.ndarray, order: int = 1) -> np.ndarray: ...


# --------------------------------------------------------------------------- parameters

def weight_owners(net: Network) -> list[Node]:
    """The nodes that own parameters, in node order (one ``Params`` entry each)."""
    return [n for n in net.nodes if n.layer.has_weights and n.share is None]


def param_index(net: Network) -> dict[str, int]:
    """Node id -> its ``Params`` entry (shared-weight nodes point at their owner's)."""
    index = {n.id: i for i, n in enumerate(weight_owners(net))}
    for node in net.nodes:
        if node.share is not None:
            index[node.id] = index[node.share]
    return index


def _input_shape(net: Network, node: Node) -> tuple[int, ...]:
    return net.node(node.parents[0]).shape


def _looks_linear(rng: np.random.Generator, shapes: Sequence[tuple[int, int]]
                  ) -> list[np.ndarray]:
    """Looks-Linear matrices (Balduzzi et al. 2017): the ReLU net is linear at init.

    Hidden units come in mirrored pairs [z, -z]; first layer W = [U, -U], middle layers
    W = [[U, -U], [-U, U]] (so relu(z) U - relu(-z) U = z U), readout W = [U; -U], each U
    Haar orthogonal scaled as SUO."""
    out = []
    last = len(shapes) - 1
    for i, (fan_in, fan_out) in enumerate(shapes):
        if (i > 0 and fan_in % 2) or (i < last and fan_out % 2):
            raise ValueError(f"looks-linear init needs even hidden widths, got {fan_in}x{fan_out}")
        k_in = fan_in if i == 0 else fan_in // 2
        k_out = fan_out if i == last else fan_out // 2
        u = scaled_uniform_orthogonal(rng, (k_in, k_out))
        w = u if i == last else np.concatenate([u, -u], axis=1)
        out.append(w if i == 0 else np.concatenate([w, -w], axis=0))
    return out


def init_params(net: Network, rng: np.random.Generator, scheme: str,
                weight_variance: float = 1.0, bias_variance: float = 0.0,
                dtype: np.dtype | type = np.float64) -> Params:
    """Initial parameters, drawn in node order from ``rng``.

    Dense / Conv: "suo" scaled uniform orthogonal (Conv: Delta, only the centre tap), zero
    bias; "lecun" / "he" / "eoc": ``W ~ N(0, v / fan_in)`` on every tap (``fan_in`` counts
    taps), ``v`` = 1, 2, ``weight_variance``, and ``b ~ N(0, bias_variance)`` for "eoc" (zero
    otherwise; drawn all the same); "ll" looks-linear matrices on the centre tap (chains only).
    LayerNorm / BatchNorm: scale 1, offset 0 (no draws)."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; use {', '.join(INIT_SCHEMES)}")
    owners = weight_owners(net)
    linear = [n for n in owners if isinstance(n.layer, Dense | Conv)]
    mirrored = None
    if scheme == "ll":
        if any(len(n.parents) > 1 for n in net.nodes):
            raise ValueError("looks-linear init needs a chain (mirrored unit pairs from layer to "
                             "layer); this network has residual sums / concatenations")
        mirrored = iter(_looks_linear(rng, [(_input_shape(net, n)[-1], n.shape[-1])
                                            for n in linear]))
    params: Params = []
    for node in owners:
        shapes = node.layer.param_shapes(_input_shape(net, node))
        if not isinstance(node.layer, Dense | Conv):
            params.append((np.ones(shapes[0], dtype), np.zeros(shapes[1], dtype)))
            continue
        w_shape, (fan_out,) = shapes
        kernel, fan_in = w_shape[:-2], w_shape[-2]
        if scheme in ("suo", "ll"):
            matrix = next(mirrored) if mirrored is not None else \
                scaled_uniform_orthogonal(rng, (fan_in, fan_out))
            w = np.zeros(w_shape)
            w[tuple(k // 2 for k in kernel)] = matrix
            b = np.zeros(fan_out)
        else:
            var = {"lecun": 1.0, "he": 2.0, "eoc": weight_variance}[scheme]
            w = rng.standard_normal(w_shape) * np.sqrt(var / (math.prod(kernel) * fan_in))
            b = rng.standard_normal(fan_out) * np.sqrt(bias_variance if scheme == "eoc" else 0.0)
        params.append((w.astype(dtype), b.astype(dtype)))
    return params


def init_state(net: Network, dtype: np.dtype | type = np.float64) -> State:
    """BatchNorm running statistics: mean 0, variance 1 per channel."""
    return {n.id: (np.zeros(n.shape[-1], dtype), np.ones(n.shape[-1], dtype))
            for n in net.nodes if isinstance(n.layer, BatchNorm)}


# --------------------------------------------------------------------------- convolution

def conv_patches(x: Any, layer: Conv, xp: Any = np) -> Any:
    """'SAME'-padded patches of channels-last ``x`` (B, *spatial, Cin): (B, T, prod(kernel) Cin)
    with ``T = prod(ceil(size / stride))``, features ordered (*kernel, Cin), so that
    ``patches @ W.reshape(-1, Cout)`` is the convolution. ``xp``: numpy or jax.numpy."""
    spatial = tuple(x.shape[1:-1])
    kernel, stride = layer.spatial_params(len(spatial))
    out = layer.output_spatial(spatial)
    xp_ = xp.pad(x, [(0, 0), *layer.padding(spatial), (0, 0)])
    taps = []
    for offset in itertools.product(*(range(k) for k in kernel)):
        index = tuple(slice(d, d + (o - 1) * s + 1, s)
                      for d, o, s in zip(offset, out, stride, strict=True))
        taps.append(xp_[(slice(None), *index)])
    return xp.stack(taps, axis=-2).reshape(x.shape[0], math.prod(out), -1)


def _conv_patches_transpose(g: np.ndarray, layer: Conv, spatial: tuple[int, ...],
                            channels: int) -> np.ndarray:
    """Adjoint of :func:`conv_patches`: patch gradients (B, T, K Cin) -> input gradient."""
    kernel, stride = layer.spatial_params(len(spatial))
    out = layer.output_spatial(spatial)
    pads = layer.padding(spatial)
    g = g.reshape(g.shape[0], *out, math.prod(kernel), channels)
    grad = np.zeros((g.shape[0], *(n + lo + hi for n, (lo, hi) in zip(spatial, pads,
                                                                     strict=True)), channels),
                    g.dtype)
    for t, offset in enumerate(itertools.product(*(range(k) for k in kernel))):
        index = tuple(slice(d, d + (o - 1) * s + 1, s)
                      for d, o, s in zip(offset, out, stride, strict=True))
        grad[(slice(None), *index)] += g[..., t, :]
    crop = tuple(slice(lo, lo + n) for n, (lo, _) in zip(spatial, pads, strict=True))
    return grad[(slice(None), *crop)]


# --------------------------------------------------------------------------- rules

@dataclass
class Context:
    """What rules read besides their inputs and parameters."""

    activations: Mapping[str, Elementwise]  # activation key -> (transformed) activation
    dtype: np.dtype
    train: bool = True
    state: State = field(default_factory=dict)  # BatchNorm statistics (updated when training)


Rule = Callable[[Node, list[np.ndarray], tuple[np.ndarray, ...], Context],
                tuple[np.ndarray, Pullback]]


def _sum_leading(g: np.ndarray) -> np.ndarray:
    return g.reshape(-1, g.shape[-1]).sum(axis=0)


def _dense(node: Node, inputs: list[np.ndarray], params: tuple[np.ndarray, ...],
           ctx: Context) -> tuple[np.ndarray, Pullback]:
    """``y = x W + b`` on the last axis (per location)."""
    (x,), (w, b) = inputs, params

    def pullback(g: np.ndarray) -> tuple[list[np.ndarray | None], tuple[np.ndarray, ...]]:
        a = x.reshape(-1, x.shape[-1])
        grads = (a.T @ g.reshape(-1, g.shape[-1]), _sum_leading(g))
        return [None if node.parents[0] == INPUT_ID else g @ w.T], grads

    return x @ w + b, pullback


def _conv(node: Node, inputs: list[np.ndarray], params: tuple[np.ndarray, ...],
          ctx: Context) -> tuple[np.ndarray, Pullback]:
    """'SAME' convolution: patches times the kernel matrix, plus the bias."""
    (x,), (w, b) = inputs, params
    layer: Conv = node.layer  # type: ignore[assignment]
    patches = conv_patches(x, layer)
    matrix = w.reshape(-1, w.shape[-1])
    y = (patches @ matrix).reshape(x.shape[0], *node.shape) + b

    def pullback(g: np.ndarray) -> tuple[list[np.ndarray | None], tuple[np.ndarray, ...]]:
        g2 = g.reshape(g.shape[0], -1, g.shape[-1])
        dw = np.einsum("btk,btc->kc", patches, g2).reshape(w.shape)
        dx = None
        if node.parents[0] != INPUT_ID:
            dx = _conv_patches_transpose(g2 @ matrix.T, layer, tuple(x.shape[1:-1]), x.shape[-1])
        return [dx], (dw, _sum_leading(g))

    return y, pullback


def _nonlinearity(node: Node, inputs: list[np.ndarray], params: tuple[np.ndarray, ...],
                  ctx: Context) -> tuple[np.ndarray, Pullback]:
    """The (transformed) activation, elementwise; pullback ``g * phi'(x)``."""
    (x,) = inputs
    act = ctx.activations[node.layer.activation_key]  # type: ignore[attr-defined]

    def pullback(g: np.ndarray) -> tuple[list[np.ndarray | None], None]:
        return [g * np.asarray(act.derivative(x, order=1), dtype=ctx.dtype)], None

    return np.asarray(act(x), dtype=ctx.dtype), pullback


def _layernorm(node: Node, inputs: list[np.ndarray], params: tuple[np.ndarray, ...],
               ctx: Context) -> tuple[np.ndarray, Pullback]:
    """``x / sqrt(mean(x^2) + eps)`` over the channels of each location, then scale, offset."""
    (x,), (scale, offset) = inputs, params
    r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + LayerNorm.EPS)
    n = x * r

    def pullback(g: np.ndarray) -> tuple[list[np.ndarray | None], tuple[np.ndarray, ...]]:
        dn = g * scale
        dx = r * dn - x * r**3 * np.mean(dn * x, axis=-1, keepdims=True)
        return [dx], (_sum_leading(g * n), _sum_leading(g))

    return n * scale + offset, pullback


def _batchnorm(node: Node, inputs: list[np.ndarray], params: tuple[np.ndarray, ...],
               ctx: Context) -> tuple[np.ndarray, Pullback]:
    """Batch statistics per channel when training (running statistics updated with the
    layer's momentum), running statistics otherwise; then scale and offset."""
    (x,), (scale, offset) = inputs, params
    layer: BatchNorm = node.layer  # type: ignore[assignment]
    axes = tuple(range(x.ndim - 1))
    if ctx.train:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        old_mean, old_var = ctx.state[node.id]
        m = layer.momentum
        ctx.state[node.id] = (m * old_mean + (1 - m) * mean, m * old_var + (1 - m) * var)
    else:
        mean, var = ctx.state[node.id]
    r = 1.0 / np.sqrt(var + layer.eps)
    n = (x - mean) * r

    def pullback(g: np.ndarray) -> tuple[list[np.ndarray | None], tuple[np.ndarray, ...]]:
        dn = g * scale
        if ctx.train:
            dx = r * (dn - dn.mean(axis=axes) - n * (dn * n).mean(axis=axes))
        else:
            dx = r * dn
        return [dx], (_sum_leading(g * n), _sum_leading(g))

    return n * scale + offset, pullback


def _weighted_sum(node: Node, inputs: list[np.ndarray], params: tuple[np.ndarray, ...],
                  ctx: Context) -> tuple[np.ndarray, Pullback]:
    """``y = sum_i w_i x_i``."""
    weights = node.layer.weights  # type: ignore[attr-defined]
    y = weights[0] * inputs[0]
    for w, x in zip(weights[1:], inputs[1:], strict=True):
        y = y + w * x

    def pullback(g: np.ndarray) -> tuple[list[np.ndarray | None], None]:
        return [w * g for w in weights], None

    return y, pullback


def _concat(node: Node, inputs: list[np.ndarray], params: tuple[np.ndarray, ...],
            ctx: Context) -> tuple[np.ndarray, Pullback]:
    """Concatenation along the channel axis."""
    splits = np.cumsum([x.shape[-1] for x in inputs])[:-1]

    def pullback(g: np.ndarray) -> tuple[list[np.ndarray | None], None]:
        return list(np.split(g, splits, axis=-1)), None

    return np.concatenate(inputs, axis=-1), pullback


def _pool(node: Node, inputs: list[np.ndarray], params: tuple[np.ndarray, ...],
          ctx: Context) -> tuple[np.ndarray, Pullback]:
    """Mean over the spatial axes."""
    (x,) = inputs
    axes = tuple(range(1, x.ndim - 1))
    size = math.prod(x.shape[1:-1])

    def pullback(g: np.ndarray) -> tuple[list[np.ndarray | None], None]:
        return [np.broadcast_to(np.expand_dims(g, axes) / size, x.shape).copy()], None

    return x.mean(axis=axes), pullback


def _flatten(node: Node, inputs: list[np.ndarray], params: tuple[np.ndarray, ...],
             ctx: Context) -> tuple[np.ndarray, Pullback]:
    """All non-batch axes into one."""
    (x,) = inputs

    def pullback(g: np.ndarray) -> tuple[list[np.ndarray | None], None]:
        return [g.reshape(x.shape)], None

    return x.reshape(x.shape[0], -1), pullback


#: one rule per layer class: what the layer computes at finite width, with its pullback
RULES: dict[type[Layer], Rule] = {
    Dense: _dense,
    Conv: _conv,
    Nonlinearity: _nonlinearity,
    LayerNorm: _layernorm,
    BatchNorm: _batchnorm,
    WeightedSum: _weighted_sum,
    ChannelConcat: _concat,
    GlobalAvgPool: _pool,
    Flatten: _flatten,
}


def rule_for(node: Node, rules: Mapping[type[Layer], Rule] = RULES) -> Rule:
    """The rule of ``node``'s layer class (a clear error for a class without one)."""
    rule = rules.get(type(node.layer))
    if rule is None:
        raise ValueError(f"layer {node.id!r} is a {node.layer.type_name}, which has no "
                         f"finite-width rule; layers with one: "
                         f"{', '.join(cls.__name__ for cls in rules)}")
    return rule


# --------------------------------------------------------------------------- the passes

class Forward(NamedTuple):
    """Every node's output (``outputs[node_id]``, the input under ``"input"``) and pullbacks."""

    net: Network
    outputs: dict[str, np.ndarray]
    pullbacks: dict[str, Pullback]
    state: State

    @property
    def result(self) -> np.ndarray:
        return self.outputs[self.net.outputs[0]]


def forward(net: Network, params: Params | None, x: np.ndarray,
            activations: Mapping[str, Elementwise], *, state: State | None = None,
            train: bool = True, dtype: np.dtype | type | None = None,
            rules: Mapping[type[Layer], Rule] = RULES) -> Forward:
    """Run ``net`` on the batch ``x`` (shape ``(batch, *net.input_shape)``); ``params`` None
    for ``rules`` that draw their own weights (e.g. the checks' frame sampler)."""
    x = np.asarray(x)
    if tuple(x.shape[1:]) != tuple(net.input_shape):
        raise ValueError(f"the network takes inputs of shape {tuple(net.input_shape)} per "
                         f"example, got a batch of shape {tuple(x.shape)}")
    ctx = Context(activations, np.dtype(dtype or x.dtype), train, dict(state or {}))
    index = param_index(net)
    outputs: dict[str, np.ndarray] = {INPUT_ID: x}
    pullbacks: dict[str, Pullback] = {}
    for node in net.nodes[1:]:
        p = params[index[node.id]] if params is not None and node.id in index else ()
        outputs[node.id], pullbacks[node.id] = rule_for(node, rules)(
            node, [outputs[q] for q in node.parents], p, ctx)
    return Forward(net, outputs, pullbacks, ctx.state)


def backward(fwd: Forward, g_out: np.ndarray, params: Params
             ) -> tuple[Params, dict[str, np.ndarray]]:
    """(parameter gradients shaped like ``params``, gradient at every node's output) for the
    output gradient ``g_out`` of the network's (single) output."""
    net = fwd.net
    index = param_index(net)
    grads: list[list[np.ndarray] | None] = [None] * len(params)
    incoming: dict[str, np.ndarray] = {net.outputs[0]: g_out}
    for node in reversed(net.nodes[1:]):
        g = incoming.get(node.id)
        if g is None:
            continue
        input_grads, param_grads = fwd.pullbacks[node.id](g)
        if param_grads is not None:
            i = index[node.id]
            if grads[i] is None:
                grads[i] = list(param_grads)
            else:
                grads[i] = [a + b for a, b in zip(grads[i], param_grads, strict=True)]
        for parent, gp in zip(node.parents, input_grads, strict=True):
            if gp is None:
                continue
            incoming[parent] = gp if parent not in incoming else incoming[parent] + gp
    out = [tuple(g) if g is not None else tuple(np.zeros_like(p) for p in params[i])
           for i, g in enumerate(grads)]
    return out, incoming
