"""JAX backend: the same Plan as the NumPy backend, as pure jit-compiled JAX functions.

The plan may be a DAG (residual `Add`, `Concat`, `Norm` layers): `forward` keeps every layer's
output by name and evaluates the layers in plan order (a topological order).

Parameters are a list with one pair per parameterized layer, in plan order: `(W, b)` per Dense
or Conv layer (Dense `W`: (fan_in, fan_out); Conv `W`: (*kernel, in, out), channels last) and
`(scale, offset)` (1-D) per Norm layer, so for an MLP the pytree is exactly the NumPy backend's
`Params` and the same seed gives the same initial weights. The BatchNorm ResNet baseline
(`method="resnet-bn"`, chain plans only) adds `(scale, offset)` pairs and running statistics;
it is a baseline model type derived from the plan's depth and widths, never something DKS shapes.

Activations are the expression trees of `kernelshape.engine.expression`, evaluated with the
JAX runtime (`kernelshape.runtime.jax`) that every exported JAX file contains, so the trained
activation is the exported one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kernelshape.train import numpy_backend as nb
from kernelshape.train.plan import INPUT, Act, Add, Concat, Conv, Dense, Norm, Plan, Pool

Array = Any
Params = Any           # list of (W, b) / (scale, offset); resnet-bn: {"layers": ..., "bn": ...}
ModelState = Any       # BatchNorm running statistics: list of (mean, var), else ()


def enable_float64(dtype: str | np.dtype) -> None:
    """float64 runs need `jax_enable_x64` (a process-wide JAX setting; float32 runs leave it)."""
    if np.dtype(dtype) == np.float64 and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


# --------------------------------------------------------------------------- activations

def jax_activation(layer: Act, transform: dict[str, float] | None = None
                   ) -> Callable[[Array], Array]:
    """`gamma * (phi(alpha x + beta) + delta)` in jax.numpy for a plan's Act layer: the
    activation's expression tree evaluated with the JAX runtime's ops (as the exported file).

    `transform`: the dks parameter dict of the layer's slot (None: untransformed).
    """
    from kernelshape.engine.builtins import base_expression
    from kernelshape.engine.expression import evaluate, fold
    from kernelshape.runtime import jax as runtime

    t = dict(transform or {})
    params = dict(layer.params)
    if t.get("negative_slope") is not None:
        params["negative_slope"] = t["negative_slope"]
    tree = fold(base_expression(layer.activation, params)[2])
    constants = {"input_scale": t.get("input_scale", 1.0), "input_shift": t.get("input_shift", 0.0),
                 "output_shift": t.get("output_shift", 0.0),
                 "output_scale": t.get("output_scale", 1.0)}
    return runtime.transformed(lambda x: evaluate(tree, x, runtime.OPS), constants)


# --------------------------------------------------------------------------- the model

@dataclass
class Model:
    """A plan bound to one example's input shape, classes, activations and a dtype.

    `batchnorm=True` is the ResNet-with-BatchNorm baseline of the same depth and widths:
    the first linear layer is a stem, every later (linear, activation) pair becomes a
    pre-activation residual unit `h + L(act(BN(h)))` (no skip where the shape changes), and
    `act(BN(h))` precedes the pooling / readout.
    """

    plan: Plan
    input_shape: tuple[int, ...]
    n_classes: int
    acts: dict[str, Callable[[Array], Array]]
    dtype: np.dtype
    batchnorm: bool = False
    bn_momentum: float = 0.9
    bn_eps: float = 1e-5
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    out_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    layer_inputs: list[tuple[str, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.layer_inputs = self.plan.layer_inputs()
        self.shapes = self._weight_shapes()
        if self.batchnorm:
            if not self.plan.is_chain or any(isinstance(l, Norm) for l in self.plan.layers):
                why = self.plan.needs_jax
                raise ValueError(f"the resnet-bn baseline builds its own residual network from a "
                                 f"chain plan of (Dense|Conv, activation) pairs; this plan has "
                                 f"{why}: train it with dks / tat / eoc / none instead")
            self.check_resnet_bn()

    def _weight_shapes(self) -> list[tuple[int, ...]]:
        """First-parameter shape of every parameterized layer (Dense / Conv `W`, Norm `(C,)`),
        in plan order; checks every layer's input shapes and fills `out_shapes`."""
        shapes: dict[str, tuple[int, ...]] = {INPUT: tuple(self.input_shape)}
        out: list[tuple[int, ...]] = []
        for layer, inputs in zip(self.plan.layers, self.layer_inputs, strict=True):
            given = [shapes[i] for i in inputs]
            if not isinstance(layer, Add | Concat) and len(given) != 1:
                raise ValueError(f"layer {layer.name!r} takes one input, got {list(inputs)}")
            shape = given[0]
            if isinstance(layer, Add):
                if len(set(given)) > 1:
                    raise ValueError(f"layer {layer.name!r} sums inputs of different shapes "
                                     f"{given} ({list(inputs)})")
            elif isinstance(layer, Concat):
                if len({s[:-1] for s in given}) > 1:
                    raise ValueError(f"layer {layer.name!r} concatenates inputs whose "
                                     f"non-channel axes differ: {given} ({list(inputs)})")
                shape = shape[:-1] + (sum(s[-1] for s in given),)
            elif isinstance(layer, Norm):
                out.append((shape[-1],))
            elif isinstance(layer, Dense):
                units = self.n_classes if layer.units is None else layer.units
                out.append((shape[-1], units))
                shape = shape[:-1] + (units,)
            elif isinstance(layer, Conv):
                nd = len(shape) - 1
                if nd < 1 or len(layer.kernel_size) != nd:
                    raise ValueError(f"layer {layer.name!r}: a {len(layer.kernel_size)}-d conv "
                                     f"cannot take inputs of shape {shape} (channels last)")
                out.append((*layer.kernel_size, shape[-1], layer.channels))
                spatial = tuple(-(-n // s) for n, s in zip(shape[:-1], layer.stride,
                                                           strict=True))
                shape = spatial + (layer.channels,)
            elif isinstance(layer, Pool):
                if len(shape) < 2:
                    raise ValueError(f"layer {layer.name!r} pools, but its input has no "
                                     f"spatial axes (shape {shape})")
                shape = (shape[-1],) if layer.op == "mean" else (math.prod(shape),)
            shapes[layer.name] = shape
        self.out_shapes = shapes
        if shape != (self.n_classes,):
            raise ValueError(f"the network ends with output shape {shape}, the data has "
                             f"{self.n_classes} classes (give the readout units=None, or the "
                             "network num_classes / a readout of that width)")
        return out

    def linear_layers(self) -> list[Dense | Conv]:
        return [l for l in self.plan.layers if isinstance(l, Dense | Conv)]

    def param_layers(self) -> list[Dense | Conv | Norm]:
        """The layers with parameters, in plan order (one params entry each)."""
        return [l for l in self.plan.layers if isinstance(l, Dense | Conv | Norm)]

    def residual_units(self) -> list[bool]:
        """resnet-bn: for each linear layer, whether it gets an identity shortcut."""
        linear = self.linear_layers()
        return [i > 0 and i < len(linear) - 1 and w[-2] == w[-1]
                and all(st == 1 for st in getattr(layer, "stride", ()))
                for i, (layer, w) in enumerate(zip(linear, self.shapes, strict=True))]

    def check_resnet_bn(self) -> None:
        """resnet-bn needs the chain (linear, activation)* [pool] Dense."""
        kinds = ["L" if isinstance(l, Dense | Conv) else "A" if isinstance(l, Act) else "P"
                 for l in self.plan.layers]
        text = "".join(kinds)
        body = text[:-2] if text.endswith("PL") else text[:-1]
        if not (text.endswith("L") and body and body == "LA" * (len(body) // 2)):
            raise ValueError("the resnet-bn baseline needs a chain of (Dense|Conv, activation) "
                             "pairs, optional pooling and a Dense readout")


def init_params(model: Model, rng: np.random.Generator, scheme: str,
                weight_variance: float = 1.0, bias_variance: float = 0.0) -> Params:
    """Initial parameters as numpy arrays (same RNG stream as the NumPy backend for MLPs).

    Dense layers: as `numpy_backend.init_params` (same draws in the same order). Conv layers:
    Delta initialization for "suo" and "ll" (the centre tap holds the SUO / looks-linear
    matrix, other taps are zero); "lecun", "he", "eoc": every tap `N(0, var / (prod(kernel) *
    in))`. Norm layers: scale 1, offset 0 (no draws). resnet-bn adds BN scale 1 and offset 0
    per unit.
    """
    layers = model.param_layers()
    matrices = None
    if scheme == "ll":
        if not model.plan.is_chain:
            raise ValueError("looks-linear init needs a chain (mirrored unit pairs from layer to "
                             "layer); this plan has residual sums / concatenations")
        matrices = nb.looks_linear(rng, [(s[-2], s[-1]) for l, s in zip(layers, model.shapes,
                                                                        strict=True)
                                         if not isinstance(l, Norm)])
    elif scheme not in ("suo", "lecun", "he", "eoc"):
        raise ValueError(f"unknown init scheme {scheme!r}; use suo, lecun, he, eoc or ll")
    params, k = [], 0
    for layer, shape in zip(layers, model.shapes, strict=True):
        if isinstance(layer, Norm):
            params.append((np.ones(shape, model.dtype), np.zeros(shape, model.dtype)))
            continue
        kernel, fan_in, fan_out = shape[:-2], shape[-2], shape[-1]
        if scheme in ("suo", "ll"):
            m = (matrices[k][0] if matrices is not None
                 else nb.scaled_uniform_orthogonal(rng, fan_in, fan_out))
            if kernel:
                w = np.zeros(shape)
                w[tuple(n // 2 for n in kernel)] = m
            else:
                w = m
            b = np.zeros(fan_out)
        else:
            var = {"lecun": 1.0, "he": 2.0, "eoc": weight_variance}[scheme]
            w = rng.standard_normal(shape) * np.sqrt(var / (math.prod(kernel) * fan_in))
            b = rng.standard_normal(fan_out) * np.sqrt(bias_variance if scheme == "eoc"
                                                       else 0.0)
        params.append((w.astype(model.dtype), b.astype(model.dtype)))
        k += 1
    if model.batchnorm:
        widths = [s[-2] for s in model.shapes[1:]]
        bn = [(np.ones(c, model.dtype), np.zeros(c, model.dtype)) for c in widths]
        return {"layers": params, "bn": bn}
    return params


def init_model_state(model: Model) -> ModelState:
    """BatchNorm running (mean, var) per unit for resnet-bn; () otherwise."""
    if not model.batchnorm:
        return ()
    return [(np.zeros(s[-2], model.dtype), np.ones(s[-2], model.dtype))
            for s in model.shapes[1:]]


def _linear(layer: Dense | Conv, w: Array, b: Array, h: Array) -> Array:
    if isinstance(layer, Dense):
        return h @ w + b
    nd = w.ndim - 2
    spatial = "".join("DHW"[-nd:]) if nd <= 3 else None
    if spatial is None:
        raise ValueError(f"layer {layer.name!r}: convolutions up to 3 spatial axes")
    lhs = "N" + spatial + "C"
    y = jax.lax.conv_general_dilated(h, w, window_strides=layer.stride, padding="SAME",
                                     dimension_numbers=(lhs, spatial + "IO", lhs))
    return y + b


def _pool(layer: Pool, h: Array) -> Array:
    if layer.op == "mean":
        return jnp.mean(h, axis=tuple(range(1, h.ndim - 1)))
    return h.reshape(h.shape[0], -1)


def _norm(layer: Norm, h: Array, scale: Array, offset: Array) -> Array:
    """RMS normalization over the channel axis per location, then scale and offset."""
    return h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + layer.eps) * scale + offset


def forward(model: Model, params: Params, x: Array, state: ModelState = (),
            train: bool = True, collect: bool = False,
            perturb: Sequence[Array] | None = None) -> tuple[Array, ModelState, list[Array]]:
    """Logits, the new model state, and (with `collect`) every layer's output in plan order.

    `perturb`: one array per Dense / Conv layer, added to that layer's output (zeros: their
    gradients are the per-layer output gradients K-FAC needs); with `collect`, each Dense /
    Conv layer's *input* is returned (in order) instead of layer outputs when `perturb` is
    given. The same holds for resnet-bn (`_forward_bn`), whose linear layers are the plan's.
    """
    if model.batchnorm:
        return _forward_bn(model, params, x, state, train, collect, perturb)
    outputs: list[Array] = []
    values: dict[str, Array] = {INPUT: x}
    h, k, j = x, 0, 0           # k: params entry, j: Dense / Conv layer
    for layer, inputs in zip(model.plan.layers, model.layer_inputs, strict=True):
        h = values[inputs[0]]
        if isinstance(layer, Dense | Conv):
            w, b = params[k]
            k += 1
            if perturb is not None and collect:
                outputs.append(h)
            h = _linear(layer, w, b, h)
            if perturb is not None:
                h = h + perturb[j]
            j += 1
        elif isinstance(layer, Norm):
            h = _norm(layer, h, *params[k])
            k += 1
        elif isinstance(layer, Add):
            h = layer.weights[0] * h
            for w, name in zip(layer.weights[1:], inputs[1:], strict=True):
                h = h + w * values[name]
        elif isinstance(layer, Concat):
            h = jnp.concatenate([values[name] for name in inputs], axis=-1)
        elif isinstance(layer, Pool):
            h = _pool(layer, h)
        else:
            h = model.acts[layer.name](h)
        values[layer.name] = h
        if collect and perturb is None:
            outputs.append(h)
    return h, state, outputs


def _batchnorm(h: Array, scale: Array, offset: Array, stats: tuple[Array, Array], train: bool,
               model: Model) -> tuple[Array, tuple[Array, Array]]:
    axes = tuple(range(h.ndim - 1))
    # Without this barrier XLA:CPU fuses the batch statistics of consecutive units together:
    # a depth-50 width-256 step ran ~9x slower (0.63 vs 0.07 s) and compiled ~10x longer.
    h = jax.lax.optimization_barrier(h)
    if train:
        mean, var = jnp.mean(h, axis=axes), jnp.var(h, axis=axes)
        m = model.bn_momentum
        new = (m * stats[0] + (1 - m) * mean, m * stats[1] + (1 - m) * var)
    else:
        (mean, var), new = stats, stats
    return (h - mean) * jax.lax.rsqrt(var + model.bn_eps) * scale + offset, new


def _forward_bn(model: Model, params: Params, x: Array, state: ModelState, train: bool,
                collect: bool, perturb: Sequence[Array] | None = None
                ) -> tuple[Array, ModelState, list[Array]]:
    """Pre-activation ResNet (He et al. 2016, v2) with one linear layer per residual branch.

    `perturb` / `collect` as in `forward`: perturb[i] is added to linear layer i's output
    (before the shortcut sum); with both, outputs are the linear layers' inputs (the stem's
    is x, a later layer's is act(BN(h)), pooled where the plan pools), else the unit outputs.
    """
    layers_in_plan = list(model.plan.layers)
    linear = model.linear_layers()
    acts = [l for l in layers_in_plan if isinstance(l, Act)]
    shortcut = model.residual_units()
    layers, bn = params["layers"], params["bn"]
    new_state, outputs = [], []
    inputs = collect and perturb is not None
    if inputs:
        outputs.append(x)
    h = _linear(linear[0], *layers[0], x)
    if perturb is not None:
        h = h + perturb[0]
    for i in range(1, len(linear)):
        z, st = _batchnorm(h, *bn[i - 1], state[i - 1], train, model)
        new_state.append(st)
        z = model.acts[acts[i - 1].name](z)
        before = layers_in_plan[layers_in_plan.index(linear[i]) - 1]
        if isinstance(before, Pool):
            z = _pool(before, z)
        if inputs:
            outputs.append(z)
        y = _linear(linear[i], *layers[i], z)
        if perturb is not None:
            y = y + perturb[i]
        h = h + y if shortcut[i] else y
        if collect and not inputs:
            outputs.append(h)
    return h, new_state, outputs


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
    """Finiteness of the gradient vectors (biases, BN scale/offset) only.

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
    logits, _, outs = forward(model, params, x, state, train=True, collect=True)
    names = ([l.name for l in model.plan.layers] if not model.batchnorm
             else [l.name for l in model.linear_layers()[1:]])
    for name, o in zip(names, outs, strict=False):
        if not bool(jnp.all(jnp.isfinite(o))):
            return f"the output of layer {name!r} is not finite"
    lin = [l.name for l in (model.linear_layers() if model.batchnorm else model.param_layers())]
    plist = params["layers"] if model.batchnorm else params
    for name, p in zip(lin, plist, strict=True):
        if not bool(all_finite(p)):
            return f"the parameters of layer {name!r} are not finite"
    grads = jax.grad(lambda p: loss_fn(model, p, state, x, y)[0])(params)
    glist = grads["layers"] if model.batchnorm else grads
    for name, g in zip(lin, glist, strict=True):
        if not bool(all_finite(g)):
            return f"the gradient of layer {name!r} is not finite"
    return "the loss is not finite (softmax cross-entropy overflow)"
