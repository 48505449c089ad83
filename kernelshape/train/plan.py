"""The trainer's layer plan: Dense / Conv / Act / Pool / Norm / Add / Concat steps in order.

The plan is never written by hand for a shaped run: `plan_from_network` walks the topology's
node list, so the trained model and the network the solver shaped are the same object.
`Plan.mlp` exists for tests and for users without the topology package.

Every layer has `inputs`: the names of the layers (or `INPUT`, the model input) it reads.
Empty means "the previous layer in the plan" (the model input for the first layer), so a chain
needs no `inputs` at all; a DAG (residual sums, concatenations) names them. Plan order is a
topological order: every input is an earlier layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

INPUT = "input"   # the name under which layers read the model input (the topology's Input id)


@dataclass(frozen=True)
class Dense:
    """Affine layer `y = x W + b` with `W` of shape (fan_in, units); `units=None` = n_classes."""

    name: str
    units: int | None
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Conv:
    """'SAME' convolution, channels last, kernel `(*kernel_size, in, out)`, odd kernel sizes.

    Initialized Delta-orthogonal under SUO (only the centre tap is nonzero). JAX backend only.
    """

    name: str
    channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pool:
    """`op="mean"`: global average pooling over all spatial axes; `"flatten"`: flatten them."""

    name: str
    op: str = "mean"
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Act:
    """Elementwise `phi` (`activation`: a built-in name or an expression in x).

    `key` is the solver slot whose constants apply (default: the activation name).
    """

    name: str
    activation: str
    params: tuple[tuple[str, float], ...] = ()
    key: str = ""
    inputs: tuple[str, ...] = ()

    @property
    def slot(self) -> str:
        return self.key or self.activation


@dataclass(frozen=True)
class Norm:
    """The topology's LayerNorm: `x / sqrt(mean(x^2) + eps)` over the last (channel) axis, per
    location (RMS normalization, no mean subtraction), then a learnable per-channel scale
    (init 1) and offset (init 0). JAX backend only."""

    name: str
    inputs: tuple[str, ...] = ()
    eps: float = 1e-6


@dataclass(frozen=True)
class Add:
    """Fixed (not trained) weighted sum `y = sum_i weights[i] * inputs[i]` of equal shapes."""

    name: str
    weights: tuple[float, ...]
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class Concat:
    """Concatenation of `inputs` along the channel (last) axis."""

    name: str
    inputs: tuple[str, ...]


Layer = Dense | Conv | Act | Pool | Norm | Add | Concat


@dataclass(frozen=True)
class Plan:
    """Sequence of layers plus the JSON description it came from (hashed for constants checks)."""

    layers: tuple[Layer, ...]
    description: dict[str, Any] = field(hash=False, compare=False)
    spec: str = ""
    input_shape: tuple[int, ...] | None = None   # per example, channels last (convnets)

    def __post_init__(self) -> None:
        if self.is_chain:
            return
        seen = {INPUT}
        for l in self.layers:
            if isinstance(l, Add | Concat) and not l.inputs:
                raise ValueError(f"layer {l.name!r} ({type(l).__name__}) needs its inputs")
            if isinstance(l, Add) and len(l.weights) != len(l.inputs):
                raise ValueError(f"layer {l.name!r} has {len(l.weights)} weights for "
                                 f"{len(l.inputs)} inputs")
            unknown = [i for i in l.inputs if i not in seen]
            if unknown:
                raise ValueError(f"layer {l.name!r} reads {unknown}, which is not the model "
                                 f"input {INPUT!r} or an earlier layer (plan order must be "
                                 "topological)")
            if l.name in seen:
                raise ValueError(f"two layers are named {l.name!r} (or a layer is named "
                                 f"{INPUT!r}); a plan with inputs needs unique names")
            seen.add(l.name)

    @property
    def is_chain(self) -> bool:
        """True when every layer reads the previous one (no explicit inputs, sums, concats)."""
        return not any(l.inputs or isinstance(l, Add | Concat) for l in self.layers)

    @property
    def needs_jax(self) -> str:
        """Why the NumPy backend cannot train this plan ("" when it can)."""
        if not self.is_chain:
            return "residual sums / concatenations (a DAG)"
        if any(isinstance(l, Norm) for l in self.layers):
            return "LayerNorm layers"
        if self.has_spatial:
            return "Conv / pooling layers"
        return ""

    def layer_inputs(self) -> list[tuple[str, ...]]:
        """Each layer's inputs with the empty default resolved (previous layer or INPUT)."""
        out, previous = [], INPUT
        for l in self.layers:
            out.append(l.inputs or (previous,))
            previous = l.name
        return out

    @property
    def has_spatial(self) -> bool:
        """True when the plan convolves or pools (the input keeps its spatial axes)."""
        return any(isinstance(l, Conv | Pool) for l in self.layers)

    @staticmethod
    def mlp(depth: int, width: int, activation: str, **params: float) -> Plan:
        """D blocks Dense(width) -> activation, then a Dense readout (the `mlp` preset's shape)."""
        if depth < 1 or width < 1:
            raise ValueError(f"mlp needs depth >= 1 and width >= 1, got {depth=} {width=}")
        layers: list[Layer] = []
        p = tuple(sorted(params.items()))
        for i in range(depth):
            layers += [Dense(f"dense{i}", width), Act(f"act{i}", activation, p)]
        layers.append(Dense("readout", None))
        desc = {"kind": "trainer_plan", "preset": "mlp", "depth": depth, "width": width,
                "activation": activation, "params": dict(p)}
        return Plan(tuple(layers), desc, f"mlp:depth={depth},width={width},activation={activation}")

    @staticmethod
    def convnet(depth: int, channels: int, activation: str, input_shape: tuple[int, ...],
                kernel_size: int = 3, **params: float) -> Plan:
        """D blocks Conv(channels, kernel_size) -> activation, global average pooling, readout.

        `input_shape` is one example's shape, channels last, e.g. (40, 1) or (8, 8, 1).
        """
        if depth < 1 or channels < 1 or kernel_size % 2 == 0 or len(input_shape) < 2:
            raise ValueError(f"convnet needs depth >= 1, channels >= 1, an odd kernel_size and an"
                             f" input_shape with spatial axes, got {depth=} {channels=} "
                             f"{kernel_size=} {input_shape=}")
        nd = len(input_shape) - 1
        layers: list[Layer] = []
        p = tuple(sorted(params.items()))
        for i in range(depth):
            layers += [Conv(f"conv{i}", channels, (kernel_size,) * nd, (1,) * nd),
                       Act(f"act{i}", activation, p)]
        layers += [Pool("pool"), Dense("readout", None)]
        shape = tuple(int(s) for s in input_shape)
        desc = {"kind": "trainer_plan", "preset": "convnet", "depth": depth,
                "channels": channels, "kernel_size": kernel_size, "activation": activation,
                "params": dict(p), "input_shape": list(shape)}
        spec = (f"convnet:depth={depth},channels={channels},kernel_size={kernel_size},"
                f"activation={activation},input_shape={'x'.join(map(str, shape))}")
        return Plan(tuple(layers), desc, spec, shape)

    @property
    def activation_names(self) -> list[str]:
        """Distinct activation slots (constants keys), in order of first use."""
        return list(dict.fromkeys(a.slot for a in self.layers if isinstance(a, Act)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (used in run configs): the description plus the flat layers."""
        layers: list[dict[str, Any]] = []
        for l in self.layers:
            entry: dict[str, Any]
            if isinstance(l, Dense):
                entry = {"type": "dense", "name": l.name, "units": l.units}
            elif isinstance(l, Conv):
                entry = {"type": "conv", "name": l.name, "channels": l.channels,
                         "kernel_size": list(l.kernel_size), "stride": list(l.stride)}
            elif isinstance(l, Pool):
                entry = {"type": "pool", "name": l.name, "op": l.op}
            elif isinstance(l, Norm):
                entry = {"type": "norm", "name": l.name, "eps": l.eps}
            elif isinstance(l, Add):
                entry = {"type": "add", "name": l.name, "weights": list(l.weights)}
            elif isinstance(l, Concat):
                entry = {"type": "concat", "name": l.name}
            else:
                entry = {"type": "act", "name": l.name, "activation": l.activation,
                         "params": dict(l.params), "key": l.key}
            if l.inputs:                      # chains keep their inputs-free JSON
                entry["inputs"] = list(l.inputs)
            layers.append(entry)
        out = {"spec": self.spec, "description": self.description, "layers": layers}
        if self.input_shape is not None:
            out["input_shape"] = list(self.input_shape)
        return out

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Plan:
        layers: list[Layer] = []
        for l in d["layers"]:
            inputs = tuple(str(i) for i in l.get("inputs", ()))
            if l["type"] == "dense":
                layers.append(Dense(l["name"], l["units"], inputs))
            elif l["type"] == "conv":
                layers.append(Conv(l["name"], int(l["channels"]), tuple(l["kernel_size"]),
                                   tuple(l["stride"]), inputs))
            elif l["type"] == "pool":
                layers.append(Pool(l["name"], l.get("op", "mean"), inputs))
            elif l["type"] == "norm":
                layers.append(Norm(l["name"], inputs, float(l.get("eps", 1e-6))))
            elif l["type"] == "add":
                layers.append(Add(l["name"], tuple(float(w) for w in l["weights"]), inputs))
            elif l["type"] == "concat":
                layers.append(Concat(l["name"], inputs))
            elif l["type"] == "act":
                layers.append(Act(l["name"], l["activation"], tuple(sorted(l["params"].items())),
                                  l["key"], inputs))
            else:
                raise ValueError(f"unknown plan layer type {l['type']!r}")
        shape = d.get("input_shape")
        return Plan(tuple(layers), d["description"], d.get("spec", ""),
                    None if shape is None else tuple(int(s) for s in shape))


def description_hash(description: dict[str, Any]) -> str:
    """The constants document's `network.hash` of a description ("sha256:" + canonical JSON)."""
    from kernelshape.constants import network_hash

    return network_hash(description)
