"""Kernel approximation: predicted (Q/C maps) vs empirical q and c of random finite-width nets.

For a chain network (``mlp`` preset) rebuilt at each width n, inputs ``x, x'_k`` with
``|x|^2 = d0`` and ``x'x'_k/d0 = c_k``, and h the features at the last nonlinear layer:

    q_hat = |h(x)|^2 / n,      c_hat_k = h(x).h(x'_k) / (|h(x)| |h(x'_k)|)

are compared with the maps' predictions ``q = Q_f(1)``, ``c_k = C_f(c_k)``. The errors are
root-mean-square over seeds (and over the inputs / cosines); their log-log slope against n is
fitted by least squares (expected -1/2: the features are sums of n weakly dependent terms).

Samplers (:func:`kernelshape.verify.finite.features`): ``"frame"`` (default) applies each SUO
layer on the span of the few input rows, which has exactly the distribution of the full random
network at O(n) cost per layer, so widths up to 4096 and beyond are cheap; ``"matrix"`` draws
the full SUO matrices (``kernelshape.topology.apply.init_params``: O(n^3) QR per layer).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kernelshape.engine.activations import Transform
from kernelshape.solve import shape
from kernelshape.topology import Network, parse_spec
from kernelshape.topology.spec import with_option
from kernelshape.verify.finite import SAMPLERS, features, pair_inputs
from kernelshape.verify.limits import MAX_LAYER_WIDTH, MAX_WIDTH, check_widths

WIDTHS = (64, 128, 256, 512, 1024, 2048, 4096)
COSINES = (-0.5, 0.0, 0.5, 0.9)


def last_nonlinear(net: Network) -> str:
    nodes = net.nonlinear_nodes
    if not nodes:
        raise ValueError("the network has no nonlinear layer")
    return nodes[-1].id


def sample_features(net: Network, transforms: Mapping[str, Transform] | None,
                    cosines: Sequence[float], seed: int, sampler: str = "frame",
                    node: str | None = None) -> np.ndarray:
    """Features at ``node`` (default: last nonlinear layer) of one random network for the
    rows ``[x, x'_1, ..., x'_K]`` of :func:`pair_inputs`."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
    rng = np.random.default_rng([seed, 4096])
    x = pair_inputs(rng, int(np.prod(net.input_shape)), cosines)
    return features(net, transforms, x.reshape(len(x), *net.input_shape), rng,
                    sampler)[node or last_nonlinear(net)]


def empirical_kernel(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q_hat of every row, c_hat between row 0 and each other row)."""
    q = np.sum(h * h, axis=1) / h.shape[1]
    c = (h[1:] @ h[0]) / np.sqrt(np.sum(h[1:] ** 2, axis=1) * np.sum(h[0] ** 2))
    return q, c


@dataclass
class WidthPoint:
    width: int
    q_rmse: float
    c_rmse: float
    q_mean_error: float  # mean signed error (bias)
    c_mean_error: float
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "q_rmse": self.q_rmse, "c_rmse": self.c_rmse,
                "q_mean_error": self.q_mean_error, "c_mean_error": self.c_mean_error,
                "samples": self.samples}


def loglog_slope(widths: Sequence[float], errors: Sequence[float]) -> float:
    """Least-squares slope of ``log(error)`` against ``log(width)``."""
    x, y = np.log(np.asarray(widths, float)), np.log(np.asarray(errors, float))
    return float(np.polyfit(x, y, 1)[0])


@dataclass
class ApproximationReport:
    spec: str
    method: str
    depth: int
    node: str
    sampler: str
    cosines: list[float]
    q_pred: float
    c_pred: list[float]
    points: list[WidthPoint]
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def q_slope(self) -> float:
        return loglog_slope([p.width for p in self.points], [p.q_rmse for p in self.points])

    @property
    def c_slope(self) -> float:
        return loglog_slope([p.width for p in self.points], [p.c_rmse for p in self.points])

    def to_dict(self) -> dict[str, Any]:
        return {"study": "kernel-approximation", "network": self.spec, "method": self.method,
                "depth": self.depth, "node": self.node, "sampler": self.sampler,
                "cosines": self.cosines, "q_pred": self.q_pred, "c_pred": self.c_pred,
                "q_slope": self.q_slope, "c_slope": self.c_slope,
                "points": [p.to_dict() for p in self.points], "seconds": self.seconds,
                "notes": self.notes}


def kernel_approximation(spec: str | Network, method: str = "dks", *,
                         widths: Sequence[int] = WIDTHS, cosines: Sequence[float] = COSINES,
                         seeds: int = 16, sampler: str = "frame",
                         **targets: float) -> ApproximationReport:
    """RMS error of q and c at the last nonlinear layer against width (module docstring);
    ``targets`` as for ``kernelshape.shape``."""
    start = time.perf_counter()
    net0 = parse_spec(spec) if isinstance(spec, str) else spec
    text = spec if isinstance(spec, str) else (net0.spec or net0.name or "network")
    if not net0.spec and len(widths) > 1:
        raise ValueError("a width sweep needs a preset SPEC (e.g. mlp:depth=10,activation=tanh)")
    check_widths(widths, MAX_WIDTH, "the kernel-approximation study")
    layers = len(net0.nonlinear_nodes)
    if layers * max(widths, default=1) > MAX_LAYER_WIDTH:
        raise ValueError(f"the kernel-approximation study: {layers} nonlinear layers at width "
                         f"{max(widths)} exceed the {MAX_LAYER_WIDTH:,} layer-units it allows")
    solution = shape(net0, method, **targets)
    transforms = solution.network_transforms()
    node = last_nonlinear(net0)
    state = net0.kernel_states(np.asarray(cosines, float), 1.0, 1.0,
                               transforms=transforms)[node]
    q_pred = float(np.asarray(state.q1).ravel()[0])
    c_pred = np.asarray(state.c, dtype=float)
    points = []
    for w in widths:
        net = parse_spec(with_option(net0.spec, "width", w)) if net0.spec else net0
        q_err, c_err = [], []
        for seed in range(seeds):
            h = sample_features(net, transforms, cosines, seed, sampler, node)
            q_hat, c_hat = empirical_kernel(h)
            q_err.append(q_hat - q_pred)
            c_err.append(c_hat - c_pred)
        qe, ce = np.concatenate(q_err), np.concatenate(c_err)
        points.append(WidthPoint(int(w), float(np.sqrt(np.mean(qe**2))),
                                 float(np.sqrt(np.mean(ce**2))), float(qe.mean()),
                                 float(ce.mean()), seeds))
    return ApproximationReport(text, solution.method, len(net0.nonlinear_nodes), node, sampler,
                               list(map(float, cosines)), q_pred, c_pred.tolist(), points,
                               time.perf_counter() - start)
