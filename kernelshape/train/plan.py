"""The trainer's layer plan: a flat chain of Dense / Conv / Act / Pool steps from a description.

The plan is never written by hand for a shaped run: `plan_from_network` walks the topology's
node list, so the trained model and the network the solver shaped are the same object.
`Plan.mlp` exists for tests and for users without the topology package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Dense:
    """Affine layer `y = x W + b` with `W` of shape (fan_in, units); `units=None` = n_classes."""

    name: str
    units: int | None


@dataclass(frozen=True)
class Conv:
    """'SAME' convolution, channels last, kernel `(*kernel_size, in, out)`, odd kernel sizes.

    Initialized Delta-orthogonal under SUO (only the centre tap is nonzero). JAX backend only.
    """

    name: str
    channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]


@dataclass(frozen=True)
class Pool:
    """`op="mean"`: global average pooling over all spatial axes; `"flatten"`: flatten them."""

    name: str
    op: str = "mean"


@dataclass(frozen=True)
class Act:
    """Elementwise `phi` (`activation`: a built-in name or an expression in x).

    `key` is the solver slot whose constants apply (default: the activation name).
    """

    name: str
    activation: str
    params: tuple[tuple[str, float], ...] = ()
    key: str = ""

    @property
    def slot(self) -> str:
        return self.key or self.activation


Layer = Dense | Conv | Act | Pool


@dataclass(frozen=True)
class Plan:
    """Sequence of layers plus the JSON description it came from (hashed for constants checks)."""

    layers: tuple[Layer, ...]
    description: dict[str, Any] = field(hash=False, compare=False)
    spec: str = ""
    input_shape: tuple[int, ...] | None = None   # per example, channels last (convnets)

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
            if isinstance(l, Dense):
                layers.append({"type": "dense", "name": l.name, "units": l.units})
            elif isinstance(l, Conv):
                layers.append({"type": "conv", "name": l.name, "channels": l.channels,
                               "kernel_size": list(l.kernel_size), "stride": list(l.stride)})
            elif isinstance(l, Pool):
                layers.append({"type": "pool", "name": l.name, "op": l.op})
            else:
                layers.append({"type": "act", "name": l.name, "activation": l.activation,
                               "params": dict(l.params), "key": l.key})
        out = {"spec": self.spec, "description": self.description, "layers": layers}
        if self.input_shape is not None:
            out["input_shape"] = list(self.input_shape)
        return out

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Plan:
        layers: list[Layer] = []
        for l in d["layers"]:
            if l["type"] == "dense":
                layers.append(Dense(l["name"], l["units"]))
            elif l["type"] == "conv":
                layers.append(Conv(l["name"], int(l["channels"]), tuple(l["kernel_size"]),
                                   tuple(l["stride"])))
            elif l["type"] == "pool":
                layers.append(Pool(l["name"], l.get("op", "mean")))
            else:
                layers.append(Act(l["name"], l["activation"], tuple(sorted(l["params"].items())),
                                  l["key"]))
        shape = d.get("input_shape")
        return Plan(tuple(layers), d["description"], d.get("spec", ""),
                    None if shape is None else tuple(int(s) for s in shape))


def description_hash(description: dict[str, Any]) -> str:
    """The constants document's `network.hash` of a description ("sha256:" + canonical JSON)."""
    from kernelshape.constants import network_hash

    return network_hash(description)
