"""Network helpers for the checks: shaping by method, subnetwork C maps, EOC chains, SPEC edits.

A subnetwork ``f`` (``Network.subnetworks()``: the whole network, and every branch from a fork
to a merge operand) maps the kernel state at its start node to that at its end node. Its C map
is evaluated by running the network's own layer kernel maps (``Layer.kernel_fn``) over the
nodes on paths from start to end, starting from

    KernelState(q_s, q_s, c, (1,))   with q_s = the q value the network gives at the start node
                                     for inputs with q = 1 (q_s = 1 for DKS/TAT-shaped nets).

So ``C_f(c) = C_f(c; q_s, q_s)`` is the map the paper's theorems talk about (both inputs of the
subnetwork have the same q), with ``C_f'`` by the chain rule (jets). Because the start node
dominates the end node, every parent of a member node is a member: the restriction is closed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from kernelshape.engine.activations import Activation, Transform
from kernelshape.topology import INPUT_ID, KernelState, Network, Subnetwork, parse_spec
from kernelshape.topology.graph import ancestors_until
from kernelshape.topology.spec import split_options

METHODS = ("none", "dks", "tat", "eoc")


# --------------------------------------------------------------------------- SPEC helpers

def with_option(spec: str, key: str, value: Any) -> str:
    """``spec`` with preset option ``key`` set to ``value`` (added when missing).

    >>> with_option("mlp:depth=10,activation=tanh", "depth", 50)
    'mlp:depth=50,activation=tanh'
    """
    if spec.strip().endswith(".json") or os.path.isfile(spec):
        raise ValueError(f"cannot change {key!r} of the saved network {spec!r}; give a preset "
                         "SPEC such as mlp:depth=20,activation=tanh")
    name, _, rest = spec.partition(":")
    items = split_options(rest)
    out, found = [], False
    for item in items:
        k, _, _ = item.partition("=")
        if k.strip() == key:
            out.append(f"{key}={value}")
            found = True
        else:
            out.append(item)
    if not found:
        out.append(f"{key}={value}")
    return f"{name}:{','.join(out)}"


def load(net_or_spec: Network | str) -> tuple[Network, str]:
    """(network, SPEC text) from a Network or a SPEC string / JSON path."""
    if isinstance(net_or_spec, Network):
        return net_or_spec, net_or_spec.spec or net_or_spec.name or "network"
    return parse_spec(net_or_spec), str(net_or_spec)


# --------------------------------------------------------------------------- shaping

@dataclass
class Shaped:
    """A network with the activation transforms of a method.

    ``transforms`` maps every activation key to a Transform (identity for ``none``). For
    ``eoc`` the weight variance ``s_w^2`` is modelled as ``input_scale = s_w`` on every
    activation, which is exact for chains ``Dense -> phi -> Dense -> ...`` with zero biases
    (each pre-activation is ``s_w`` times a unit-variance linear layer's output).
    """

    net: Network
    spec: str
    method: str
    targets: dict[str, float]
    transforms: dict[str, Transform]
    solution: Any = None
    notes: list[str] = field(default_factory=list)

    @property
    def params(self) -> dict[str, dict[str, float]]:
        return {k: t.as_dict() for k, t in self.transforms.items()}

    def activations(self) -> dict[str, Activation]:
        return self.net.transformed_activations(self.transforms)


def is_chain(net: Network) -> bool:
    """True when every node has at most one parent and there is no LayerNorm (a plain chain)."""
    return all(len(n.parents) <= 1 and n.layer.role != "normalize" for n in net.nodes)


def shape_network(net_or_spec: Network | str, method: str = "none", *, zeta: float = 1.5,
                  tau: float = 0.3, eta: float = 0.9, bias_variance: float = 0.0) -> Shaped:
    """Shape a network with ``method`` in none | dks | tat | eoc (``kernelshape.solve.shape``)."""
    net, spec = load(net_or_spec)
    method = str(method).lower()
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    keys = net.activation_keys
    if method == "none":
        return Shaped(net, spec, method, {}, {k: Transform() for k in keys})
    from kernelshape.solve import shape

    if method == "eoc":
        if bias_variance != 0.0:
            raise ValueError("the network maps model EOC weight variances only (as input_scale); "
                             "nonzero bias variances need kernelshape.verify.eoc_chain_cmap")
        if not is_chain(net):
            raise ValueError("EOC weight variances are modelled exactly only for chains "
                             "(Dense -> activation -> ...); this network has sums or LayerNorm")
        sol = shape(net, "eoc", bias_variance=0.0)
        transforms = {k: Transform(input_scale=math.sqrt(v["weight_variance"]))
                      for k, v in (sol.eoc or {}).items()}
        return Shaped(net, spec, method, {"bias_variance": 0.0}, transforms, sol,
                      ["EOC weight variance s_w^2 modelled as input_scale = s_w"])
    options = {"zeta": zeta} if method == "dks" else {"tau": tau, "eta": eta}
    sol = shape(net, method, **options)
    return Shaped(net, spec, method, dict(sol.targets), dict(sol.transforms), sol,
                  list(sol.warnings))


def target_text(shaped: Shaped) -> str:
    """``zeta=1.5`` / ``tau=0.3`` / ``eta=0.9`` / ``-`` for a table cell."""
    t = shaped.targets
    for key in ("zeta", "tau", "eta"):
        if key in t:
            return f"{key}={t[key]:g}"
    return "-"


# --------------------------------------------------------------------------- subnetwork maps

class SubnetLabel(NamedTuple):
    kind: str  # "network", "branch" or "prefix"
    start: str
    end: str
    merge: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "network":
            return f"network {self.start} -> {self.end}"
        if self.kind == "prefix":
            return f"prefix {self.start} -> {self.end}"
        return f"branch of {self.merge}: {self.start} -> {self.end}"


def subnetworks(net: Network, prefixes: bool = False) -> list[SubnetLabel]:
    """``net.subnetworks()``, plus (``prefixes=True``) input -> every nonlinear node."""
    subs = [SubnetLabel(s.kind, s.start, s.end, s.merge) for s in net.subnetworks()]
    if prefixes:
        ends = {s.end for s in subs if s.start == INPUT_ID}
        subs += [SubnetLabel("prefix", INPUT_ID, n.id) for n in net.nonlinear_nodes
                 if n.id not in ends]
    return subs


class SubnetMap:
    """The C map ``c -> C_f(c; q_s, q_s)`` (and ``C_f'``) of one subnetwork of a network.

    ``q_in`` is the q of the network input pair (default 1); ``q_s`` is the q the network
    produces at the subnetwork's start node.
    """

    def __init__(self, net: Network, sub: Subnetwork | SubnetLabel,
                 transforms: Mapping[str, Transform] | None = None, q_in: float = 1.0) -> None:
        self.net, self.sub = net, sub
        parents = {n.id: n.parents for n in net.nodes}
        members = ancestors_until(sub.end, sub.start, parents)
        self.nodes = [n for n in net.nodes if n.id in members and n.id != sub.start]
        self.acts = net.transformed_activations(transforms)
        if sub.start == INPUT_ID:
            self.q_start = float(q_in)
        else:
            states = net.kernel_states(1.0, q_in, q_in, transforms=transforms)
            self.q_start = float(np.asarray(states[sub.start].q1))
        self.n_nonlinear = sum(n.layer.role == "nonlinear" for n in self.nodes)

    def states(self, c: Any, order: int = 1) -> dict[str, KernelState]:
        """Kernel state of every member node for start value(s) ``c``."""
        c = np.asarray(c, dtype=float)
        one = np.ones_like(c)
        q = np.asarray(self.q_start)
        states = {self.sub.start: KernelState(q, q, c, (one, 0.0 * one)[:order])}
        for node in self.nodes:
            states[node.id] = node.layer.kernel_fn([states[p] for p in node.parents], self.acts)
        return states

    def __call__(self, c: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(C_f(c), C_f'(c))`` at the points ``c`` (arrays of c's shape)."""
        c = np.asarray(c, dtype=float)
        state = self.states(c, order=1)[self.sub.end]
        value = np.broadcast_to(np.asarray(state.c, dtype=float), c.shape)
        slope = np.broadcast_to(np.asarray(state.c_jet[0], dtype=float), c.shape)
        return np.array(value), np.array(slope)

    def signature(self) -> tuple:
        """Structure + start q: subnetworks with equal signatures have equal C maps."""
        index = {self.sub.start: 0}
        items = []
        for i, node in enumerate(self.nodes, start=1):
            index[node.id] = i
            layer = node.layer
            extra: Any = None
            if layer.role == "nonlinear":
                extra = layer.activation_key
            elif layer.role == "mix":
                extra = tuple(layer.mix_weights)
            items.append((layer.role, extra, tuple(index[p] for p in node.parents)))
        return (round(self.q_start, 13), tuple(items))


Q_LIMIT = 1e2  # above this input q, non-closed-form maps need long expansions (slow)


def q_states(net: Network, transforms: Mapping[str, Transform] | None = None,
             q_in: float = 1.0) -> dict[str, float]:
    """q of every node for network inputs with q = ``q_in`` (Q maps only: cheap)."""
    acts = net.transformed_activations(transforms)
    q = np.asarray(float(q_in))
    states = {INPUT_ID: KernelState(q, q, None)}
    for node in net.nodes[1:]:
        states[node.id] = node.layer.kernel_fn([states[p] for p in node.parents], acts)
    return {k: float(np.asarray(v.q1)) for k, v in states.items()}


def check_q_range(net: Network, transforms: Mapping[str, Transform] | None = None) -> None:
    """Refuse (ValueError) networks whose q explodes into a range where the C maps of
    non-closed-form activations are impractically slow to evaluate (e.g. an EOC softplus
    chain without biases, where q doubles per layer)."""
    from kernelshape.engine import closed_forms

    qs = q_states(net, transforms)
    acts = net.transformed_activations(transforms)
    for node in net.nonlinear_nodes:
        q = qs[node.parents[0]]
        act = acts[node.layer.activation_key]
        if not math.isfinite(q) or (q > Q_LIMIT and not closed_forms.supports(act)):
            raise ValueError(
                f"the pre-activation second moment q reaches {q:.3g} at {node.id!r} for inputs "
                f"with q = 1 (this initialization does not keep q near a fixed point); "
                f"C maps of {act.name} at q > {Q_LIMIT:g} are too slow to evaluate here; "
                "shape the network (--method dks or tat) or use a shallower one")


# --------------------------------------------------------------------------- EOC chains

def eoc_chain_states(act: Activation, depth: int, weight_variance: float, bias_variance: float,
                     c: Any, q_pre: float | None = None) -> list[tuple[float, np.ndarray]]:
    """(q, c) of the post-activations of a ``depth``-layer chain with Gaussian weights
    ``N(0, s_w^2/fan_in)`` and biases ``N(0, s_b^2)``.

    Pre-activation recursion (Poole et al. 2016): ``q_z = s_w^2 q_h + s_b^2``,
    ``kappa_z = s_w^2 kappa_h + s_b^2``, ``kappa_h' = K(c_z; q_z, q_z)``. The input pair is
    taken so that the first pre-activation has ``q_pre`` (default: the EOC fixed point
    ``q* = s_w^2 Q(q*) + s_b^2``, i.e. inputs with ``q = Q(q*)``) and cosine ``c``:
    ``c_z1 = (s_w^2 q_x c + s_b^2) / q_pre`` with ``q_x = (q_pre - s_b^2) / s_w^2``.
    Returns one ``(q_h, c_h)`` per layer.
    """
    from kernelshape.engine.maps import cmap, qmap

    sw2, sb2 = float(weight_variance), float(bias_variance)
    if q_pre is None:
        q_pre = _eoc_fixed_point(act, sw2, sb2)
    q_x = (q_pre - sb2) / sw2
    c = np.asarray(c, dtype=float)
    q_z, c_z = q_pre, np.clip((sw2 * q_x * c + sb2) / q_pre, -1.0, 1.0)
    out = []
    for _ in range(depth):
        q_h = float(qmap(act, q_z))
        c_h = np.asarray(cmap(act, c_z, q_z, q_z), dtype=float)
        out.append((q_h, c_h))
        q_z = sw2 * q_h + sb2
        c_z = np.clip((sw2 * q_h * c_h + sb2) / q_z, -1.0, 1.0)
    return out


def _eoc_fixed_point(act: Activation, sw2: float, sb2: float) -> float:
    """``q* = s_w^2 Q(q*) + s_b^2`` by fixed-point iteration (attracting for tanh-like phi)."""
    from kernelshape.engine.maps import qmap

    q = max(sb2, 1.0)
    for _ in range(10_000):
        new = sw2 * float(qmap(act, q)) + sb2
        if abs(new - q) <= 1e-14 * max(q, 1.0):
            return new
        q = new
    return q


def eoc_chain_cmap(act: Activation, depth: int, weight_variance: float, bias_variance: float,
                   c: Any) -> np.ndarray:
    """Network C map of an EOC chain (post-activation cosine after ``depth`` layers)."""
    return eoc_chain_states(act, depth, weight_variance, bias_variance, c)[-1][1]


# --------------------------------------------------------------------------- finite width

def haar_frame(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Uniformly random ``n x k`` matrix with orthonormal columns (sign-fixed QR, Mezzadri)."""
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def suo_apply(rng: np.random.Generator, x: np.ndarray, fan_out: int) -> np.ndarray:
    """``x @ W`` for a fresh SUO matrix ``W`` (fan_in x fan_out), sampled on the rows' span.

    SUO: ``W`` = Haar orthonormal columns (fan_in >= fan_out) or ``sqrt(fan_out/fan_in)`` x
    orthonormal rows. With ``x^T = U R`` (thin QR), ``x W = R^T (U^T W)`` and ``U^T W`` is
    distributed as a uniformly random orthonormal frame (Haar invariance), so this equals the
    full-matrix network in distribution at O(width * rows^2) cost.
    """
    fan_in = x.shape[1]
    u, r = np.linalg.qr(x.T)
    k = u.shape[1]
    if fan_out >= fan_in:
        frame = math.sqrt(fan_out / fan_in) * haar_frame(rng, fan_out, k)  # = (U^T W)^T
    else:
        frame = haar_frame(rng, fan_in, k)[:fan_out]
    return (frame @ r).T


def pair_inputs(rng: np.random.Generator, dim: int, cosines: Sequence[float]) -> np.ndarray:
    """Rows ``[x, x'_1, ..., x'_K]`` with ``|x|^2 = |x'_k|^2 = dim`` and ``x.x'_k/dim = c_k``."""
    u, v = haar_frame(rng, dim, 2).T
    rows = [u] + [c * u + math.sqrt(max(1.0 - c * c, 0.0)) * v for c in cosines]
    return math.sqrt(dim) * np.array(rows)


def chain_forward_frames(net: Network, x: np.ndarray, rng: np.random.Generator,
                         transforms: Mapping[str, Transform] | None = None
                         ) -> dict[str, np.ndarray]:
    """Features of every node of a chain network (Dense/Nonlinearity/Flatten) for rows ``x``,
    with SUO weights sampled on the rows' span (:func:`suo_apply`)."""
    if not is_chain(net):
        raise ValueError("the finite-width sampler handles chains of Dense and Nonlinearity "
                         "layers (the mlp preset)")
    acts = net.transformed_activations(transforms)
    out: dict[str, np.ndarray] = {}
    for node in net.nodes:
        kind = node.layer.type_name
        if kind == "Input":
            out[node.id] = x
        elif kind == "Dense":
            out[node.id] = suo_apply(rng, out[node.parents[0]], node.shape[-1])
        elif kind == "Nonlinearity":
            out[node.id] = np.asarray(acts[node.layer.activation_key](out[node.parents[0]]))
        elif kind == "Flatten":
            out[node.id] = out[node.parents[0]]
        else:
            raise ValueError(f"the finite-width sampler does not handle {kind} (node "
                             f"{node.id!r}); use an mlp")
    return out


def last_nonlinear(net: Network) -> str:
    nodes = net.nonlinear_nodes
    if not nodes:
        raise ValueError("the network has no nonlinear layer")
    return nodes[-1].id
