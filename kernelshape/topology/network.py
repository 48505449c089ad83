"""``Network``: the validated graph of a description, its kernel maps and subnetwork functions.

One ``Network`` drives everything downstream: the kernel maps (``cmap``, ``qmap``, per-node
``kernel_states``), the solvers (``subnet_max``, ``max_slope``, ``max_curvature``) and the
trainer (``nodes``: topologically ordered, each with its layer, parents, shape and weight
sharing).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import sympy as sp

from kernelshape.engine.formulas import C as C_SYMBOL
from kernelshape.engine.series import TruncatedSeries
from kernelshape.topology.build import expand
from kernelshape.topology.combinators import Description
from kernelshape.topology.graph import INPUT_ID, Node, ancestors_until
from kernelshape.topology.layers import Input, Nonlinearity, Shape
from kernelshape.topology.serialization import description_from_dict, network_to_dict
from kernelshape.topology.state import KernelState
from kernelshape.topology.subnetworks import SubnetFunctions, Subnetwork
from kernelshape.topology.validation import kernel_refusal, validate

if TYPE_CHECKING:
    from kernelshape.engine.activations import Activation, Transform

SubnetMaxFn = Callable[[float, Callable[[float], float]], float]
MAX_ORDER = 2


def network(body: Description, input_shape: Shape | int, *, name: str | None = None,
            spec: str | None = None) -> Network:
    """Build and validate the network ``body`` applied to inputs of shape ``input_shape``.

    ``input_shape`` excludes the batch axis, channels last (e.g. ``(784,)`` or ``(32, 32, 3)``);
    ``spec`` is the SPEC string that rebuilds it, if any (presets set it).
    """
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    nodes, outputs = expand(body, shape)
    return Network(nodes, outputs, name=name, spec=spec)


class Network:
    """A validated network description (immutable).

    ``nodes`` are in topological order, ``nodes[0]`` is the input node ``"input"``.
    """

    def __init__(self, nodes: Sequence[Node], outputs: Sequence[str], *, name: str | None = None,
                 spec: str | None = None, subnet_max_override: SubnetMaxFn | None = None) -> None:
        self._nodes = tuple(validate(nodes, outputs))
        self._by_id = {node.id: node for node in self._nodes}
        self._outputs = tuple(outputs)
        self.name = name
        self.spec = spec
        self._override = subnet_max_override
        #: why this network has no kernel maps (a trainer-only layer such as BatchNorm), or None
        self.kernel_refusal = kernel_refusal(self._nodes)

    # --- structure ------------------------------------------------------------------------
    @property
    def nodes(self) -> tuple[Node, ...]:
        """All nodes, parents before children; ``nodes[0]`` is the input."""
        return self._nodes

    @property
    def outputs(self) -> tuple[str, ...]:
        return self._outputs

    @property
    def input_shape(self) -> Shape:
        return self._nodes[0].shape

    def node(self, node_id: str) -> Node:
        try:
            return self._by_id[node_id]
        except KeyError:
            raise ValueError(f"no node {node_id!r} in the network") from None

    def with_input_shape(self, input_shape: Shape | int) -> Network:
        """The same description applied to inputs of another shape (e.g. with Per-Location
        Normalization's extra channel); shapes are re-derived and re-checked."""
        shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
        nodes = [Node(INPUT_ID, Input(shape), ()) if n.id == INPUT_ID else
                 Node(n.id, n.layer, n.parents, share=n.share) for n in self._nodes]
        return Network(nodes, self._outputs, name=self.name, spec=self.spec,
                       subnet_max_override=self._override)

    def check_kernel(self) -> None:
        """Raise ValueError if the network has no kernel maps (:attr:`kernel_refusal`)."""
        if self.kernel_refusal is not None:
            raise ValueError(self.kernel_refusal)

    def children(self, node_id: str) -> tuple[str, ...]:
        """Ids of the nodes that take ``node_id``'s output as an input."""
        self.node(node_id)
        return tuple(n.id for n in self._nodes if node_id in n.parents)

    @property
    def nonlinear_nodes(self) -> tuple[Node, ...]:
        return tuple(n for n in self._nodes if isinstance(n.layer, Nonlinearity))

    @cached_property
    def activations(self) -> dict[str, Activation]:
        """Activation key -> the (untransformed) activation of the layers with that key."""
        return {n.layer.activation_key: n.layer.resolve()  # type: ignore[attr-defined]
                for n in self.nonlinear_nodes}

    @property
    def activation_keys(self) -> tuple[str, ...]:
        """The solver slots, in order of first use."""
        return tuple(self.activations)

    def summary(self) -> str:
        """One line per node: id, layer, output shape, parents (and weight sharing)."""
        rows = [(n.id, n.layer.describe(), "x".join(map(str, n.shape)), ", ".join(n.parents)
                 + (f"  [shares {n.share}]" if n.share else "")) for n in self._nodes]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        head = f"{self.name or 'network'}: {len(self._nodes)} nodes, outputs {list(self.outputs)}"
        return "\n".join([head] + [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  <- {d}"
                                   for a, b, c, d in rows])

    def __repr__(self) -> str:
        what = self.spec or self.name or "network"
        return (f"Network({what!r}, {len(self._nodes)} nodes, "
                f"{len(self.nonlinear_nodes)} nonlinear layers, outputs={list(self.outputs)})")

    # --- kernel maps ----------------------------------------------------------------------
    def transformed_activations(self,
                                transforms: Mapping[str, Any] | None) -> dict[str, Activation]:
        """Activation key -> activation with ``transforms[key]`` applied (Transform or dict)."""
        acts = dict(self.activations)
        for key, transform in (transforms or {}).items():
            if key not in acts:
                raise ValueError(f"transforms has key {key!r}, but the network's activation keys "
                                 f"are {list(acts)}")
            acts[key] = acts[key].transformed(transform)
        return acts

    def kernel_states(self, c: Any = 0.0, q1: Any = 1.0, q2: Any = 1.0, *,
                      transforms: Mapping[str, Transform] | None = None,
                      order: int = 0) -> dict[str, KernelState]:
        """``KernelState`` of every node for a network input pair ``(q1, q2, c)``.

        ``c_jet`` holds ``d^k c / d c_in^k`` for ``k = 1..order`` (chain rule through every layer).
        """
        _check_order(order)
        c = np.asarray(c, dtype=float)
        one = np.ones_like(c)
        start = KernelState(np.asarray(q1, dtype=float), np.asarray(q2, dtype=float), c,
                            (one, 0.0 * one)[:order])
        return self._propagate(start, transforms, None)

    def cmap(self, c: Any, q1: Any = 1.0, q2: Any = 1.0, *,
             transforms: Mapping[str, Transform] | None = None, order: int = 0,
             node: str | None = None) -> np.ndarray | float:
        """``d^order/dc^order`` of the network C map ``C_f(c; q1, q2)`` (vectorized over c).

        ``node`` selects the node whose map is returned (default: the network output);
        ``transforms`` maps activation keys to Transforms (e.g. a solver's solution).
        """
        _check_order(order)
        target = self._target(node)
        c = np.asarray(c, dtype=float)
        one = np.ones_like(c)
        start = KernelState(np.asarray(q1, dtype=float), np.asarray(q2, dtype=float), c,
                            (one, 0.0 * one)[:order])
        state = self._propagate(start, transforms, target)[target]
        return _plain(state.c_jet[order - 1] if order else state.c)

    def cmap_series(self, order: int, q: float = 1.0, *,
                    transforms: Mapping[str, Transform] | None = None,
                    node: str | None = None) -> TruncatedSeries:
        """The network C map at equal input q as a power series cut after ``c^order``
        (float64), composed layer by layer from every activation's certified series
        (``engine.series``); ``.tail_bound()`` bounds its error on ``|c| <= 1``."""
        target = self._target(node)
        qs = np.asarray(float(q))
        start = KernelState(qs, qs, TruncatedSeries.identity(order))
        return self._propagate(start, transforms, target)[target].c

    def cmap_formula(self, q: float = 1.0, *,
                     transforms: Mapping[str, Transform] | None = None,
                     node: str | None = None, simplify: bool = True) -> sp.Expr:
        """The network C map at equal input q as a nested closed-form expression in ``c``
        (``engine.formulas.C``): every nonlinear layer's formula composed through the
        description (ValueError naming the first activation without one)."""
        target = self._target(node)
        qs = np.asarray(float(q))
        start = KernelState(qs, qs, C_SYMBOL)
        expr = self._propagate(start, transforms, target)[target].c
        expr = expr.xreplace({f: sp.Integer(int(f)) for f in expr.atoms(sp.Float)
                              if float(f).is_integer()})  # 1.0 from float q arithmetic
        return sp.simplify(expr) if simplify else expr

    def qmap(self, q: Any, *, transforms: Mapping[str, Transform] | None = None,
             order: int = 0, node: str | None = None) -> np.ndarray | float:
        """``d^order/dq^order`` of the network Q map ``Q_f(q)`` (vectorized over q)."""
        _check_order(order)
        target = self._target(node)
        q = np.asarray(q, dtype=float)
        one = np.ones_like(q)
        start = KernelState(q, q, None, (), (one, 0.0 * one)[:order])
        state = self._propagate(start, transforms, target)[target]
        return _plain(state.q_jet[order - 1] if order else state.q1)

    def _target(self, node: str | None) -> str:
        if node is not None:
            return self.node(node).id
        if len(self._outputs) > 1:
            raise ValueError(f"the network has several outputs {list(self._outputs)}; pass "
                             "node=... to choose one")
        return self._outputs[0]

    def _propagate(self, start: KernelState, transforms: Mapping[str, Transform] | None,
                   target: str | None, origin: str = INPUT_ID) -> dict[str, KernelState]:
        """Run every layer's ``kernel_fn`` in order from ``start``, the state at node
        ``origin`` (the input, or the start of a subnetwork: then only the nodes on paths from
        ``origin`` to ``target`` run); keep all states or only ``target``'s."""
        self.check_kernel()
        acts = self.transformed_activations(transforms)
        nodes = self._nodes[1:]
        if origin != INPUT_ID:
            assert target is not None
            members = ancestors_until(target, origin, {n.id: n.parents for n in self._nodes})
            nodes = tuple(n for n in self._nodes if n.id in members and n.id != origin)
        remaining = {node.id: 0 for node in self._nodes}
        for node in nodes:
            for parent in node.parents:
                remaining[parent] += 1
        states: dict[str, KernelState] = {origin: start}
        for node in nodes:
            inputs = [states[p] for p in node.parents]
            states[node.id] = node.layer.kernel_fn(inputs, acts)
            if target is not None:
                for parent in node.parents:
                    remaining[parent] -= 1
                    if remaining[parent] == 0 and parent != target:
                        del states[parent]
            if node.id == target:
                return {target: states[target]}
        return states if target is None else {target: states[target]}

    def q_values(self, q_in: float = 1.0, *,
                 transforms: Mapping[str, Transform] | None = None) -> dict[str, float]:
        """q of every node for network inputs with ``q = q_in`` (Q maps only: cheap)."""
        q = np.asarray(float(q_in))
        states = self._propagate(KernelState(q, q, None), transforms, None)
        return {k: float(np.asarray(v.q1)) for k, v in states.items()}

    def subnetwork_cmap(self, sub: Subnetwork, c: Any, *,
                        transforms: Mapping[str, Transform] | None = None,
                        q_in: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """``(C_f(c), C_f'(c))`` of subnetwork ``sub`` at the points ``c``: the layers' kernel
        maps from ``sub.start`` to ``sub.end``, both inputs at the q the network gives
        ``sub.start`` for network inputs with ``q = q_in`` (the map the DKS theorems use)."""
        c = np.asarray(c, dtype=float)
        q = np.asarray(self.q_values(q_in, transforms=transforms)[sub.start])
        one = np.ones_like(c)
        state = self._propagate(KernelState(q, q, c, (one,)), transforms, sub.end,
                                sub.start)[sub.end]
        value = np.broadcast_to(np.asarray(state.c, dtype=float), c.shape)
        slope = np.broadcast_to(np.asarray(state.c_jet[0], dtype=float), c.shape)
        return np.array(value), np.array(slope)

    # --- subnetworks ----------------------------------------------------------------------
    @cached_property
    def _subnet(self) -> SubnetFunctions:
        self.check_kernel()
        return SubnetFunctions(self._nodes, self._outputs)

    def subnetworks(self, prefixes: bool = False) -> tuple[Subnetwork, ...]:
        """The subnetworks that ``subnet_max`` maximizes over (see docs/topology.md), and
        with ``prefixes`` the input -> every nonlinear layer not already an end."""
        subs = self._subnet.subnetworks
        if not prefixes:
            return subs
        ends = {s.end for s in subs if s.start == INPUT_ID}
        return subs + tuple(Subnetwork("prefix", INPUT_ID, n.id) for n in self.nonlinear_nodes
                            if n.id not in ends)

    def subnet_values(self, x: Any, r: Callable) -> dict[str, np.ndarray | float]:
        """Label -> value of each subnetwork's C-map program started at ``x`` with local map r."""
        x = _input(x)
        values = self._subnet.values(x, r)
        return {sub.label: _plain(v) for sub, v in zip(self._subnet.subnetworks, values,
                                                      strict=True)}

    def subnet_max(self, x: Any, r: Callable) -> np.ndarray | float:
        """``M_{f,r}(x)``: max over subnetworks of the C-map program from x with every nonlinear
        layer replaced by r (r must accept arrays when x is an array)."""
        self.check_kernel()
        if self._override is not None:
            return _elementwise(lambda v: self._override(v, r), x)  # type: ignore[misc]
        return _plain(self._subnet.subnet_max(_input(x), r))

    def max_slope(self, xi: Any) -> np.ndarray | float:
        """Maximal slope function ``mu(xi) = M_{f, y -> xi*y}(1)`` (vectorized over xi)."""
        self.check_kernel()
        if self._override is not None:
            return _elementwise(lambda v: self._override(1.0, lambda y: v * y), xi)  # type: ignore[misc]
        return _plain(self._subnet.max_slope(xi))

    def max_curvature(self, tau: Any) -> np.ndarray | float:
        """Maximal curvature function ``M_{f, y -> y + tau}(0)`` (vectorized over tau)."""
        self.check_kernel()
        if self._override is not None:
            return _elementwise(lambda v: self._override(0.0, lambda y: y + v), tau)  # type: ignore[misc]
        return _plain(self._subnet.max_curvature(tau))

    def with_subnet_max(self, subnet_max: SubnetMaxFn | None) -> Network:
        """A copy whose ``subnet_max`` (and so ``max_slope``, ``max_curvature``) is the given
        hand-written ``subnet_max(x, r)`` (dks convention); ``None`` restores the derived one."""
        return Network(self._nodes, self._outputs, name=self.name, spec=self.spec,
                       subnet_max_override=subnet_max)

    @property
    def has_subnet_max_override(self) -> bool:
        return self._override is not None

    # --- serialization --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (see ``kernelshape.topology.serialization``)."""
        if self._override is not None:
            warnings.warn("the user-supplied subnet_max override is Python code and is not saved "
                          "with the network description", UserWarning, stacklevel=2)
        return network_to_dict(self)

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Network:
        """The network of a JSON description (re-validated)."""
        nodes, outputs, name, spec = description_from_dict(data)
        return Network(nodes, outputs, name=name, spec=spec)

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str) -> None:
        """Write the JSON description to ``path``."""
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(self.to_json() + "\n")


def _check_order(order: int) -> None:
    if isinstance(order, bool) or order not in range(MAX_ORDER + 1):
        raise ValueError(f"order must be 0, 1 or 2, got {order!r}")


def _input(x: Any) -> np.ndarray | float:
    x = np.asarray(x, dtype=float)
    return float(x) if x.ndim == 0 else x


def _plain(value: Any) -> np.ndarray | float:
    """0-d arrays become floats; arrays stay arrays."""
    value = np.asarray(value, dtype=float)
    return float(value) if value.ndim == 0 else value


def _elementwise(fn: Callable[[float], float], x: Any) -> np.ndarray | float:
    x = np.asarray(x, dtype=float)
    values = np.array([float(fn(float(v))) for v in x.ravel()]).reshape(x.shape)
    return _plain(values)


def load_network(path: str | os.PathLike[str]) -> Network:
    """Read a network description saved with ``Network.save``."""
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{os.fspath(path)} is not valid JSON: {exc}") from None
        except RecursionError:
            raise ValueError(f"{os.fspath(path)} is nested too deeply to be a network "
                             "description") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{os.fspath(path)} is not UTF-8 text ({exc.reason})") from None
    return Network.from_dict(data)
