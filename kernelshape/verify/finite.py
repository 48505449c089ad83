"""Random finite-width networks for the checks: input pairs with a given kernel, and the
network's own forward pass (``kernelshape.topology.apply``) with SUO weights drawn in full or,
for wide Dense layers, on the span of the inputs only ("frame" sampling)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from kernelshape.engine.activations import Transform
from kernelshape.runtime.numpy import scaled_uniform_orthogonal
from kernelshape.topology import Dense, Network, Node
from kernelshape.topology.apply import RULES, Context, Pullback, Rule, forward, init_params

SAMPLERS = ("frame", "matrix")


def pair_inputs(rng: np.random.Generator, dim: int, cosines: Sequence[float]) -> np.ndarray:
    """Rows ``[x, x'_1, ..., x'_K]`` with ``|x|^2 = |x'_k|^2 = dim`` and ``x.x'_k/dim = c_k``."""
    u, v = scaled_uniform_orthogonal(rng, (dim, 2)).T
    rows = [u] + [c * u + math.sqrt(max(1.0 - c * c, 0.0)) * v for c in cosines]
    return math.sqrt(dim) * np.array(rows)


def suo_on_span(rng: np.random.Generator, x: np.ndarray, fan_out: int) -> np.ndarray:
    """``x @ W`` for a fresh SUO matrix ``W`` (fan_in x fan_out), sampled on the rows' span.

    With ``x^T = U R`` (thin QR), ``x W = R^T (U^T W)``, and ``U^T W`` is distributed as a
    uniformly random orthonormal frame scaled as SUO (Haar invariance): the same distribution
    as the full-matrix layer at O(width * rows^2) cost."""
    fan_in = x.shape[1]
    u, r = np.linalg.qr(x.T)
    k = u.shape[1]
    if fan_out >= fan_in:
        frame = math.sqrt(fan_out / fan_in) * scaled_uniform_orthogonal(rng, (fan_out, k))
    else:
        frame = scaled_uniform_orthogonal(rng, (fan_in, k))[:fan_out]
    return (frame @ r).T


def _frame_rule(rng: np.random.Generator) -> Rule:
    """A Dense rule drawing its SUO weights on the span of its inputs (zero bias)."""

    def dense(node: Node, inputs: list[np.ndarray], params: tuple[np.ndarray, ...],
              ctx: Context) -> tuple[np.ndarray, Pullback]:
        def pullback(g: np.ndarray) -> tuple[list[np.ndarray | None], None]:
            raise ValueError("frame-sampled layers have no weights to differentiate")

        return suo_on_span(rng, inputs[0], node.shape[-1]), pullback

    return dense


def features(net: Network, transforms: Mapping[str, Transform] | None, x: np.ndarray,
             rng: np.random.Generator, sampler: str = "frame") -> dict[str, np.ndarray]:
    """Every node's output for the rows ``x`` in one random network with SUO weights and zero
    biases: ``"matrix"`` draws every weight matrix (``topology.apply.init_params``), ``"frame"``
    draws each Dense layer's weights on the span of its inputs only (same distribution,
    O(width) per layer; networks whose weights are all Dense)."""
    acts = net.transformed_activations(transforms)
    if sampler == "matrix":
        return forward(net, init_params(net, rng, "suo"), x, acts).outputs
    if sampler != "frame":
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
    others = [n.id for n in net.nodes if n.layer.has_weights and not isinstance(n.layer, Dense)]
    if others:
        raise ValueError(f"the frame sampler draws Dense weights only; {others} have other "
                         "weights: use sampler='matrix'")
    return forward(net, None, x, acts, rules={**RULES, Dense: _frame_rule(rng)}).outputs
