"""Primitive layers: what one node of a network computes.

Each layer is a small frozen dataclass that knows
* its output shape (``output_shape``; shapes exclude the batch axis, channels last),
* its kernel map (``kernel_fn``: the ``KernelState`` of its inputs -> that of its output),
* its parameters' shapes (``param_shapes``; what they compute at finite width is in
  ``kernelshape.topology.apply`` and the JAX trainer, one rule per layer class),
* its ``role`` in the subnetwork C-map program: ``"linear"`` (maps are the identity),
  ``"nonlinear"`` (local Q/C maps of an activation), ``"normalize"`` (LayerNorm: q -> 1),
  ``"mix"`` (weighted average of its operands), ``"batchnorm"`` (trainer only: no kernel map,
  ``kernel_refusal`` says why) or ``"unsupported"`` (refused in any network).

Layers compare by identity (``eq=False``): using the *same object* twice in a description means
shared weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import sympy as sp

from kernelshape.engine import formulas
from kernelshape.engine.activations import activation
from kernelshape.engine.maps import cmap, qmap, snap_q
from kernelshape.engine.series import TruncatedSeries, cmap_series
from kernelshape.topology.state import KernelState, mix_states

if TYPE_CHECKING:
    from kernelshape.engine.activations import Activation

Shape = tuple[int, ...]

#: every layer class by name (saved descriptions name their layers' classes); a subclass of
#: ``Layer`` registers itself here when it is defined
LAYER_TYPES: dict[str, type[Layer]] = {}


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _int_tuple(value: Any, what: str) -> int | tuple[int, ...]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(_positive_int(v, what) for v in value)
    return _positive_int(value, what)


def _per_axis(value: int | tuple[int, ...], ndim: int, what: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * ndim
    if len(value) != ndim:
        raise ValueError(f"{what} {value} has {len(value)} entries but the input has {ndim} "
                         f"spatial axes")
    return value


@dataclass(frozen=True, eq=False)
class Layer:
    """Base class. ``name`` (optional) becomes the node id, under the enclosing combinators."""

    name: str | None = field(default=None, kw_only=True)

    role: ClassVar[str] = "linear"
    auto_name: ClassVar[str] = "layer"
    has_weights: ClassVar[bool] = False  # owns trainable parameters (can be shared)
    arity: ClassVar[int | None] = 1  # number of inputs; None = one or more
    #: why the layer has no kernel map although networks may contain it (trainer-only layers)
    kernel_refusal: ClassVar[str] = ""

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if register:
            LAYER_TYPES[cls.__name__] = cls

    def __post_init__(self) -> None:
        if self.name is not None and (not isinstance(self.name, str) or not self.name
                                      or "/" in self.name):
            raise ValueError(f"layer name must be a nonempty string without '/', "
                             f"got {self.name!r}")

    @property
    def type_name(self) -> str:
        return type(self).__name__

    def params(self) -> dict[str, Any]:
        """JSON-able constructor arguments (without ``name``)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.name != "name"}

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        """Shape of the output given the input shapes (identity by default)."""
        return input_shapes[0]

    def kernel_fn(self, inputs: Sequence[KernelState],
                  activations: Mapping[str, Activation]) -> KernelState:
        """Kernel map of the layer (identity by default)."""
        return inputs[0]

    def param_shapes(self, input_shape: Shape) -> tuple[Shape, ...]:
        """Shapes of the layer's parameters for an input of ``input_shape`` (none by default)."""
        return ()

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items() if v is not None)
        return f"{self.type_name}({args})"


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True, eq=False)
class Input(Layer):
    """The network input (always the node ``"input"``); ``shape`` excludes the batch axis."""

    shape: Shape = ()
    role: ClassVar[str] = "input"
    arity: ClassVar[int | None] = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.shape, int):
            object.__setattr__(self, "shape", (self.shape,))
        shape = tuple(_positive_int(s, "input shape entry") for s in self.shape)
        if not shape:
            raise ValueError("input shape must have at least one axis (the features)")
        object.__setattr__(self, "shape", shape)

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        return self.shape


@dataclass(frozen=True, eq=False)
class Dense(Layer):
    """Fully connected layer on the last axis (per location), SUO weights, zero bias.

    Kernel map: identity (q and c are preserved at initialization).
    """

    width: int = 0
    auto_name: ClassVar[str] = "dense"
    has_weights: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "width", _positive_int(self.width, "Dense width"))

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        return input_shapes[0][:-1] + (self.width,)

    def param_shapes(self, input_shape: Shape) -> tuple[Shape, ...]:
        """``W`` (fan_in, width) and ``b`` (width,): ``y = x W + b`` per location."""
        return (input_shape[-1], self.width), (self.width,)


@dataclass(frozen=True, eq=False)
class Conv(Layer):
    """n-D convolution, 'SAME' padding, Delta-orthogonal (SUO centre tap) initialization.

    ``kernel_size`` and ``stride`` are an int (all spatial axes) or one entry per axis; kernel
    sizes must be odd so that the Delta initialization has a centre tap. At initialization the
    layer is a per-location Dense layer on the (strided) locations, so its kernel map is the
    identity. Output spatial size: ``ceil(size / stride)``.
    """

    channels: int = 0
    kernel_size: int | tuple[int, ...] = 3
    stride: int | tuple[int, ...] = 1
    auto_name: ClassVar[str] = "conv"
    has_weights: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "channels", _positive_int(self.channels, "Conv channels"))
        kernel = _int_tuple(self.kernel_size, "Conv kernel_size")
        object.__setattr__(self, "kernel_size", kernel)
        object.__setattr__(self, "stride", _int_tuple(self.stride, "Conv stride"))
        sizes = kernel if isinstance(kernel, tuple) else (kernel,)
        if any(k % 2 == 0 for k in sizes):
            raise ValueError(f"Conv kernel_size {self.kernel_size} must be odd on every axis "
                             "(Delta initialization puts the weights on the centre tap)")

    def spatial_params(self, ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Per-axis (kernel_size, stride) for an input with ``ndim`` spatial axes."""
        return (_per_axis(self.kernel_size, ndim, "Conv kernel_size"),
                _per_axis(self.stride, ndim, "Conv stride"))

    def output_spatial(self, spatial: Shape) -> Shape:
        """'SAME' output sizes ``ceil(size / stride)``."""
        _, stride = self.spatial_params(len(spatial))
        return tuple(-(-size // s) for size, s in zip(spatial, stride, strict=True))

    def padding(self, spatial: Shape) -> tuple[tuple[int, int], ...]:
        """'SAME' zero padding (before, after) per spatial axis: the total
        ``max((out - 1) stride + kernel - size, 0)``, the larger half after."""
        kernel, stride = self.spatial_params(len(spatial))
        pads = [max((o - 1) * st + k - n, 0) for o, st, k, n in
                zip(self.output_spatial(spatial), stride, kernel, spatial, strict=True)]
        return tuple((p // 2, p - p // 2) for p in pads)

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        shape = input_shapes[0]
        if len(shape) < 2:
            raise ValueError(f"Conv needs spatial axes but its input has shape {shape}; "
                             "use Dense for inputs without spatial axes")
        return self.output_spatial(shape[:-1]) + (self.channels,)

    def param_shapes(self, input_shape: Shape) -> tuple[Shape, ...]:
        """``W`` (*kernel_size, c_in, channels) and ``b`` (channels,)."""
        kernel, _ = self.spatial_params(len(input_shape) - 1)
        return (*kernel, input_shape[-1], self.channels), (self.channels,)


@dataclass(frozen=True, eq=False)
class Nonlinearity(Layer):
    """Elementwise activation: a built-in name, an expression in x, or an ``Activation``.

    ``key`` names the activation slot that a solver shapes (default: the activation's name);
    layers with the same key get the same transform. Kernel map: the local maps
    ``q -> Q(q)``, ``c -> C(c; q1, q2)`` of the (transformed) activation.
    """

    activation: str | Activation = ""
    key: str | None = None
    role: ClassVar[str] = "nonlinear"
    auto_name: ClassVar[str] = "act"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.activation, str):
            if not self.activation.strip():
                raise ValueError("Nonlinearity needs an activation (a name or an expression)")
        elif not hasattr(self.activation, "to_dict"):
            raise TypeError(f"Nonlinearity activation must be a name, an expression or an "
                            f"Activation, got {self.activation!r}")
        if self.key is not None and (not isinstance(self.key, str) or not self.key):
            raise ValueError(f"activation key must be a nonempty string, got {self.key!r}")

    @property
    def activation_key(self) -> str:
        """The solver slot of this layer: ``key`` if given, else the activation's name."""
        if self.key is not None:
            return self.key
        return self.activation if isinstance(self.activation, str) else self.activation.name

    def resolve(self) -> Activation:
        """The ``kernelshape.engine.activations.Activation`` this layer applies."""
        return activation(self.activation)

    def params(self) -> dict[str, Any]:
        spec = self.activation if isinstance(self.activation, str) else self.activation.to_dict()
        return {"activation": spec, "key": self.key}

    def kernel_fn(self, inputs: Sequence[KernelState],
                  activations: Mapping[str, Activation]) -> KernelState:
        """``q_i -> Q(q_i)``, ``c -> C(c; q1, q2)``; jets by the chain rule (Faa di Bruno)."""
        act = activations[self.activation_key]
        s = inputs[0]
        q1 = qmap(act, s.q1)
        q2 = q1 if s.q2 is s.q1 else qmap(act, s.q2)
        if s.c is None:
            c, c_jet = None, ()
        else:
            c = _cmap(act, s.c, s.q1, s.q2, 0)
            c_jet = _chain(lambda k: _cmap(act, s.c, s.q1, s.q2, k), s.c_jet)
        q_jet = _chain(lambda k: qmap(act, s.q1, order=k), s.q_jet)
        return KernelState(q1, q2, c, c_jet, q_jet)


def _cmap(act: Activation, c: np.ndarray | TruncatedSeries, q1: np.ndarray, q2: np.ndarray,
          order: int) -> np.ndarray | TruncatedSeries:
    """``maps.cmap`` broadcast over arrays of q1 and q2 (one call per distinct pair); a
    ``TruncatedSeries`` c is composed with the activation's certified series."""
    if isinstance(c, TruncatedSeries | sp.Basic):
        q = float(np.asarray(q1))
        if order or q != float(np.asarray(q2)):
            raise ValueError("a network C-map series or formula needs inputs of equal q")
        if isinstance(c, TruncatedSeries):
            return c.compose(_series(act, snap_q(q), c.order))
        return _cmap_formula(act, q).subs(formulas.C, c)
    q1, q2 = np.asarray(q1, dtype=float), np.asarray(q2, dtype=float)
    if q1.size == 1 and q2.size == 1:
        return cmap(act, c, float(q1.flat[0]), float(q2.flat[0]), order=order)
    c, q1, q2 = (a.ravel() for a in np.broadcast_arrays(c, q1, q2))
    shape = np.broadcast_shapes(np.shape(c), q1.shape)
    pairs, which = np.unique(np.stack([q1, q2], axis=1), axis=0, return_inverse=True)
    out = np.empty(c.shape)
    for j, (a, b) in enumerate(pairs):
        mask = which.ravel() == j
        out[mask] = cmap(act, c[mask], a, b, order=order)
    return out.reshape(shape)


@lru_cache(maxsize=256)
def _cmap_formula(act: Activation, q: float) -> sp.Expr:
    """The closed-form normalized C map of ``act`` at equal input ``q`` (ValueError where the
    activation has none)."""
    kernel = formulas.kernel_formula(act).kernel.subs({formulas.Q1: formulas.number(q),
                                                      formulas.Q2: formulas.number(q)})
    return kernel / kernel.subs(formulas.C, 1)


@lru_cache(maxsize=256)
def _series(act: Activation, q: float, order: int) -> np.ndarray:
    """The certified series coefficients of ``act`` at ``q`` (float64)."""
    return np.array([float(b) for b in cmap_series(act, order, q).coefficients])


def _chain(outer_derivative: Any, inner_jet: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Jet of ``f(g(t))`` from ``f^(k)(g)`` and ``(g', g'')``: ``(f' g', f'' g'^2 + f' g'')``."""
    if not inner_jet:
        return ()
    f1 = outer_derivative(1)
    jet = [f1 * inner_jet[0]]
    if len(inner_jet) > 1:
        jet.append(outer_derivative(2) * inner_jet[0] ** 2 + f1 * inner_jet[1])
    return tuple(jet)


@dataclass(frozen=True, eq=False)
class LayerNorm(Layer):
    """Normalizes each location's feature vector: ``x / sqrt(mean(x^2))`` (then scale, offset;
    RMS normalization, no mean subtraction).

    Kernel map: ``q -> 1``, c unchanged (exact for channel-mean-zero inputs, which C(0) = 0 and
    a preceding zero-mean linear layer give).
    """

    role: ClassVar[str] = "normalize"
    auto_name: ClassVar[str] = "layernorm"
    has_weights: ClassVar[bool] = True
    EPS: ClassVar[float] = 1e-6  # finite width: x / sqrt(mean(x^2) + EPS)

    def param_shapes(self, input_shape: Shape) -> tuple[Shape, ...]:
        """Per-channel ``scale`` (init 1) and ``offset`` (init 0)."""
        return (input_shape[-1],), (input_shape[-1],)

    def kernel_fn(self, inputs: Sequence[KernelState],
                  activations: Mapping[str, Activation]) -> KernelState:
        s = inputs[0]
        one = np.ones_like(np.asarray(s.q1, dtype=float))  # q -> 1
        return KernelState(one, one, s.c, s.c_jet, tuple(0.0 * one for _ in s.q_jet))


@dataclass(frozen=True, eq=False)
class GlobalAvgPool(Layer):
    """Mean over all spatial axes (head layer). Modeled as identity on the per-location state
    (exact when every location pair of the two inputs is in the same state)."""

    auto_name: ClassVar[str] = "pool"

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        shape = input_shapes[0]
        if len(shape) < 2:
            raise ValueError(f"GlobalAvgPool needs spatial axes but its input has shape {shape}")
        return shape[-1:]


@dataclass(frozen=True, eq=False)
class Flatten(Layer):
    """Flattens all axes into one feature axis. Identity on a location-uniform state."""

    auto_name: ClassVar[str] = "flatten"

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        return (math.prod(input_shapes[0]),)


@dataclass(frozen=True, eq=False)
class WeightedSum(Layer):
    """Normalized sum ``y = sum_i w_i x_i`` with fixed weights, ``sum_i w_i^2 = 1``.

    Kernel map: the ``w_i^2``-weighted average (``KernelState`` mixing), valid when the operands'
    cross-kernels vanish (all operands but one end in their own Dense/Conv layer).
    """

    weights: tuple[float, ...] = ()
    role: ClassVar[str] = "mix"
    auto_name: ClassVar[str] = "sum"
    arity: ClassVar[int | None] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        weights = tuple(float(w) for w in self.weights)
        if not weights or not all(math.isfinite(w) for w in weights):
            raise ValueError(f"sum weights must be finite numbers, got {self.weights!r}")
        object.__setattr__(self, "weights", weights)

    @property
    def mix_weights(self) -> tuple[float, ...]:
        return tuple(w * w for w in self.weights)

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        if len(input_shapes) != len(self.weights):
            raise ValueError(f"has {len(self.weights)} weights but {len(input_shapes)} operands")
        if len(set(input_shapes)) > 1:
            raise ValueError(f"operand shapes differ: {', '.join(map(str, input_shapes))}; "
                             "summed operands must have equal shapes (use a projection, e.g. "
                             "a 1x1 Conv or Dense, on the shortcut)")
        return input_shapes[0]

    def kernel_fn(self, inputs: Sequence[KernelState],
                  activations: Mapping[str, Activation]) -> KernelState:
        return mix_states(inputs, self.mix_weights)


@dataclass(frozen=True, eq=False)
class ChannelConcat(Layer):
    """Concatenation along the channel (last) axis of operands with ``channels[i]`` channels.

    Kernel map: average of the operands' states weighted by channel fraction ``n_i / sum n``.
    """

    channels: tuple[int, ...] = ()
    role: ClassVar[str] = "mix"
    auto_name: ClassVar[str] = "concat"
    arity: ClassVar[int | None] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "channels",
                           tuple(_positive_int(n, "concat channels") for n in self.channels))

    @property
    def mix_weights(self) -> tuple[float, ...]:
        total = sum(self.channels)
        return tuple(n / total for n in self.channels)

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        if tuple(s[-1] for s in input_shapes) != self.channels:
            raise ValueError(f"declares channels {self.channels} but its operands have shapes "
                             f"{', '.join(map(str, input_shapes))}")
        if len({s[:-1] for s in input_shapes}) > 1:
            raise ValueError(f"operand shapes {', '.join(map(str, input_shapes))} differ "
                             "outside the channel axis")
        return input_shapes[0][:-1] + (sum(self.channels),)

    def kernel_fn(self, inputs: Sequence[KernelState],
                  activations: Mapping[str, Activation]) -> KernelState:
        return mix_states(inputs, self.mix_weights)


@dataclass(frozen=True, eq=False)
class Unsupported(Layer, register=False):
    """A layer type outside DKS/TAT theory; a network containing it is rejected."""

    role: ClassVar[str] = "unsupported"
    reason: ClassVar[str] = ""
    alternative: ClassVar[str] = ""


@dataclass(frozen=True, eq=False)
class BatchNorm(Layer):
    """Batch normalization per channel: ``(x - mean) / sqrt(var + eps)`` with batch statistics
    in training (running statistics, updated with ``momentum``, in evaluation), then scale
    and offset. Trainer only (the ResNet-BN baseline): it couples the examples of a batch, so
    it has no kernel map, and networks containing it cannot be shaped or checked."""

    momentum: float = 0.9
    eps: float = 1e-5
    role: ClassVar[str] = "batchnorm"
    auto_name: ClassVar[str] = "batchnorm"
    has_weights: ClassVar[bool] = True
    kernel_refusal: ClassVar[str] = (
        "BatchNorm couples the examples of a batch, so it has no per-pair kernel map and "
        "DKS/TAT do not cover it; use LayerNorm (maps q to 1 per example), or no normalization "
        "layer with per-location normalization of the data")

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("momentum", "eps"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    math.isfinite(value) and (0.0 <= value < 1.0 if key == "momentum"
                                              else value > 0.0)):
                what = "in [0, 1)" if key == "momentum" else "> 0"
                raise ValueError(f"BatchNorm {key} must be a number {what}, got {value!r}")
            object.__setattr__(self, key, float(value))

    def param_shapes(self, input_shape: Shape) -> tuple[Shape, ...]:
        """Per-channel ``scale`` (init 1) and ``offset`` (init 0)."""
        return (input_shape[-1],), (input_shape[-1],)

    def kernel_fn(self, inputs: Sequence[KernelState],
                  activations: Mapping[str, Activation]) -> KernelState:
        raise ValueError(self.kernel_refusal)


@dataclass(frozen=True, eq=False)
class MaxPool(Unsupported):
    """Max pooling (rejected)."""

    reason: ClassVar[str] = "max-pooling is not covered by the DKS/TAT kernel maps"
    alternative: ClassVar[str] = ("use a strided Conv to downsample, or GlobalAvgPool at the "
                                  "head")


@dataclass(frozen=True, eq=False)
class Gate(Unsupported):
    """Multiplicative gating unit such as GLU / SwiGLU (rejected)."""

    reason: ClassVar[str] = ("multiplicative units (gating, products of activations) are not "
                             "covered by the DKS/TAT kernel maps")
    alternative: ClassVar[str] = ("use an elementwise Nonlinearity, and combine branches with a "
                                  "normalized Sum or a Concat")


@dataclass(frozen=True, eq=False)
class SelfAttention(Unsupported):
    """Self-attention (rejected: it multiplies activations and mixes locations)."""

    reason: ClassVar[str] = ("self-attention multiplies activations and mixes locations; it is "
                             "not covered by the per-location DKS/TAT kernel maps")
    alternative: ClassVar[str] = ("use Dense/Conv layers with normalized Sums; attention "
                                  "support needs a Gram-matrix kernel state (not available yet)")


