"""JAX backend: a Network as pure, jit-compiled JAX functions, one rule per layer class.

The model is the network description itself: :data:`RULES` maps every topology layer class to
what it computes in jax.numpy, and each node's shape comes from the node. Parameters and their
random draws are `kernelshape.topology.apply.init_params` (the NumPy backend's, so the same
seed gives the same initial weights); BatchNorm running statistics are the model state.

Activations are the expression trees of `kernelshape.engine.expression`, evaluated with the JAX
runtime (`kernelshape.runtime.jax`) that every exported JAX file contains, so the trained
activation is the exported one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kernelshape.engine.activations import Activation
from kernelshape.engine.expression import evaluate, fold
from kernelshape.runtime import jax as runtime
from kernelshape.topology import (
    BatchNorm,
    ChannelConcat,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    Layer,
    LayerNorm,
    Network,
    Node,
    Nonlinearity,
    WeightedSum,
)
from kernelshape.topology.apply import init_state, param_index, weight_owners
from kernelshape.topology.graph import INPUT_ID

Array = Any
Params = list[tuple[Array, ...]]  # one tuple per weight-owning node (topology.apply layout)
ModelState = dict[str, tuple[Array, Array]]  # BatchNorm node id -> running (mean, var)


def enable_float64(dtype: str | np.dtype) -> None:
    """float64 runs need `jax_enable_x64` (a process-wide JAX setting; float32 runs leave it)."""
    if np.dtype(dtype) == np.float64 and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


def jax_activation(act: Activation) -> Callable[[Array], Array]:
    """``gamma * (phi(alpha x + beta) + delta)`` in jax.numpy for a (transformed) activation:
    its expression tree with the JAX runtime's ops."""
    if act.expression is None:
        raise ValueError(f"{act!r} is a Python callable; the JAX backend needs a built-in name "
                         "or an expression in x")
    tree = fold(act.expression)
    t = act.transform
    constants = {"input_scale": t.input_scale, "input_shift": t.input_shift,
                 "output_shift": t.output_shift, "output_scale": t.output_scale}
    return runtime.transformed(lambda x: evaluate(tree, x, runtime.OPS), constants)


@dataclass
class Model:
    """A network bound to its activations (per activation key) and a dtype."""

    net: Network
    acts: Mapping[str, Callable[[Array], Array]]
    dtype: np.dtype
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = param_index(self.net)
        for node in self.net.nodes[1:]:
            if type(node.layer) not in RULES:
                raise ValueError(f"layer {node.id!r} is a {node.layer.type_name}, which the JAX "
                                 f"backend has no rule for; it trains "
                                 f"{', '.join(cls.__name__ for cls in RULES)}")

    @property
    def owners(self) -> list[Node]:
        """The weight-owning nodes, one params entry each."""
        return weight_owners(self.net)

    @property
    def linear_nodes(self) -> list[Node]:
        """Dense / Conv nodes (K-FAC's Kronecker-factored blocks)."""
        return [n for n in self.net.nodes[1:] if RULES[type(n.layer)].curvature is not None]


class Step(NamedTuple):
    """One rule's inputs: the node, its operands, its params, the model state (BatchNorm
    rules update it), train mode, and the model's activations by key."""

    node: Node
    inputs: list[Array]
    params: tuple[Array, ...]
    state: ModelState
    train: bool
    acts: Mapping[str, Callable[[Array], Array]]


def _dense(s: Step) -> Array:
    w, b = s.params
    return s.inputs[0] @ w + b


def _conv(s: Step) -> Array:
    w, b = s.params
    layer: Conv = s.node.layer  # type: ignore[assignment]
    nd = w.ndim - 2
    if nd > 3:
        raise ValueError(f"layer {s.node.id!r}: convolutions up to 3 spatial axes")
    spatial = "DHW"[-nd:]
    lhs = "N" + spatial + "C"
    _, stride = layer.spatial_params(nd)
    y = jax.lax.conv_general_dilated(s.inputs[0], w, window_strides=stride, padding="SAME",
                                     dimension_numbers=(lhs, spatial + "IO", lhs))
    return y + b


def _layernorm(s: Step) -> Array:
    """RMS normalization over the channel axis per location, then scale and offset."""
    h, (scale, offset) = s.inputs[0], s.params
    return h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + LayerNorm.EPS) * scale \
        + offset


def _batchnorm(s: Step) -> Array:
    """Batch statistics when training (the running statistics in ``s.state`` are updated in
    place of the dict), running statistics otherwise."""
    h, (scale, offset) = s.inputs[0], s.params
    layer: BatchNorm = s.node.layer  # type: ignore[assignment]
    axes = tuple(range(h.ndim - 1))
    # Without this barrier XLA:CPU fuses the batch statistics of consecutive units together:
    # a depth-50 width-256 step ran ~9x slower (0.63 vs 0.07 s) and compiled ~10x longer.
    h = jax.lax.optimization_barrier(h)
    stats = s.state[s.node.id]
    if s.train:
        mean, var = jnp.mean(h, axis=axes), jnp.var(h, axis=axes)
        m = layer.momentum
        s.state[s.node.id] = (m * stats[0] + (1 - m) * mean, m * stats[1] + (1 - m) * var)
    else:
        mean, var = stats
    return (h - mean) * jax.lax.rsqrt(var + layer.eps) * scale + offset


def _weighted_sum(s: Step) -> Array:
    weights = s.node.layer.weights  # type: ignore[attr-defined]
    h = weights[0] * s.inputs[0]
    for w, x in zip(weights[1:], s.inputs[1:], strict=True):
        h = h + w * x
    return h


def _pool(s: Step) -> Array:
    return jnp.mean(s.inputs[0], axis=tuple(range(1, s.inputs[0].ndim - 1)))


class Rule(NamedTuple):
    """What a layer class computes in JAX, and its K-FAC block (None: no Kronecker factors;
    parameters, if any, are preconditioned by the identity)."""

    apply: Callable[[Step], Array]
    curvature: str | None = None


#: one rule per layer class
RULES: dict[type[Layer], Rule] = {
    Dense: Rule(_dense, "dense"),
    Conv: Rule(_conv, "conv"),
    Nonlinearity: Rule(lambda s: s.acts[s.node.layer.activation_key](s.inputs[0])),
    LayerNorm: Rule(_layernorm),
    BatchNorm: Rule(_batchnorm),
    WeightedSum: Rule(_weighted_sum),
    ChannelConcat: Rule(lambda s: jnp.concatenate(s.inputs, axis=-1)),
    GlobalAvgPool: Rule(_pool),
    Flatten: Rule(lambda s: s.inputs[0].reshape(s.inputs[0].shape[0], -1)),
}


# --------------------------------------------------------------------------- passes

def init_model_state(model: Model) -> ModelState:
    """BatchNorm running statistics (mean 0, variance 1), as `topology.apply.init_state`."""
    return init_state(model.net, model.dtype)


def forward(model: Model, params: Params, x: Array, state: ModelState | None = None,
            train: bool = True, collect: bool = False,
            perturb: list[Array] | None = None) -> tuple[Array, ModelState, list[Array]]:
    """Logits, the new model state, and (``collect``) every node's output in node order.

    ``perturb``: one array per Dense / Conv node (``model.linear_nodes``), added to its
    output (zeros: their gradients are the per-layer output gradients K-FAC needs); with
    ``collect`` too, the collected arrays are those nodes' *inputs* instead."""
    values: dict[str, Array] = {INPUT_ID: x}
    new_state = dict(state or {})
    collected: list[Array] = []
    extra = iter(perturb) if perturb is not None else None
    for node in model.net.nodes[1:]:
        rule = RULES[type(node.layer)]
        inputs = [values[p] for p in node.parents]
        p = params[model.index[node.id]] if node.id in model.index else ()
        tapped = extra is not None and rule.curvature is not None
        if tapped and collect:
            collected.append(inputs[0])
        y = rule.apply(Step(node, inputs, p, new_state, train, model.acts))
        if tapped:
            y = y + next(extra)  # type: ignore[arg-type]
        values[node.id] = y
        if collect and perturb is None:
            collected.append(y)
    return values[model.net.outputs[0]], new_state, collected


def xent(logits: Array, y: Array) -> tuple[Array, Array]:
    """Mean softmax cross-entropy and accuracy."""
    logp = jax.nn.log_softmax(logits)
    loss = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
    acc = jnp.mean(jnp.argmax(logits, axis=1) == y)
    return loss, acc


def loss_fn(model: Model, params: Params, state: ModelState, x: Array, y: Array
            ) -> tuple[Array, tuple[Array, ModelState]]:
    """(loss, (accuracy, new model state)) in training mode."""
    logits, new_state, _ = forward(model, params, x, state, train=True)
    loss, acc = xent(logits, y)
    return loss, (acc, new_state)


def all_finite(tree: Any) -> Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(t)) for t in leaves]))


def grads_finite(grads: Any) -> Array:
    """Finiteness of the gradient vectors (biases, normalization scale/offset) only.

    A bias gradient is the batch (and spatial) sum of its layer's output gradient, so a NaN/inf
    anywhere in that output gradient makes it non-finite; with a finite loss (finite forward)
    the only case this misses is an overflow inside a weight-gradient product `a^T g` alone,
    which turns the parameters non-finite and is caught by the next step's loss. Checking every
    weight gradient costs an extra pass over them (about 8% of a CPU step at depth 100).
    """
    leaves = [t for t in jax.tree_util.tree_leaves(grads) if t.ndim <= 1]
    return all_finite(leaves) if leaves else all_finite(grads)


def nonfinite_report(model: Model, params: Params, state: ModelState, x: Array, y: Array
                     ) -> str:
    """Where values first went non-finite (eager, only after a divergence)."""
    _, _, outs = forward(model, params, x, state, train=True, collect=True)
    for node, o in zip(model.net.nodes[1:], outs, strict=True):
        if not bool(jnp.all(jnp.isfinite(o))):
            return f"the output of layer {node.id!r} is not finite"
    owners = [n.id for n in model.owners]
    for name, p in zip(owners, params, strict=True):
        if not bool(all_finite(p)):
            return f"the parameters of layer {name!r} are not finite"
    grads = jax.grad(lambda p: loss_fn(model, p, state, x, y)[0])(params)
    for name, g in zip(owners, grads, strict=True):
        if not bool(all_finite(g)):
            return f"the gradient of layer {name!r} is not finite"
    return "the loss is not finite (softmax cross-entropy overflow)"
