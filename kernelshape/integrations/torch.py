"""Shape a PyTorch model you already have: trace it, solve, apply the constants in place.

```python
from kernelshape.integrations.torch import shape_module, apply_solution
solution = shape_module(model, example_input, method="dks")
shaped = apply_solution(model, solution)     # a new nn.Module; train it as usual
```

``network_from_module`` traces the module with ``torch.fx`` and maps every node onto a
topology layer: ``nn.Linear`` -> Dense, ``nn.Conv1d/2d/3d`` (odd kernel, ``padding =
kernel // 2``, no dilation, no groups) -> Conv, activation modules and functions ->
Nonlinearity, ``nn.Flatten`` / ``torch.flatten`` / ``AdaptiveAvgPool(1)`` -> Flatten /
GlobalAvgPool, ``nn.LayerNorm`` -> LayerNorm, ``torch.cat(dim=1)`` -> ChannelConcat, ``a * x +
b * y`` with constants ``a^2 + b^2 = 1`` -> WeightedSum. A plain residual ``x + f(x)`` is
refused unless ``shortcut_weight=w`` is given, which rewrites it into ``w x + sqrt(1 - w^2)
f(x)`` (this changes the model). BatchNorm, max pooling and Dropout in training mode are
refused with what to use instead. Tensors are NCHW in torch and channels-last in the
network description.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F  # noqa: N812 (the usual alias)
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from kernelshape.engine.activations import Activation, Transform, activation
from kernelshape.runtime.pytorch import initialize_, per_location_normalization, transformed
from kernelshape.solve import Solution, shape
from kernelshape.topology import Network
from kernelshape.topology.graph import INPUT_ID, Node
from kernelshape.topology.layers import (
    ChannelConcat,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    Input,
    Layer,
    LayerNorm,
    Nonlinearity,
    WeightedSum,
)

SUM_TOLERANCE = 1e-6  # |a^2 + b^2 - 1| accepted as a normalized sum

ACTIVATION_MODULES: dict[type, Callable[[nn.Module], Activation]] = {
    nn.Tanh: lambda m: activation("tanh"),
    nn.ReLU: lambda m: activation("relu"),
    nn.LeakyReLU: lambda m: activation("leaky_relu", negative_slope=m.negative_slope),
    nn.GELU: lambda m: activation("gelu" if m.approximate == "tanh" else "gelu_exact"),
    nn.SiLU: lambda m: activation("swish"),
    nn.Sigmoid: lambda m: activation("sigmoid"),
    nn.ELU: lambda m: activation("elu", alpha=m.alpha),
    nn.Softplus: lambda m: activation("softplus") if m.beta == 1 else
    activation(f"softplus({m.beta!r}*x)/{m.beta!r}"),
}
ACTIVATION_FUNCTIONS: dict[Callable, str] = {
    torch.tanh: "tanh", F.tanh: "tanh", torch.relu: "relu", F.relu: "relu",
    torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.silu: "swish", F.softplus: "softplus",
    F.gelu: "gelu_exact", F.leaky_relu: "leaky_relu", F.elu: "elu",
}
REFUSED = {
    nn.BatchNorm1d: "BatchNorm is what DKS/TAT replace; remove it (kernelshape trains without "
                    "normalization layers)",
    nn.BatchNorm2d: "BatchNorm is what DKS/TAT replace; remove it",
    nn.BatchNorm3d: "BatchNorm is what DKS/TAT replace; remove it",
    nn.MaxPool1d: "max pooling has no kernel map; use a strided Conv to downsample",
    nn.MaxPool2d: "max pooling has no kernel map; use a strided Conv to downsample",
    nn.MaxPool3d: "max pooling has no kernel map; use a strided Conv to downsample",
}


class ModuleError(ValueError):
    """A module the kernel maps do not cover; the message names its path and the reason."""


def _channels_last(shape: torch.Size) -> tuple[int, ...]:
    """Per-example shape, channels last (torch's NC... order -> ...C)."""
    dims = tuple(int(d) for d in shape[1:])
    return dims if len(dims) <= 1 else dims[1:] + dims[:1]


def _callable_name(node: torch.fx.Node, modules: Mapping[str, nn.Module]) -> str | None:
    """The class name of a called module or the name of a called function / method."""
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    if node.op in ("call_function", "call_method"):
        return getattr(node.target, "__name__", str(node.target))
    return None


def _activation_of(node: torch.fx.Node, modules: Mapping[str, nn.Module],
                   custom: Mapping[str, str]) -> Activation | None:
    name = _callable_name(node, modules)
    if name in custom:
        return activation(custom[name])
    if node.op == "call_module" and type(modules[node.target]) in ACTIVATION_MODULES:
        return ACTIVATION_MODULES[type(modules[node.target])](modules[node.target])
    if node.op == "call_function" and node.target in ACTIVATION_FUNCTIONS:
        name = ACTIVATION_FUNCTIONS[node.target]
        kwargs = dict(node.kwargs)
        if name == "leaky_relu":
            slope = node.args[1] if len(node.args) > 1 else kwargs.get("negative_slope", 0.01)
            return activation(name, negative_slope=float(slope))
        if name == "gelu" and kwargs.get("approximate", "none") == "tanh":
            return activation("gelu")
        return activation(name)
    if node.op == "call_method" and node.target in ("tanh", "relu", "sigmoid"):
        return activation(str(node.target))
    return None


def _conv(path: str, module: nn.Module) -> Conv:
    kernel = tuple(int(k) for k in module.kernel_size)
    stride = tuple(int(s) for s in module.stride)
    problems = []
    if module.groups != 1:
        problems.append(f"groups = {module.groups} (only 1 is covered)")
    if any(d != 1 for d in module.dilation):
        problems.append(f"dilation = {tuple(module.dilation)} (only 1 is covered)")
    if any(k % 2 == 0 for k in kernel):
        problems.append(f"kernel_size = {kernel} (Delta initialization needs odd sizes)")
    padding = module.padding
    if padding != "same" and tuple(padding) != tuple(k // 2 for k in kernel):
        problems.append(f"padding = {padding} (use kernel_size // 2 or 'same')")
    if module.padding_mode != "zeros":
        problems.append(f"padding_mode = {module.padding_mode!r} (use 'zeros')")
    if problems:
        raise ModuleError(f"{path} ({module}): " + "; ".join(problems))
    return Conv(channels=int(module.out_channels), kernel_size=kernel, stride=stride)


def _weighted_operand(node: Any) -> tuple[Any, float]:
    """``(operand, weight)`` of ``weight * operand`` (a constant multiple), else ``(node, 1)``."""
    if isinstance(node, torch.fx.Node) and node.op == "call_function" and \
            node.target in (operator.mul, torch.mul):
        a, b = node.args
        if isinstance(a, int | float) and isinstance(b, torch.fx.Node):
            return b, float(a)
        if isinstance(b, int | float) and isinstance(a, torch.fx.Node):
            return a, float(b)
    return node, 1.0


def _ancestors(node: torch.fx.Node) -> set[torch.fx.Node]:
    seen, stack = set(), [node]
    while stack:
        for parent in stack.pop().all_input_nodes:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


class _Tracer:
    """Walks the fx graph once, producing topology nodes (residuals as the rewritten sums)."""

    def __init__(self, gm: torch.fx.GraphModule, shortcut_weight: float | None,
                 custom: Mapping[str, str]) -> None:
        self.gm = gm
        self.custom = custom
        self.modules = dict(gm.named_modules())
        self.shortcut_weight = shortcut_weight
        self.ids: dict[torch.fx.Node, str] = {}
        self.nodes: list[Node] = []

    def add(self, fx_node: torch.fx.Node, layer: Layer, parents: list[Any]) -> None:
        ids = tuple(self.ids[p] for p in parents)
        self.ids[fx_node] = fx_node.name
        self.nodes.append(Node(fx_node.name, layer, ids))

    def through(self, fx_node: torch.fx.Node, parent: torch.fx.Node) -> None:
        self.ids[fx_node] = self.ids[parent]  # a no-op for the kernel (identity, dropout off)

    def run(self) -> tuple[list[Node], str]:
        output = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if self.nodes:
                    raise ModuleError("the model takes several inputs; one is supported")
                shape = _channels_last(node.meta["tensor_meta"].shape)
                self.ids[node] = INPUT_ID
                self.nodes.append(Node(INPUT_ID, Input(shape=shape), ()))
            elif node.op == "output":
                output = node.args[0]
            elif node.op == "get_attr":
                raise ModuleError(f"{node.target}: the forward pass reads a parameter directly; "
                                  "only module calls and tensor functions are covered")
            else:
                self.visit(node)
        if not isinstance(output, torch.fx.Node):
            raise ModuleError("the model must return a single tensor")
        return self.nodes, self.ids[output]

    def visit(self, node: torch.fx.Node) -> None:
        act = _activation_of(node, self.modules, self.custom)
        tensor_args = [a for a in node.args if isinstance(a, torch.fx.Node)]
        if act is not None:
            self.add(node, Nonlinearity(activation=act, key=act.name), tensor_args[:1])
            return
        if node.op == "call_module":
            self.visit_module(node, self.modules[node.target])
        elif node.op == "call_function":
            self.visit_function(node, tensor_args)
        elif node.op == "call_method":
            self.visit_method(node, tensor_args)

    def visit_module(self, node: torch.fx.Node, module: nn.Module) -> None:
        path = str(node.target)
        parent = node.args[0]
        if isinstance(module, nn.Linear):
            self.add(node, Dense(width=int(module.out_features)), [parent])
        elif isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            self.add(node, _conv(path, module), [parent])
        elif isinstance(module, nn.Flatten):
            self.add(node, Flatten(), [parent])
        elif isinstance(module, nn.AdaptiveAvgPool1d | nn.AdaptiveAvgPool2d |
                        nn.AdaptiveAvgPool3d):
            size = module.output_size
            sizes = size if isinstance(size, tuple) else (size,)
            if any(s != 1 for s in sizes):
                raise ModuleError(f"{path} ({module}): only global average pooling "
                                  "(output_size 1) is covered")
            self.add(node, GlobalAvgPool(), [parent])
        elif isinstance(module, nn.LayerNorm):
            self.add(node, LayerNorm(), [parent])
        elif isinstance(module, nn.Identity) or (isinstance(module, nn.Dropout) and
                                                 not module.training):
            self.through(node, parent)
        elif isinstance(module, nn.Dropout):
            raise ModuleError(f"{path} ({module}): Dropout in training mode changes the kernel; "
                              "call model.eval() before tracing, or remove it")
        elif type(module) in REFUSED:
            raise ModuleError(f"{path} ({module}): {REFUSED[type(module)]}")
        else:
            raise ModuleError(f"{path} ({type(module).__name__}): not covered by the kernel "
                              "maps (supported: Linear, Conv1d/2d/3d, activations, Flatten, "
                              "AdaptiveAvgPool(1), LayerNorm, Identity, eval-mode Dropout); an "
                              "elementwise activation can be declared with activations="
                              f"{{{type(module).__name__!r}: 'expression in x'}}")

    def visit_function(self, node: torch.fx.Node, tensors: list[torch.fx.Node]) -> None:
        target = node.target
        if target is torch.flatten:
            self.add(node, Flatten(), tensors[:1])
        elif target in (operator.mul, torch.mul) and len(tensors) == 1:
            if not all(isinstance(u, torch.fx.Node) and u.op == "call_function" and
                       u.target in (operator.add, torch.add) for u in node.users):
                raise ModuleError(f"{node.name}: a constant multiple is covered only as a term "
                                  "of a normalized sum a*x + b*y")
            self.ids[node] = self.ids[tensors[0]]
        elif target in (operator.add, torch.add) and len(tensors) == 2:
            self.visit_sum(node)
        elif target is torch.cat:
            operands = node.args[0]
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            if dim not in (1, -len(operands[0].meta["tensor_meta"].shape) + 1):
                raise ModuleError(f"{node.name}: torch.cat is covered along the channel axis "
                                  f"(dim=1) only, got dim={dim}")
            channels = tuple(int(o.meta["tensor_meta"].shape[1]) for o in operands)
            self.add(node, ChannelConcat(channels=channels), list(operands))
        else:
            name = getattr(target, "__name__", str(target))
            raise ModuleError(f"{node.name}: the function {name} is not covered by the kernel "
                              f"maps; an elementwise function can be declared with activations="
                              f"{{{name!r}: 'expression in x'}}")

    def visit_method(self, node: torch.fx.Node, tensors: list[torch.fx.Node]) -> None:
        if node.target in ("view", "reshape", "flatten"):
            shape = node.meta["tensor_meta"].shape
            if len(shape) != 2:
                raise ModuleError(f"{node.name}: .{node.target} is covered only as a flatten to "
                                  "(batch, features)")
            self.add(node, Flatten(), tensors[:1])
        else:
            raise ModuleError(f"{node.name}: the tensor method .{node.target} is not covered")

    def visit_sum(self, node: torch.fx.Node) -> None:
        (x, a), (y, b) = (_weighted_operand(arg) for arg in node.args[:2])
        if abs(a * a + b * b - 1.0) <= SUM_TOLERANCE:
            self.add(node, WeightedSum(weights=(a, b)), [x, y])
            return
        if (a, b) != (1.0, 1.0):
            raise ModuleError(f"{node.name}: the sum {a:g}*x + {b:g}*y is not normalized "
                              "(a^2 + b^2 must be 1 for the kernel map to hold)")
        w = self.shortcut_weight
        if w is None:
            raise ModuleError(f"{node.name}: the residual x + f(x) is not a normalized sum; "
                              "pass shortcut_weight=w to rewrite it into w*x + sqrt(1 - w^2)*f(x) "
                              "(this changes the model)")
        shortcut_first = x in _ancestors(y)
        weights = (w, math.sqrt(1 - w * w)) if shortcut_first else (math.sqrt(1 - w * w), w)
        self.add(node, WeightedSum(weights=weights), [x, y])


class _LeafTracer(torch.fx.Tracer):
    """torch.fx's tracer, keeping modules of the declared activation classes as calls."""

    def __init__(self, leaves: frozenset[str]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return type(m).__name__ in self.leaves or super().is_leaf_module(m,
                                                                        module_qualified_name)


def _symbolic_trace(model: nn.Module, leaves: frozenset[str]) -> torch.fx.GraphModule:
    tracer = _LeafTracer(leaves)
    return torch.fx.GraphModule(model, tracer.trace(model), type(model).__name__)


def _traced(model: nn.Module, example_input: torch.Tensor,
            leaves: frozenset[str]) -> torch.fx.GraphModule:
    try:
        gm = _symbolic_trace(model, leaves)
    except Exception as exc:  # noqa: BLE001 (torch.fx raises many kinds on untraceable code)
        raise ModuleError(f"torch.fx cannot trace this model ({type(exc).__name__}: {exc}); "
                          "data-dependent control flow is not supported: describe the network "
                          "with kernelshape.topology instead") from None
    ShapeProp(gm).propagate(example_input)
    return gm


def network_from_module(model: nn.Module, example_input: torch.Tensor,
                        shortcut_weight: float | None = None,
                        activations: Mapping[str, str] | None = None) -> Network:
    """The topology ``Network`` of ``model`` (module docstring); ``example_input`` is one
    batch (its shape sets the input shape). ``activations`` maps the class name of an
    elementwise module, or the name of an elementwise function, that is not built in to the
    kernelshape expression it computes (e.g. ``{"Mish": "x*tanh(softplus(x))"}``)."""
    if shortcut_weight is not None and not 0.0 <= shortcut_weight < 1.0:
        raise ValueError(f"shortcut_weight must be in [0, 1), got {shortcut_weight!r}")
    custom = dict(activations or {})
    gm = _traced(model, example_input, frozenset(custom))
    nodes, output = _Tracer(gm, shortcut_weight, custom).run()
    return Network(nodes, [output], name=type(model).__name__)


def shape_module(model: nn.Module, example_input: torch.Tensor, method: str = "dks",
                 shortcut_weight: float | None = None,
                 activations: Mapping[str, str] | None = None, **targets: float) -> Solution:
    """``kernelshape.solve.shape`` on the traced network (``solution.network``)."""
    net = network_from_module(model, example_input, shortcut_weight, activations)
    return shape(net, method, **targets)


class PerLocationNormalization(nn.Module):
    """Every input location's channel vector scaled to ``mean(x**2) = 1`` (channels on axis 1;
    no extra coordinate, so the model's first layer keeps its size)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axis = 1 if x.dim() > 2 else -1
        return per_location_normalization(x, homog_mode="off", feature_axis=axis)


class ShapedActivation(nn.Module):
    """``gamma * (phi(alpha * x + beta) + delta)`` around a torch activation ``phi``."""

    def __init__(self, phi: Callable[[torch.Tensor], torch.Tensor], transform: Transform,
                 name: str) -> None:
        super().__init__()
        self.name = name
        self.constants = transform.as_dict()
        self._fn = transformed(phi, self.constants)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(x)

    def extra_repr(self) -> str:
        return f"{self.name!r}, " + ", ".join(f"{k}={v!r}" for k, v in self.constants.items())


def _base_callable(node: torch.fx.Node, gm: torch.fx.GraphModule,
                   transform: Transform) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's own elementwise call at ``node`` as a function of its input (TAT's Leaky
    ReLU: ``leaky_relu`` with the solved slope instead)."""
    if transform.negative_slope is not None:
        slope = float(transform.negative_slope)
        return lambda x: F.leaky_relu(x, slope)
    rest, kwargs = node.args[1:], dict(node.kwargs)
    if node.op == "call_module":
        return gm.get_submodule(str(node.target))
    if node.op == "call_method":
        return lambda x: getattr(x, str(node.target))(*rest, **kwargs)
    return lambda x: node.target(x, *rest, **kwargs)


def apply_solution(model: nn.Module, solution: Solution,
                   activations: Mapping[str, str] | None = None,
                   generator: torch.Generator | None = None) -> nn.Module:
    """A copy of ``model`` with every traced activation replaced by its shaped form, Linear
    weights SUO and Conv weights Delta-orthogonal (``[out, in, ...]`` layout) with zero biases,
    residual sums rewritten as traced, and a ``PerLocationNormalization`` in front.

    ``solution.network`` is the network ``shape_module`` traced (with the shortcut rewrites);
    ``activations`` is the mapping given to ``shape_module`` (declared modules stay calls).
    """
    net = solution.network
    if not isinstance(net, Network):
        raise ValueError("the solution records no traced network; use shape_module(...)")
    gm = _symbolic_trace(copy.deepcopy(model), frozenset(activations or {}))
    by_name = {node.id: node for node in net.nodes}
    graph = gm.graph
    for node in list(graph.nodes):
        if node.name not in by_name:
            continue
        layer = by_name[node.name].layer
        if isinstance(layer, Nonlinearity):
            act = layer.resolve()
            transform = solution.transforms[layer.activation_key]
            module = ShapedActivation(_base_callable(node, gm, transform), transform, act.name)
            name = f"shaped_{node.name}"
            gm.add_submodule(name, module)
            with graph.inserting_after(node):
                new = graph.call_module(name, (node.args[0],))
            node.replace_all_uses_with(new)
            graph.erase_node(node)
        elif isinstance(layer, WeightedSum) and node.target in (operator.add, torch.add):
            x, y = (_weighted_operand(arg)[0] for arg in node.args[:2])
            a, b = layer.weights
            with graph.inserting_after(node):
                left = graph.call_function(operator.mul, (x, a))
            with graph.inserting_after(left):
                right = graph.call_function(operator.mul, (y, b))
            with graph.inserting_after(right):
                total = graph.call_function(operator.add, (left, right))
            node.replace_all_uses_with(total)
            graph.erase_node(node)
    graph.eliminate_dead_code()
    gm.recompile()
    initialize_(gm, generator=generator)
    return nn.Sequential(PerLocationNormalization(), gm)
