"""Theorem 27 (DKS seed talk): the per-layer NTK of a DKS-shaped network stays near x'x/d0.

Definition used here (chains ``x -> Dense_1 -> phi -> ... -> Dense_L -> phi -> Dense_{L+1}``,
the ``mlp`` preset; Dense i computes ``z_i = h_{i-1} W_i``, ``W_i`` of shape
``(n_{i-1}, n_i)``, outputs ``f = z_{L+1}`` with ``m`` entries):

    Theta_i(x, x') = 1/(m n_{i-1}) sum_{k=1..m} < df_k(x)/dW_i , df_k(x')/dW_i >_F

i.e. the NTK contribution of layer i's weights in the NTK parameterization
(``W_i = V_i / sqrt(n_{i-1})``, gradients with respect to ``V_i``), averaged over the output
units. Biases (zero at initialization) are not included. With ``|x|^2 = d0`` a linear network
has ``Theta_i(x, x') = x'x/d0`` exactly in the infinite-width limit.

Infinite width (kernel recursion): ``df_k/dW_i = h_{i-1} g_{i,k}^T`` with ``g_{i,k} = df_k/dz_i``,
so ``Theta_i = kappa_{i-1}(x, x') * Pi_i(x, x')`` where ``kappa_{i-1} = c sqrt(q q')`` is the
forward kernel of Dense i's input and ``Pi_i = prod_{j >= i} Kdot_j`` the backward kernel:
``Kdot_j = dK_j/drho = E[phi'(u) phi'(v)] = C_j'(c; q, q') sqrt(Q(q) Q(q') / (q q'))`` at
nonlinear layer j's input (SUO layers have backward factor 1). At q = 1 (DKS) this is
``Theta_i = C_g(c) * C_h'(C_g(c))`` with g the subnetwork input -> Dense i and h the rest.

The paper's exact normalization of Theta_i was not available to check (only the talk's
statement); this is the normalization under which the statement is scale-consistent.

Empirical (finite width): a random network with SUO weights, run by the description's own
finite-width forward and backward passes (``kernelshape.topology.apply``), ``df_k/dW_i`` from
the backward pass with ``dlogits = e_k``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kernelshape.engine.activations import Transform
from kernelshape.engine.maps import cmap
from kernelshape.solve import shape
from kernelshape.solve.options import applicable_targets, default
from kernelshape.topology import Network, parse_spec
from kernelshape.topology.apply import Params, backward, forward, init_params
from kernelshape.topology.spec import with_option
from kernelshape.verify.finite import pair_inputs
from kernelshape.verify.limits import MAX_MATRIX_WIDTH, check_grid, check_widths
from kernelshape.verify.theorem13 import GRID, maximize_abs

BOUND_CONSTANT = 11.0


def _check_chain(net: Network) -> None:
    ok = all(len(n.parents) <= 1 and n.layer.type_name in ("Input", "Dense", "Nonlinearity",
                                                             "Flatten") for n in net.nodes)
    if not ok or net.nodes[-1].layer.type_name != "Dense":
        raise ValueError("theorem27 handles chains x -> Dense -> activation -> ... -> Dense (the "
                         "mlp preset, e.g. mlp:depth=20,activation=tanh); this network has "
                         "other layers or branches")


def weight_layers(net: Network) -> list[str]:
    """Ids of the Dense layers, input side first (Theta_1 .. Theta_{L+1})."""
    return [n.id for n in net.nodes if n.layer.type_name == "Dense"]


# --------------------------------------------------------------------------- infinite width

def per_layer_ntk(net: Network, transforms: Mapping[str, Transform] | None, c: Any,
                  q: float = 1.0) -> dict[str, np.ndarray]:
    """Infinite-width ``Theta_i(x, x')`` for inputs with ``q = |x|^2/d0`` (both) and cosines
    ``c`` (vectorized), by the forward/backward kernel recursion (module docstring)."""
    _check_chain(net)
    c = np.asarray(c, dtype=float)
    states = net.kernel_states(c, q, q, transforms=transforms)
    acts = net.transformed_activations(transforms)
    backward = np.ones_like(c)
    result: dict[str, np.ndarray] = {}
    for node in reversed(net.nodes[1:]):
        s = states[node.parents[0]]
        kind = node.layer.type_name
        if kind == "Dense":
            kappa = np.asarray(s.c) * np.sqrt(np.asarray(s.q1) * np.asarray(s.q2))
            result[node.id] = kappa * backward
        elif kind == "Nonlinearity":
            q_in, q_out = float(np.asarray(s.q1)), float(np.asarray(states[node.id].q1))
            act = acts[node.layer.activation_key]
            slope = np.asarray(cmap(act, np.clip(s.c, -1.0, 1.0), q_in, q_in, order=1))
            backward = backward * slope * (q_out / q_in)
    return {k: result[k] for k in weight_layers(net)}


# --------------------------------------------------------------------------- finite width

_PARAMS: dict[tuple, Params] = {}


def _suo_params(net: Network, seed: int) -> Params:
    """SUO weights (zero biases) of ``net`` from ``default_rng([seed, 27])``; the last few
    draws are cached by layer shapes (weights do not depend on the activation transforms, so
    a sweep over zeta reuses them)."""
    key = (tuple(n.shape for n in net.nodes), seed)
    if key not in _PARAMS:
        if len(_PARAMS) >= 4:
            _PARAMS.pop(next(iter(_PARAMS)))
        _PARAMS[key] = init_params(net, np.random.default_rng([seed, 27]), "suo")
    return _PARAMS[key]


def _output_gradients(net: Network, transforms: Mapping[str, Transform] | None,
                      x: np.ndarray, seed: int) -> tuple[dict[str, np.ndarray],
                                                          list[dict[str, np.ndarray]]]:
    """(every node's output for the rows x, per output unit k: the gradient of f_k at every
    node's output) of one random SUO network."""
    params = _suo_params(net, seed)
    fwd = forward(net, params, x, net.transformed_activations(transforms))
    m = fwd.result.shape[1]
    per_output = []
    for k in range(m):
        dlogits = np.zeros_like(fwd.result)
        dlogits[:, k] = 1.0
        per_output.append(backward(fwd, dlogits, params)[1])
    return fwd.outputs, per_output


def empirical_per_layer_ntk(net: Network, transforms: Mapping[str, Transform] | None,
                            cosines: Sequence[float], seed: int = 0) -> dict[str, np.ndarray]:
    """``Theta_i(x, x'_k)`` of one random finite-width network (SUO weights, zero biases) for
    ``|x|^2 = |x'_k|^2 = d0`` and ``x'x'_k/d0 = cosines[k]``, from its parameter gradients.

    Uses ``<h g^T, h' g'^T>_F = (h.h')(g.g')`` on the per-example factors the backward pass
    produces (``tests/test_verify.py`` checks this against the full gradient matrices).
    """
    _check_chain(net)
    x = pair_inputs(np.random.default_rng([seed, 28]), int(np.prod(net.input_shape)), cosines)
    outputs, grads = _output_gradients(net, transforms, x, seed)
    out = {}
    for node_id in weight_layers(net):
        a = outputs[net.node(node_id).parents[0]]
        back = sum(g[node_id][1:] @ g[node_id][0] for g in grads)
        out[node_id] = (a[1:] @ a[0]) / a.shape[1] * back / len(grads)
    return out


def gradient_per_layer_ntk(net: Network, transforms: Mapping[str, Transform] | None,
                           cosines: Sequence[float], seed: int = 0) -> dict[str, np.ndarray]:
    """Same as :func:`empirical_per_layer_ntk` from the full per-example gradient matrices
    ``df_k/dW_i`` (one backward pass per example and output; slow, for tests)."""
    _check_chain(net)
    params = _suo_params(net, seed)
    x = pair_inputs(np.random.default_rng([seed, 28]), int(np.prod(net.input_shape)), cosines)
    acts = net.transformed_activations(transforms)
    owners = weight_layers(net)
    grads = []  # grads[e][k][i] = df_k(x_e)/dW_i
    for row in x:
        fwd = forward(net, params, row[None, :], acts)
        per_k = []
        for k in range(fwd.result.shape[1]):
            dlogits = np.zeros_like(fwd.result)
            dlogits[0, k] = 1.0
            per_k.append([g[0] for g in backward(fwd, dlogits, params)[0]])
        grads.append(per_k)
    m = len(grads[0])
    out = {}
    for i, name in enumerate(owners):
        fan_in = params[i][0].shape[0]
        out[name] = np.array([
            sum(float(np.sum(grads[0][k][i] * grads[e][k][i])) for k in range(m)) / (m * fan_in)
            for e in range(1, len(x))])
    return out


# --------------------------------------------------------------------------- the check

@dataclass
class NTKCheck:
    """``max_i max_c |Theta_i - c|`` for one network (infinite width or one random network)."""

    depth: int
    zeta: float | None
    width: int | None  # None: infinite width
    seed: int | None
    max_dev: float
    at_layer: str
    at_c: float
    per_layer: dict[str, float]
    bound: float | None
    error_vs_infinite: float | None = None  # finite width: max |Theta_i - Theta_i^inf|

    @property
    def ratio(self) -> float | None:
        return None if not self.bound else self.max_dev / self.bound

    @property
    def holds(self) -> bool | None:
        return None if self.bound is None else self.max_dev <= self.bound

    def to_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "zeta": self.zeta,
                "width": "infinite" if self.width is None else self.width, "seed": self.seed,
                "max_dev": self.max_dev, "at_layer": self.at_layer, "at_c": self.at_c,
                "bound": self.bound, "ratio": self.ratio, "holds": self.holds,
                "error_vs_infinite": self.error_vs_infinite, "per_layer": self.per_layer}


def infinite_check(net: Network, transforms: Mapping[str, Transform], zeta: float | None,
                   n: int = GRID) -> NTKCheck:
    """Infinite-width check: maximum over layers and c in [-1, 1] (grid + refinement)."""

    def envelope(c: np.ndarray) -> np.ndarray:
        theta = per_layer_ntk(net, transforms, c)
        return np.max([np.abs(v - c) for v in theta.values()], axis=0)

    best = maximize_abs(envelope, n)
    grid = np.unique(np.concatenate([np.linspace(-1, 1, 201), [best.at]]))
    theta = per_layer_ntk(net, transforms, grid)
    per_layer = {k: float(np.max(np.abs(v - grid))) for k, v in theta.items()}
    at_c = np.array([best.at])
    at_layer = max(per_layer_ntk(net, transforms, at_c).items(),
                   key=lambda kv: abs(float(kv[1][0]) - best.at))[0]
    per_layer[at_layer] = max(per_layer[at_layer], best.value)
    return NTKCheck(len(net.nonlinear_nodes), zeta, None, None, best.value, at_layer, best.at,
                    per_layer, None if zeta is None else BOUND_CONSTANT * (zeta - 1.0))


def empirical_check(net: Network, transforms: Mapping[str, Transform], zeta: float | None,
                    cosines: Sequence[float], seed: int = 0) -> NTKCheck:
    """One random finite-width network of the shaped description."""
    c = np.asarray(cosines, dtype=float)
    emp = empirical_per_layer_ntk(net, transforms, c, seed)
    inf = per_layer_ntk(net, transforms, c)
    per_layer = {k: float(np.max(np.abs(v - c))) for k, v in emp.items()}
    at_layer = max(per_layer, key=per_layer.__getitem__)
    j = int(np.argmax(np.abs(emp[at_layer] - c)))
    width = int(next(n.layer.width for n in net.nodes if n.layer.type_name == "Dense"))
    error = max(float(np.max(np.abs(emp[k] - inf[k]))) for k in emp)
    return NTKCheck(len(net.nonlinear_nodes), zeta, width, seed, per_layer[at_layer], at_layer,
                    float(c[j]), per_layer, None if zeta is None else BOUND_CONSTANT * (zeta - 1.0),
                    error)


@dataclass
class Theorem27Report:
    spec: str
    method: str
    checks: list[NTKCheck]
    cosines: list[float]
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return all(c.holds is not False for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"theorem": "theorem27", "network": self.spec, "method": self.method,
                "holds": self.holds, "bound": f"{BOUND_CONSTANT:g} (zeta - 1)",
                "cosines": self.cosines, "checks": [c.to_dict() for c in self.checks],
                "seconds": self.seconds, "notes": self.notes,
                "definition": "Theta_i(x,x') = 1/(m n_{i-1}) sum_k <df_k(x)/dW_i, "
                              "df_k(x')/dW_i>_F (NTK parameterization, weights only, "
                              "averaged over the m outputs)"}


def theorem27(spec: str | Network, *, method: str = "dks", zetas: Sequence[float] | None = None,
              depths: Sequence[int] | None = None, widths: Sequence[int] = (512,),
              seeds: Sequence[int] = (0,), cosines: Sequence[float] | None = None,
              tau: float | None = None, eta: float | None = None, n: int = GRID
              ) -> Theorem27Report:
    """Theorem 27 over ``zetas`` x ``depths``: infinite width, and one random network per
    width and seed (``widths=()`` skips the finite-width part). ``depths`` rebuilds a preset
    SPEC with ``depth=...``; ``widths`` with ``width=...``. Targets left at None take the
    solver's defaults (``kernelshape.solve.options.TARGETS``)."""
    start = time.perf_counter()
    if cosines is None:
        cosines = [float(v) for v in np.linspace(-1.0, 1.0, 9)]
    base = spec if isinstance(spec, str) else (spec.spec or "")
    if isinstance(spec, Network) and (depths or widths):
        if not spec.spec:
            raise ValueError("depths/widths need a preset SPEC")
    specs = [with_option(base, "depth", d) for d in depths] if depths else [base]
    targets = list(zetas or [default("zeta")]) if method == "dks" else [None]
    checks: list[NTKCheck] = []
    notes: list[str] = []
    check_widths(widths, MAX_MATRIX_WIDTH, "Theorem 27")
    for s in specs:
        net = parse_spec(s)
        _check_chain(net)
        check_grid(net, n, "Theorem 27")
        for z in targets:
            given = {"zeta": z, "tau": tau, "eta": eta}
            solution = shape(net, method, **{k: given[k] for k in applicable_targets(
                method, net.activations.values()) if k in given})
            transforms = solution.network_transforms()
            checks.append(infinite_check(net, transforms, z, n))
            for w in widths:
                sized = parse_spec(with_option(s, "width", w))
                for seed in seeds:
                    checks.append(empirical_check(sized, transforms, z, cosines, seed))
    if method != "dks":
        notes.append("the 11(zeta-1) bound is stated for DKS-shaped networks; other methods "
                     "are shown without it")
    return Theorem27Report(base, method, checks, list(map(float, cosines)),
                           time.perf_counter() - start, notes)
